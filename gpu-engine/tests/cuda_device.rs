//! `--device cuda:N` from the command line: a clear start-up error where no GPU can be
//! used, never a silent fall-back to the CPU; and, on a GPU machine, the same greedy
//! tokens as the CPU backend.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

fn engine() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cachet-engine"))
}

fn driver_present() -> bool {
    // SAFETY: only probes whether libcuda can be loaded.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

#[test]
fn serve_on_cuda_without_a_driver_fails_at_start_with_the_reason() {
    if driver_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    common::tiny::write_qwen2(dir.path(), 3);
    let output = engine()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--device",
            "cuda:0",
            "--model",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "it must not start: {stderr}");
    assert!(
        !String::from_utf8_lossy(&output.stdout).contains("listening on"),
        "it must not fall back to the cpu"
    );
    assert!(
        stderr.contains("device cuda:0 is not available: no cuda driver found"),
        "{stderr}"
    );
}

#[test]
fn unknown_devices_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    common::tiny::write_qwen2(dir.path(), 3);
    for device in ["gpu", "cuda:", "cuda:x", "cuda:-1"] {
        let output = engine()
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--device",
                device,
                "--model",
            ])
            .arg(dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{device}: {stderr}");
        assert!(
            stderr.contains(&format!("unknown device {device:?}")),
            "{device}: {stderr}"
        );
    }
}

/// On a machine with a GPU: the CUDA backend's greedy tokens equal the CPU backend's
/// on the tiny checkpoint (prefill in chunks, several sequences per step).
#[test]
fn cuda_greedy_tokens_match_cpu_where_a_gpu_exists() {
    if !driver_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    common::tiny::write_qwen2(dir.path(), 5);
    let prompts = dir.path().join("prompts.json");
    std::fs::write(
        &prompts,
        "[[3, 9, 27, 11, 5, 60, 2, 8, 13], [7], [40, 41, 42, 43]]",
    )
    .unwrap();
    let run = |device: &str| {
        let out = dir.path().join(device.replace(':', "-"));
        let status = engine()
            .args([
                "probe",
                "--device",
                device,
                "--new-tokens",
                "32",
                "--chunk-tokens",
                "4",
            ])
            .args(["--block-size", "4", "--model"])
            .arg(dir.path())
            .arg("--prompts")
            .arg(&prompts)
            .arg("--out")
            .arg(&out)
            .status()
            .unwrap();
        assert!(status.success(), "probe on {device} failed");
        let result: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("result.json")).unwrap()).unwrap();
        result["prompts"].clone()
    };
    assert_eq!(run("cuda:0"), run("cpu"));
}
