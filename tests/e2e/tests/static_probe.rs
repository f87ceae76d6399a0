//! `kpool-probe` is copied into broker containers whatever their base image, so it must run
//! without a dynamic loader or shared libraries. This builds it the way the Dockerfile
//! does (`-C target-feature=+crt-static`, explicit host target so build scripts stay
//! dynamic), checks the ELF has no `PT_INTERP` (no loader) and no `DT_NEEDED` (no shared
//! library), and runs it with an empty environment.

use std::path::{Path, PathBuf};
use std::process::Command;

fn host_triple() -> String {
    let out = Command::new(std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into()))
        .arg("-vV")
        .output()
        .expect("rustc -vV");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("host line")
        .to_owned()
}

fn u16_at(b: &[u8], at: usize) -> usize {
    usize::from(u16::from_le_bytes([b[at], b[at + 1]]))
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], at: usize) -> usize {
    usize::try_from(u64::from_le_bytes(
        b[at..at + 8].try_into().expect("8 bytes"),
    ))
    .expect("fits")
}

/// Program header types and dynamic tags of a little-endian ELF64 file.
fn elf_facts(b: &[u8]) -> (Vec<u32>, Vec<u64>) {
    assert_eq!(&b[..4], b"\x7fELF", "an ELF file");
    assert_eq!((b[4], b[5]), (2, 1), "ELF64 little-endian");
    let (phoff, phentsize, phnum) = (u64_at(b, 0x20), u16_at(b, 0x36), u16_at(b, 0x38));
    let mut types = Vec::new();
    let mut tags = Vec::new();
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        let p_type = u32_at(b, ph);
        types.push(p_type);
        if p_type == 2 {
            // PT_DYNAMIC: (tag, value) pairs of 8 bytes each, up to DT_NULL.
            let (offset, size) = (u64_at(b, ph + 8), u64_at(b, ph + 32));
            for entry in (offset..offset + size).step_by(16) {
                let tag = u64::from_le_bytes(b[entry..entry + 8].try_into().expect("8"));
                if tag == 0 {
                    break;
                }
                tags.push(tag);
            }
        }
    }
    (types, tags)
}

#[test]
fn kpool_probe_builds_static_and_runs_with_nothing_around_it() {
    let host = host_triple();
    if !host.ends_with("-linux-gnu") {
        eprintln!("skipped: static glibc builds are checked on *-linux-gnu hosts, not {host}");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("static-probe");
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .current_dir(&root)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env("CARGO_TARGET_DIR", &target_dir)
        .args([
            "build",
            "--quiet",
            "--locked",
            "-p",
            "kpool-agent",
            "--bin",
            "kpool-probe",
        ])
        .args(["--target", &host])
        .status()
        .expect("cargo build runs");
    assert!(status.success(), "the static build of kpool-probe failed");
    let bin = target_dir.join(&host).join("debug").join("kpool-probe");

    // The reader sees the loader and libraries of this (dynamically linked) test binary.
    let me = std::fs::read(std::env::current_exe().expect("exe")).expect("read self");
    let (types, tags) = elf_facts(&me);
    assert!(
        types.contains(&3) && tags.contains(&1),
        "{types:?} {tags:?}"
    );

    let bytes = std::fs::read(&bin).expect("read the binary");
    let (types, tags) = elf_facts(&bytes);
    assert!(!types.contains(&3), "PT_INTERP: it needs a dynamic loader");
    assert!(!tags.contains(&1), "DT_NEEDED: it needs a shared library");

    // No environment, nothing listening: it still runs and says it could not ask (exit 2).
    let out = Command::new(&bin)
        .env_clear()
        .args([
            "--agent",
            "http://127.0.0.1:9",
            "--namespace",
            "ns",
            "--pod",
            "kafka-0",
        ])
        .output()
        .expect("run the static probe");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("could not ask the agent"),
        "{out:?}"
    );
}
