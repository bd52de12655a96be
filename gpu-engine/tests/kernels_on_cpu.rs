//! The CUDA backend's attention kernels, compiled as C++ and run on the CPU
//! (`kernels_on_cpu/shim.h`: a block's threads are OS threads meeting at real barriers),
//! against a plain attention in double precision. This is how the kernels are tested on
//! machines without a GPU, CI included: the per-head and grouped decode kernels, the
//! grouped kernel split over the keys, the cascade over shared prefixes, and the tiled
//! prefill kernel, at head sizes 64 and 128.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

#[test]
fn attention_kernels_match_a_plain_attention_on_the_cpu() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let harness = crate_dir.join("tests/kernels_on_cpu");
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("attention");
    let compiler = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    let built = Command::new(&compiler)
        .args([
            "-std=c++20",
            "-O1",
            "-pthread",
            "-Wno-unknown-pragmas",
            "-I",
        ])
        .arg(&harness)
        .arg("-I")
        .arg(crate_dir.join("src/backend/cuda"))
        .arg("-o")
        .arg(&exe)
        .arg(harness.join("attention.cpp"))
        .output()
        .unwrap_or_else(|e| panic!("running the C++ compiler {compiler}: {e}"));
    assert!(
        built.status.success(),
        "compiling the kernels for the cpu failed:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let run = Command::new(&exe).output().unwrap();
    let report = String::from_utf8_lossy(&run.stdout);
    println!("{report}");
    assert!(run.status.success(), "a kernel disagrees:\n{report}");
    // Every check ran, and the cascade cut tiles at both head sizes.
    assert_eq!(report.lines().filter(|l| l.ends_with(" ok")).count(), 12);
    assert_eq!(report.matches("decode, cascade (4 tiles").count(), 2);
}
