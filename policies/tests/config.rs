//! Config validation: every problem is reported with its field path, and every shipped
//! config file validates.

use std::path::Path;
use std::time::Duration;

use cachet_policies::{Config, DeviceSpec};

fn problems(text: &str) -> Vec<String> {
    match Config::from_toml(text) {
        Ok(_) => panic!("config should be refused:\n{text}"),
        Err(e) => {
            let listed: Vec<String> = e.problems().iter().map(ToString::to_string).collect();
            if listed.is_empty() {
                vec![e.to_string()]
            } else {
                listed
            }
        }
    }
}

fn check_refused(text: &str, expected: &[&str]) {
    let got = problems(text);
    for want in expected {
        assert!(
            got.iter().any(|p| p.starts_with(want)),
            "expected a problem starting with {want:?}, got {got:#?}"
        );
    }
}

#[test]
fn empty_config_takes_documented_defaults() {
    let config = Config::from_toml("").expect("empty config is valid");
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(config.upstream.url.as_str(), "http://127.0.0.1:8000/v1");
    assert_eq!(config.embedder.device, DeviceSpec::Cpu);
    assert_eq!(config.categories.len(), 1);
    assert_eq!(config.categories[0].name, "general");
    assert_eq!(config.categories[0].ttl, Duration::from_secs(86_400));
}

#[test]
fn every_problem_is_reported_with_its_path() {
    check_refused(
        r#"
        [server]
        listen = "nowhere"
        [upstream]
        url = "ftp://example.com"
        [embedder]
        device = "tpu"
        max_batch = 0
        [categories.code]
        ttl = "5x"
        threshold = 1.5
        match.patterns = ["("]
        match.routes = ["/v2/chat"]
        [categories.general]
        "#,
        &[
            "server.listen:",
            "upstream.url:",
            "embedder.device:",
            "embedder.max_batch:",
            "categories.code.ttl: \"5x\" is not a duration",
            "categories.code.threshold:",
            "categories.code.match.patterns[0]:",
            "categories.code.match.routes[0]:",
        ],
    );
}

#[test]
fn unknown_keys_and_wrong_types_name_the_field() {
    check_refused(
        "[categories.code]\ntll = \"1d\"\n",
        &["categories.code.tll: unknown field"],
    );
    check_refused(
        "[categories.code]\nthreshold = \"high\"\n",
        &["categories.code.threshold:"],
    );
    check_refused(
        "[sever]\nlisten = \"x\"\n",
        &["sever: unknown field `sever`"],
    );
}

#[test]
fn engine_section_is_optional_and_validated() {
    assert!(Config::from_toml("").expect("valid").engine.is_none());
    let config = Config::from_toml("[engine]\nmodel = \"m\"\nargs = [\"--kv-blocks\", \"64\"]\n")
        .expect("valid");
    let engine = config.engine.expect("engine configured");
    assert_eq!(engine.device, "cpu");
    assert_eq!(engine.args, ["--kv-blocks", "64"]);
    check_refused(
        "[engine]\ndevice = \"gpu\"\nstartup_timeout = \"soon\"\n",
        &["engine.device:", "engine.startup_timeout:"],
    );
}

#[test]
fn default_category_must_exist() {
    check_refused(
        "[cache]\ndefault_category = \"misc\"\n[categories.code]\n",
        &["cache.default_category:"],
    );
}

#[test]
fn categories_keep_file_order() {
    let config =
        Config::from_toml("[categories.b]\n[categories.a]\n[categories.general]\n").expect("valid");
    let names: Vec<&str> = config.categories.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["b", "a", "general"]);
}

#[test]
fn upstream_url_loses_its_trailing_slash() {
    let config = Config::from_toml("[upstream]\nurl = \"http://h:1/v1/\"\n").expect("valid");
    assert_eq!(config.upstream.url.as_str(), "http://h:1/v1");
}

#[test]
fn every_shipped_config_validates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("configs/ exists") {
        let path = entry.expect("readable dir entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            Config::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            seen += 1;
        }
    }
    assert!(seen >= 1, "no config files found in {}", dir.display());
}
