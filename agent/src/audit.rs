//! The agent's audit trail: one JSON line per decision (the schema shared with the webhook,
//! `kpool_cli::audit`) on stdout, where the container runtime keeps it apart from the
//! diagnostics on stderr.

use std::io::Write as _;

use kpool_cli::audit::AuditRecord;

/// Writes `record` as one line on stdout, flushed, so a crash right after loses nothing.
pub fn emit(record: &AuditRecord) {
    let mut out = std::io::stdout().lock();
    if out
        .write_all(record.to_line().as_bytes())
        .and_then(|()| out.flush())
        .is_err()
    {
        tracing::error!(
            decision = %record.decision,
            "cannot write an audit line to stdout"
        );
    }
}
