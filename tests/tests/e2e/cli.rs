//! The command line: `--help` texts and config validation errors that name the field.

use std::time::Duration;

use cachet_tests::GatewayConfig;
use cachet_tests::gateway::{run_cachet, write_config};

/// A config error must end the process well within this.
const EXIT_TIMEOUT: Duration = Duration::from_secs(60);

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn help_explains_the_commands_and_flags() {
    let top = run_cachet(&["--help"], EXIT_TIMEOUT).unwrap();
    assert!(top.status.success(), "{top:?}");
    let top = text(&top.stdout);
    assert!(top.contains("serve"), "{top}");

    let serve = run_cachet(&["serve", "--help"], EXIT_TIMEOUT).unwrap();
    assert!(serve.status.success(), "{serve:?}");
    let serve = text(&serve.stdout);
    for flag in ["--config", "--listen", "--upstream"] {
        assert!(
            serve.contains(flag),
            "`cachet serve --help` lacks {flag}:\n{serve}"
        );
    }
}

/// Starts `cachet serve` on the default config changed by `edit` and returns its stderr,
/// asserting it exits non-zero.
fn rejected(edit: impl FnOnce(&mut GatewayConfig)) -> String {
    let mut config = GatewayConfig::default_with_upstream("http://127.0.0.1:9/v1").unwrap();
    edit(&mut config);
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &config.to_toml()).unwrap();
    let path = path.to_str().unwrap();
    let output = run_cachet(&["serve", "--config", path], EXIT_TIMEOUT).unwrap();
    let stderr = text(&output.stderr);
    assert!(
        !output.status.success() && output.status.code().is_some(),
        "a bad config must make `cachet serve` exit non-zero by itself: {output:?}\n{stderr}"
    );
    stderr
}

#[test]
fn a_bad_duration_is_named_by_its_field_path() {
    let stderr = rejected(|config| {
        config.set("categories.code.ttl", "5x").unwrap();
    });
    assert!(stderr.contains("categories.code.ttl"), "{stderr}");
}

#[test]
fn every_problem_is_reported_at_once() {
    let stderr = rejected(|config| {
        config.set("categories.code.ttl", "5x").unwrap();
        config.set("categories.general.threshold", 1.5).unwrap();
    });
    assert!(stderr.contains("categories.code.ttl"), "{stderr}");
    assert!(stderr.contains("categories.general.threshold"), "{stderr}");
}

#[test]
fn an_unknown_key_is_rejected() {
    let stderr = rejected(|config| {
        config.set("server.lisen", "127.0.0.1:0").unwrap();
    });
    assert!(stderr.contains("lisen"), "{stderr}");
}

#[test]
fn a_missing_config_file_is_named() {
    let output = run_cachet(
        &["serve", "--config", "/nonexistent/cachet.toml"],
        EXIT_TIMEOUT,
    )
    .unwrap();
    assert!(!output.status.success(), "{output:?}");
    let stderr = text(&output.stderr);
    assert!(stderr.contains("/nonexistent/cachet.toml"), "{stderr}");
}
