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
    let run = |device: &str| probe_first_logits(dir.path(), &prompts, device, &[], 3).0;
    for (gpu, cpu) in run("cuda:0").iter().zip(run("cpu")) {
        let diff: f32 = gpu.iter().zip(&cpu).map(|(a, b)| (a - b).powi(2)).sum();
        let norm: f32 = cpu.iter().map(|b| b * b).sum();
        let rel = (diff / norm).sqrt();
        assert!(rel < 0.03, "relative l2 error {rel}");
    }
}

/// Runs `probe` (4 new tokens, chunks and blocks of 4) on `device` over the prompts file
/// and returns each prompt's first-step logits and the run's result.json.
fn probe_first_logits(
    dir: &std::path::Path,
    prompts: &std::path::Path,
    device: &str,
    extra: &[&str],
    n_prompts: usize,
) -> (Vec<Vec<f32>>, serde_json::Value) {
    let out = dir.join(format!("{}{}", device.replace(':', "-"), extra.join("")));
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
        .arg(dir)
        .arg("--prompts")
        .arg(prompts)
        .arg("--out")
        .arg(&out)
        .args(extra)
        .status()
        .unwrap();
    assert!(status.success(), "probe on {device} failed");
    let logits = (0..n_prompts)
        .map(|i| {
            let bytes = std::fs::read(out.join(format!("logits-{i}.bin"))).unwrap();
            let logits: Vec<f32> = bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            logits[..common::tiny::VOCAB].to_vec()
        })
        .collect();
    let result = std::fs::read(out.join("result.json")).unwrap();
    (logits, serde_json::from_slice(&result).unwrap())
}

/// `probe --share-prefix` has later prompts read the first prompt's KV blocks for the
/// whole blocks their tokens share (as the prefix cache hands them out, which is what
/// the CUDA backend's cascade attention serves): the logits stay those of a run that
/// computes every prompt's KV itself.
#[test]
fn probe_shares_prefix_blocks_without_changing_the_logits() {
    let dir = tempfile::tempdir().unwrap();
    common::tiny::write_qwen2(dir.path(), 7);
    let prompts = dir.path().join("prompts.json");
    // 9 tokens alike: two whole blocks of 4 shared by the second and third prompts.
    std::fs::write(
        &prompts,
        "[[3, 9, 27, 11, 5, 60, 2, 8, 13, 14, 15], [3, 9, 27, 11, 5, 60, 2, 8, 13, 40], \
          [3, 9, 27, 11, 5, 60, 2, 8, 13, 22, 23, 24]]",
    )
    .unwrap();
    let (own, own_result) = probe_first_logits(dir.path(), &prompts, "cpu", &[], 3);
    let (shared, result) = probe_first_logits(dir.path(), &prompts, "cpu", &["--share-prefix"], 3);
    assert_eq!(own_result["shared_prefix_tokens"], 0);
    assert_eq!(result["shared_prefix_tokens"], 16);
    for (a, b) in own.iter().zip(&shared) {
        let worst = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(worst < 1e-4, "logits moved by {worst}");
    }
    let tokens = |r: &serde_json::Value| r["prompts"].to_string();
    assert_eq!(tokens(&own_result), tokens(&result));
}
