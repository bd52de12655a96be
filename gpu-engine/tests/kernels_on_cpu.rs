//! The CUDA backend's kernels, compiled as C++ and run on the CPU
//! (`kernels_on_cpu/shim.h`: a block's threads are OS threads meeting at real barriers),
//! against references in double precision. This is how the kernels are tested on
//! machines without a GPU, CI included.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

/// Compiles `kernels_on_cpu/<name>.cpp` (which includes kernels.cu) and runs it: its
/// report, one line per check, each ending in "ok" or "FAILED".
fn build_and_run(name: &str) -> String {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let harness = crate_dir.join("tests/kernels_on_cpu");
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join(name);
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
        .arg(harness.join(format!("{name}.cpp")))
        .output()
        .unwrap_or_else(|e| panic!("running the C++ compiler {compiler}: {e}"));
    assert!(
        built.status.success(),
        "compiling the kernels for the cpu failed:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let run = Command::new(&exe).output().unwrap();
    let report = String::from_utf8_lossy(&run.stdout).into_owned();
    println!("{report}");
    assert!(run.status.success(), "a kernel disagrees:\n{report}");
    assert!(!report.contains("FAILED"), "{report}");
    report
}

fn passed(report: &str) -> usize {
    report.lines().filter(|l| l.ends_with(" ok")).count()
}

/// The per-head and grouped decode kernels (unsplit and split over the keys), the
/// cascade over shared prefixes merged by the grouped kernel, and the tiled prefill
/// kernel, at head sizes 64 (groups of 4) and 128 (groups of 3). About 35 s alone on
/// the 2-core build machine: a CUDA thread is an OS thread here.
#[test]
fn attention_kernels_match_a_plain_attention_on_the_cpu() {
    let report = build_and_run("attention");
    assert_eq!(passed(&report), 14);
    assert_eq!(report.matches("decode, cascade (2 tiles").count(), 2);
}

/// RMSNorm with the residual add, the small-batch products with and without the norm
/// fused into them (which must agree), the gate/up/SiLU product, and RoPE with the KV
/// write.
#[test]
fn decode_step_kernels_match_their_references_on_the_cpu() {
    let report = build_and_run("products");
    assert_eq!(passed(&report), 19);
    assert!(report.contains("gemv_multi, q: fused against apart"));
}
