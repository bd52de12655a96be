//! Checks the Architecture Invariants of ARCHITECTURE.md against `cargo metadata`: which crate
//! may depend on which of ours, and which crate alone may know ONNX Runtime, HNSW, Redis,
//! HTTP or CUDA.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// Direct normal dependencies of every workspace member, by package name: what the product
/// knows. Dev-dependencies (test tooling such as an HTTP client) are left out.
fn workspace_deps() -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&output.stdout).expect("metadata is json");
    let mut out = BTreeMap::new();
    for package in meta["packages"].as_array().expect("packages") {
        let deps = package["dependencies"]
            .as_array()
            .expect("dependencies")
            .iter()
            .filter(|d| d["kind"].is_null())
            .filter_map(|d| d["name"].as_str().map(str::to_owned))
            .collect();
        out.insert(package["name"].as_str().expect("name").to_owned(), deps);
    }
    out
}

fn ours(deps: &BTreeSet<String>) -> BTreeSet<&str> {
    deps.iter()
        .map(String::as_str)
        .filter(|d| d.starts_with("cachet-"))
        .collect()
}

#[test]
fn dependency_direction_between_our_crates() {
    let deps = workspace_deps();
    for leaf in [
        "cachet-policies",
        "cachet-embedder",
        "cachet-index",
        "cachet-engine",
    ] {
        assert_eq!(
            ours(&deps[leaf]),
            BTreeSet::new(),
            "{leaf} must depend on none of our crates"
        );
    }
    assert_eq!(
        ours(&deps["cachet-gateway"]),
        BTreeSet::from(["cachet-policies", "cachet-embedder", "cachet-index"]),
        "the gateway composes exactly policies, embedder and index"
    );
}

#[test]
fn each_outside_system_is_known_to_one_crate() {
    let deps = workspace_deps();
    // (dependency, crates allowed to use it); the tests crate may use anything.
    let owners: [(&str, &[&str]); 9] = [
        ("ort", &["cachet-embedder"]),
        ("hnsw_rs", &["cachet-index"]),
        ("redis", &["cachet-index"]),
        ("cudarc", &["cachet-engine"]),
        ("axum", &["cachet-gateway", "cachet-engine"]),
        ("hyper", &["cachet-gateway", "cachet-engine"]),
        ("reqwest", &["cachet-gateway"]),
        ("tower-http", &["cachet-gateway", "cachet-engine"]),
        (
            "tokio",
            &[
                "cachet-gateway",
                "cachet-engine",
                "cachet-embedder",
                "cachet-index",
            ],
        ),
    ];
    for (dependency, allowed) in owners {
        for (krate, krate_deps) in &deps {
            if krate == "cachet-tests" || allowed.contains(&krate.as_str()) {
                continue;
            }
            assert!(
                !krate_deps.contains(dependency),
                "{krate} must not depend on {dependency}"
            );
        }
    }
}
