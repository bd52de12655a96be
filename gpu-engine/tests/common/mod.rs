//! Shared helpers of the engine's integration tests: assets, the numpy reference, tiny checkpoints.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub mod server;
pub mod tiny;

/// The repository root (the workspace above this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crate has a parent")
        .to_path_buf()
}

/// The SmolLM2-135M checkpoint; fails the test with the fix if it is missing.
pub fn smollm2_dir() -> PathBuf {
    let dir = repo_root().join("assets/smollm2-135m");
    assert!(
        dir.join("model.safetensors").exists(),
        "{} is missing: run scripts/fetch-assets first",
        dir.display()
    );
    dir
}

/// Output of scripts/py/reference_llama.py.
#[derive(Debug, serde::Deserialize)]
pub struct Reference {
    pub prompt_ids: Vec<u32>,
    pub text: String,
    pub generated_ids: Vec<u32>,
    pub first_logits: Vec<f64>,
}

/// Runs the independent numpy reference on `model` for the given prompt arguments.
pub fn reference(model: &Path, prompt_args: &[&str], max_new_tokens: usize) -> Reference {
    reference_with(model, prompt_args, max_new_tokens, true)
}

/// Like [`reference`], optionally stopping at end-of-sequence as the engine does.
pub fn reference_with(
    model: &Path,
    prompt_args: &[&str],
    max_new_tokens: usize,
    ignore_eos: bool,
) -> Reference {
    let root = repo_root();
    let python = root.join("assets/venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/fetch-assets first",
        python.display()
    );
    let out = tempfile::NamedTempFile::new().unwrap();
    let status = Command::new(python)
        .arg(root.join("scripts/py/reference_llama.py"))
        .arg("--model")
        .arg(model)
        .args(prompt_args)
        .arg("--max-new-tokens")
        .arg(max_new_tokens.to_string())
        .args(ignore_eos.then_some("--ignore-eos"))
        .arg("--json")
        .arg(out.path())
        .stdout(std::process::Stdio::null())
        .status()
        .expect("reference runs");
    assert!(status.success(), "reference_llama.py failed");
    serde_json::from_slice(&std::fs::read(out.path()).unwrap()).unwrap()
}

/// Largest absolute difference between two logit vectors.
pub fn max_abs_diff(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "logit vectors differ in length");
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - y).abs())
        .fold(0.0, f64::max)
}
