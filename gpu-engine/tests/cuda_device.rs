//! `--device cuda:N` from the command line: a clear start-up error where no GPU can be
//! used, never a silent fall-back to the CPU; and, on a GPU machine, the same greedy
//! tokens as the CPU backend.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

fn engine() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cachet-engine"))
}

/// `cachet-engine serve` on `device` with the tiny model in `dir`, run to its exit.
fn serve_on(device: &str, dir: &std::path::Path) -> std::process::Output {
    engine()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--device",
            device,
            "--model",
        ])
        .arg(dir)
        .output()
        .unwrap()
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
    let output = serve_on("cuda:0", dir.path());
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
        let output = serve_on(device, dir.path());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{device}: {stderr}");
        assert!(
            stderr.contains(&format!("unknown device {device:?}")),
            "{device}: {stderr}"
        );
    }
}

/// On a machine with a GPU: the CUDA backend (bf16) computes the same first-step logits
/// as the CPU backend (f32) on the tiny checkpoint, within bf16's precision. Later
/// greedy tokens may part where two logits are closer than bf16 resolves (measured on
/// an H200: docs/bench/2026-11-26-h200-engine-cuda), so only the first step is compared.
#[test]
fn cuda_logits_match_cpu_where_a_gpu_exists() {
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
                "4",
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
        (0..3)
            .map(|i| {
                let bytes = std::fs::read(out.join(format!("logits-{i}.bin"))).unwrap();
                let logits: Vec<f32> = bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                logits[..common::tiny::VOCAB].to_vec()
            })
            .collect::<Vec<_>>()
    };
    for (gpu, cpu) in run("cuda:0").iter().zip(run("cpu")) {
        let diff: f32 = gpu.iter().zip(&cpu).map(|(a, b)| (a - b).powi(2)).sum();
        let norm: f32 = cpu.iter().map(|b| b * b).sum();
        let rel = (diff / norm).sqrt();
        assert!(rel < 0.03, "relative l2 error {rel}");
    }
}
