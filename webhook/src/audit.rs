//! The audit log: one JSON line per decision, to stdout or to a file (appended, flushed per
//! line, rotated by size keeping N files). A writer thread does the I/O so a slow or full
//! disk never delays an admission answer; failures are counted and logged.
//!
//! Before each batch the writer checks (one `stat`) that the path still names the file it
//! has open, by device and inode: if the file was removed, renamed or replaced, or its
//! folder removed, under the server, the path is reopened (its folder recreated if need
//! be and permissions allow), the reopen logged and counted; lines that cannot be written
//! there are counted as failures and logged, never written on into a file nobody can find.

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use kpool_cli::audit::AuditRecord;
use prometheus_client::metrics::counter::Counter;

use crate::metrics::Metrics;

/// Where audit lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditTarget {
    Stdout,
    File {
        path: PathBuf,
        /// Rotate when the file would exceed this many bytes.
        max_bytes: u64,
        /// Rotated files kept (`path.1` .. `path.N`).
        max_files: u32,
    },
}

enum Msg {
    Line(String),
    Sync(SyncSender<()>),
}

/// Lines queued before the request path starts dropping (and counting) them.
const QUEUE: usize = 8192;

/// Handle to the audit writer.
#[derive(Debug, Clone)]
pub struct AuditLog {
    tx: SyncSender<Msg>,
    metrics: Arc<Metrics>,
}

impl AuditLog {
    /// Starts the writer thread. A file target is opened (and its directory checked) here,
    /// so a bad path fails at startup.
    pub fn start(target: AuditTarget, metrics: Arc<Metrics>) -> io::Result<Self> {
        let sink = match &target {
            AuditTarget::Stdout => Sink::Stdout,
            AuditTarget::File {
                path,
                max_bytes,
                max_files,
            } => Sink::File(RotatingFile::open(
                path,
                *max_bytes,
                *max_files,
                metrics.audit_reopens.clone(),
            )?),
        };
        let (tx, rx) = sync_channel(QUEUE);
        let m = metrics.clone();
        std::thread::Builder::new()
            .name("kpool-audit".to_owned())
            .spawn(move || writer(rx, sink, &m))?;
        Ok(Self { tx, metrics })
    }

    /// Queues one record. Never blocks: if the writer is behind, the line is dropped and
    /// counted.
    pub fn record(&self, record: &AuditRecord) {
        match self.tx.try_send(Msg::Line(record.to_line())) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.metrics.audit_dropped.inc();
                tracing::error!("audit writer is behind; an audit line was dropped");
            }
            Err(TrySendError::Disconnected(_)) => {
                self.metrics.audit_failures.inc();
                tracing::error!("audit writer has stopped; an audit line was lost");
            }
        }
    }

    /// Waits until every line queued so far is written (at shutdown, and in tests).
    pub fn sync(&self) {
        let (ack_tx, ack_rx) = sync_channel(1);
        if self.tx.send(Msg::Sync(ack_tx)).is_ok() {
            let _ = ack_rx.recv();
        }
    }
}

enum Sink {
    Stdout,
    File(RotatingFile),
}

/// Lines written with one system call at most.
const BATCH: usize = 256;

/// When a batch had company (more than one line queued), the writer waits this long
/// before looking again, so under load the request path rarely has to wake it (each wake
/// is a futex call and a context switch on the request path's core). A quiet server's
/// lines are written at once.
const COALESCE: std::time::Duration = std::time::Duration::from_micros(500);

fn writer(rx: Receiver<Msg>, mut sink: Sink, metrics: &Metrics) {
    let mut lines: Vec<String> = Vec::with_capacity(BATCH);
    let mut acks: Vec<SyncSender<()>> = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(msg) = next {
            match msg {
                Msg::Line(line) => lines.push(line),
                Msg::Sync(ack) => acks.push(ack),
            }
            next = if lines.len() < BATCH {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        let busy = lines.len() > 1;
        if !lines.is_empty() {
            let result = match &mut sink {
                Sink::Stdout => {
                    let mut out = io::stdout().lock();
                    lines
                        .iter()
                        .try_for_each(|l| out.write_all(l.as_bytes()))
                        .and_then(|()| out.flush())
                }
                Sink::File(f) => f.write_lines(&lines),
            };
            if let Err(e) = result {
                metrics.audit_failures.inc_by(lines.len() as u64);
                tracing::error!(error = %e, lines = lines.len(), "cannot write audit lines");
            }
            lines.clear();
        }
        // Everything queued before a sync request is written by now.
        for ack in acks.drain(..) {
            let _ = ack.send(());
        }
        if busy {
            std::thread::sleep(COALESCE);
        }
    }
}

/// An append-only file rotated by size: `path` → `path.1` → ... → `path.N` (dropped).
#[derive(Debug)]
struct RotatingFile {
    path: PathBuf,
    file: Option<File>,
    /// Device and inode of `file`: what `path` names while nobody has moved it.
    identity: Option<(u64, u64)>,
    /// `path` stopped naming the open file and has not been reopened yet.
    lost: bool,
    /// Reopens after `path` stopped naming the open file.
    reopens: Counter,
    size: u64,
    max_bytes: u64,
    max_files: u32,
}

impl RotatingFile {
    fn open(path: &Path, max_bytes: u64, max_files: u32, reopens: Counter) -> io::Result<Self> {
        let mut f = Self {
            path: path.to_owned(),
            file: None,
            identity: None,
            lost: false,
            reopens,
            size: 0,
            max_bytes: max_bytes.max(1),
            max_files,
        };
        let file = open_append(path).map_err(|e| f.context("open", &e))?;
        f.opened(file);
        Ok(f)
    }

    /// `e` naming what was done to which audit log.
    fn context(&self, what: &str, e: &io::Error) -> io::Error {
        io::Error::new(
            e.kind(),
            format!("cannot {what} audit log {}: {e}", self.path.display()),
        )
    }

    fn opened(&mut self, file: File) {
        let meta = file.metadata().ok();
        self.size = meta.as_ref().map_or(0, Metadata::len);
        self.identity = meta.as_ref().and_then(identity);
        self.file = Some(file);
    }

    /// Reopens `path` (recreating its folder if it is gone) after a failure, a rotation or
    /// the path moving away from the open file.
    fn reopen(&mut self) -> io::Result<()> {
        let file = match open_append(&self.path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let folder = self
                    .path
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty() && !p.exists());
                let Some(folder) = folder else {
                    return Err(self.context("reopen", &e));
                };
                std::fs::create_dir_all(folder).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!(
                            "cannot reopen audit log {}: its folder is gone and cannot be recreated: {e}",
                            self.path.display()
                        ),
                    )
                })?;
                tracing::warn!(
                    folder = %folder.display(),
                    "audit log folder was removed while serving; recreated it"
                );
                open_append(&self.path).map_err(|e| self.context("reopen", &e))?
            }
            other => other.map_err(|e| self.context("reopen", &e))?,
        };
        self.opened(file);
        if std::mem::take(&mut self.lost) {
            self.reopens.inc();
            tracing::warn!(
                path = %self.path.display(),
                "audit log reopened: lines go to the file now at its path"
            );
        }
        Ok(())
    }

    /// Closes the open file if `path` no longer names it (removed, renamed or replaced, or
    /// its folder removed), so the next write reopens the path. One `stat`.
    fn check_path(&mut self) {
        let Some(open) = self.identity.filter(|_| self.file.is_some()) else {
            return;
        };
        let why = match std::fs::metadata(&self.path) {
            Ok(meta) if identity(&meta).is_none_or(|now| now == open) => return,
            Ok(_) => "another file is at the path (renamed or replaced)".to_owned(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                "nothing is at the path (the file or its folder was removed or renamed)".to_owned()
            }
            Err(e) => format!("the path cannot be looked up: {e}"),
        };
        tracing::warn!(
            path = %self.path.display(),
            why,
            "audit log path no longer names the open file; reopening it"
        );
        self.file = None;
        self.identity = None;
        self.lost = true;
    }

    /// Appends `lines`, each whole, rotating before a line that would pass `max_bytes`;
    /// one write per stretch between rotations.
    fn write_lines(&mut self, lines: &[String]) -> io::Result<()> {
        self.check_path();
        let mut buf: Vec<u8> = Vec::new();
        for line in lines {
            let pending = self.size + buf.len() as u64;
            if pending > 0 && pending + line.len() as u64 > self.max_bytes {
                self.write_buf(&buf)?;
                buf.clear();
                self.rotate()?;
            }
            buf.extend_from_slice(line.as_bytes());
        }
        self.write_buf(&buf)
    }

    fn write_buf(&mut self, buf: &[u8]) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        if self.file.is_none() {
            // Rotated, moved away, or closed by an earlier failure (disk full): try again.
            self.reopen()?;
        }
        let Some(file) = self.file.as_mut() else {
            return Err(io::Error::other("audit log is not open"));
        };
        let result = file.write_all(buf).and_then(|()| file.flush());
        match result {
            Ok(()) => {
                self.size += buf.len() as u64;
                Ok(())
            }
            Err(e) => {
                self.file = None;
                Err(self.context("write to", &e))
            }
        }
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        self.identity = None;
        let numbered = |n: u32| PathBuf::from(format!("{}.{n}", self.path.display()));
        // The current file may have gone since the batch began: nothing to move then.
        let gone_is_fine = |r: io::Result<()>| match r {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        };
        if self.max_files == 0 {
            gone_is_fine(std::fs::remove_file(&self.path))
                .map_err(|e| self.context("rotate (remove)", &e))?;
        } else {
            let _ = std::fs::remove_file(numbered(self.max_files));
            for n in (1..self.max_files).rev() {
                let from = numbered(n);
                if from.exists() {
                    std::fs::rename(&from, numbered(n + 1))
                        .map_err(|e| self.context("rotate", &e))?;
                }
            }
            gone_is_fine(std::fs::rename(&self.path, numbered(1)))
                .map_err(|e| self.context("rotate", &e))?;
        }
        self.size = 0;
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Device and inode: which file a path names, whatever the path.
#[cfg(unix)]
fn identity(meta: &Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    Some((meta.dev(), meta.ino()))
}

#[cfg(not(unix))]
fn identity(_: &Metadata) -> Option<(u64, u64)> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use kpool_cli::audit::{Action, Decision, Subject};
    use kpool_policy::model::Mode;

    fn record(i: usize) -> AuditRecord {
        AuditRecord {
            time: format!("t{i}"),
            component: "webhook",
            decision: Decision::Inject,
            subject: Subject::default(),
            reason: String::new(),
            reason_code: String::new(),
            policy_hash: String::new(),
            action: Action::Patched,
            mode: Mode::Enforce,
            admission: None,
        }
    }

    #[test]
    fn file_lines_are_appended_and_rotated_keeping_n_files() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("audit.jsonl");
        let metrics = Arc::new(Metrics::new());
        let line_len = record(0).to_line().len() as u64;
        let log = AuditLog::start(
            AuditTarget::File {
                path: path.clone(),
                max_bytes: line_len * 3,
                max_files: 2,
            },
            metrics.clone(),
        )
        .expect("starts");
        for i in 0..10 {
            log.record(&record(i));
        }
        log.sync();
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        let current = read(&path);
        let one = read(&dir.path().join("audit.jsonl.1"));
        let two = read(&dir.path().join("audit.jsonl.2"));
        assert!(!dir.path().join("audit.jsonl.3").exists());
        assert_eq!(current.lines().count(), 1, "{current}");
        assert_eq!(one.lines().count(), 3);
        assert_eq!(two.lines().count(), 3);
        // Newest last: t9 in the current file, t6..t8 in .1, t3..t5 in .2
        assert!(current.contains("\"t9\""));
        assert!(one.contains("\"t6\"") && one.contains("\"t8\""));
        assert!(two.contains("\"t3\""));
        for l in current.lines().chain(one.lines()).chain(two.lines()) {
            let _: serde_json::Value = serde_json::from_str(l).expect("every line is JSON");
        }
        assert_eq!(metrics.audit_failures.get(), 0);
    }

    #[test]
    fn one_batch_rotates_between_whole_lines() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("audit.jsonl");
        let lines: Vec<String> = (0..10).map(|i| record(i).to_line()).collect();
        let line_len = lines[0].len() as u64;
        let mut f = RotatingFile::open(&path, line_len * 4, 3, Counter::default()).expect("open");
        f.write_lines(&lines).expect("write");
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();
        let counts: Vec<usize> = [
            path.clone(),
            dir.path().join("audit.jsonl.1"),
            dir.path().join("audit.jsonl.2"),
        ]
        .into_iter()
        .map(|p| read(p).lines().count())
        .collect();
        assert_eq!(counts, [2, 4, 4], "t8,t9 | t4..t7 | t0..t3");
        assert!(read(path).starts_with(&lines[8]));
    }

    #[test]
    fn rotation_with_the_file_already_gone_is_not_a_failure() {
        // Removed between the check before a batch and the rotation within it: there is
        // nothing to move, and the batch's lines go to a new file at the path.
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("audit.jsonl");
        let lines: Vec<String> = (0..3).map(|i| record(i).to_line()).collect();
        let line_len = lines[0].len() as u64;
        let mut f = RotatingFile::open(&path, line_len * 2, 2, Counter::default()).expect("open");
        f.write_lines(&lines[..2]).expect("write");
        std::fs::remove_file(&path).expect("rm");
        f.rotate().expect("nothing to rotate is fine");
        f.write_buf(lines[2].as_bytes()).expect("write");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), lines[2]);
        assert!(!dir.path().join("audit.jsonl.1").exists());
    }

    #[test]
    fn unwritable_path_fails_at_start() {
        let err = AuditLog::start(
            AuditTarget::File {
                path: PathBuf::from("/nonexistent-dir/audit.jsonl"),
                max_bytes: 1024,
                max_files: 1,
            },
            Arc::new(Metrics::new()),
        )
        .expect_err("no such directory");
        assert!(
            err.to_string().contains("/nonexistent-dir/audit.jsonl"),
            "{err}"
        );
    }
}
