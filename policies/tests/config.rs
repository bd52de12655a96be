//! Config validation: every problem is reported with its field path, and every shipped
//! config file validates.

use std::path::Path;
use std::time::Duration;

use cachet_policies::{Config, DeviceSpec, Eviction, LoadState, StoreSettings};

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

/// The environment the shipped configs document: their tokens, freshly generated.
fn documented_env(name: &str) -> Option<String> {
    match name {
        "CACHET_ADMIN_TOKEN" => Some("5d0e8a2f7c41b9e36a1f0d4c8b7e2593".to_owned()),
        "CACHET_METRICS_TOKEN" => Some("e81b3f6a0c9d42e7b5a1f8c03d6e94b2".to_owned()),
        _ => None,
    }
}

#[test]
fn every_shipped_config_validates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("configs/ exists") {
        let path = entry.expect("readable dir entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            Config::load_with_env(&path, &documented_env)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            seen += 1;
        }
    }
    assert!(seen >= 1, "no config files found in {}", dir.display());
}

#[test]
fn the_redis_config_cannot_start_without_its_tokens() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/redis.toml");
    let text = std::fs::read_to_string(&path).expect("configs/redis.toml");
    let without_env: Vec<String> = match Config::from_toml(&text) {
        Ok(_) => panic!("redis.toml must not validate without its token variables"),
        Err(e) => e.problems().iter().map(|p| p.path.clone()).collect(),
    };
    assert_eq!(without_env, ["admin.token_env", "admin.metrics_token_env"]);
    // Its admin API listens on loopback only, whatever address the API listens on.
    let config = Config::load_with_env(&path, &documented_env).expect("valid");
    let admin = config.admin.expect("admin on");
    assert!(admin.listen.expect("own listener").ip().is_loopback());
    assert!(config.metrics_token.is_some());
}

#[test]
fn mistakes_in_five_sections_are_all_reported() {
    let got = problems(
        r#"
        [server]
        max_body_bytes = "big"
        [store]
        kind = "memory"
        url = "redis://h:6379"
        [adaptive]
        low_in_flight = 100
        high_in_flight = 10
        [classifier]
        margin = 2.0
        [categories.code]
        ttl = 5
        eviction = "fifo"
        [categories.general]
        relaxed_threshold = 0.95
        threshold = 0.9
        "#,
    );
    let paths: Vec<&str> = got
        .iter()
        .map(|p| p.split(": ").next().unwrap_or_default())
        .collect();
    assert_eq!(
        paths,
        [
            "server.max_body_bytes",
            "categories.code.ttl",
            "store.url",
            "classifier.margin",
            "adaptive.low_in_flight",
            "categories.code.eviction",
            "categories.general.relaxed_threshold",
        ],
        "{got:#?}"
    );
}

#[test]
fn an_unread_field_is_not_reported_twice() {
    // `default_category` of the wrong type falls back to "general", which does not exist
    // here; only the type problem is reported.
    let got = problems("[cache]\ndefault_category = 5\n[categories.code]\n");
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(
        got[0].starts_with("cache.default_category: invalid type"),
        "{got:#?}"
    );
}

#[test]
fn category_quotas_eviction_and_relaxed_values() {
    let config = Config::from_toml(
        r#"
        [categories.code]
        threshold = 0.9
        relaxed_threshold = 0.85
        ttl = "1h"
        relaxed_ttl = "6h"
        max_bytes = 1048576
        eviction = "gdsf"
        [categories.general]
        "#,
    )
    .expect("valid");
    let code = config.category("code").expect("code exists");
    assert_eq!(code.max_bytes.map(|n| n.get()), Some(1 << 20));
    assert_eq!(code.eviction, Eviction::Gdsf);
    assert_eq!(code.effective_threshold(LoadState::Normal).get(), 0.9);
    assert_eq!(code.effective_threshold(LoadState::Relaxed).get(), 0.85);
    assert_eq!(
        code.effective_ttl(LoadState::Normal),
        Duration::from_secs(3600)
    );
    assert_eq!(
        code.effective_ttl(LoadState::Relaxed),
        Duration::from_secs(6 * 3600)
    );
    // Unset relaxed values mean no relaxing.
    let general = config.category("general").expect("general exists");
    assert_eq!(general.eviction, Eviction::Lru);
    assert_eq!(general.max_bytes, None);
    assert_eq!(
        general.effective_threshold(LoadState::Relaxed),
        general.threshold
    );
    assert_eq!(general.effective_ttl(LoadState::Relaxed), general.ttl);

    // An invalid relaxed value is reported once, not also as above the threshold.
    assert_eq!(
        problems("[categories.general]\nthreshold = 0.8\nrelaxed_threshold = 1.5\n"),
        ["categories.general.relaxed_threshold: 1.5 is not between 0 and 1"]
    );
    check_refused(
        "[categories.general]\nttl = \"1h\"\nrelaxed_ttl = \"30m\"\nmax_bytes = 0\n",
        &[
            "categories.general.relaxed_ttl: 30m is shorter than ttl 1h",
            "categories.general.max_bytes: 0 must be a positive integer",
        ],
    );
}

#[test]
fn redis_store_and_admin_token_stay_out_of_debug_output() {
    let config = Config::from_toml(
        r#"
        [store]
        kind = "redis"
        url = "redis://:store-password@10.0.0.5:6379/0"
        key_prefix = "team-a"
        breaker_failures = 5
        breaker_retry_after = "500ms"
        [admin]
        token = "admin-7f3a9c1e5b8d2046e1c4"
        "#,
    )
    .expect("valid");
    let StoreSettings::Redis {
        url, key_prefix, ..
    } = &config.store
    else {
        panic!("expected redis, got {:?}", config.store);
    };
    assert_eq!(url.expose(), "redis://:store-password@10.0.0.5:6379/0");
    assert_eq!(key_prefix, "team-a");
    assert_eq!(config.store_breaker.failures.get(), 5);
    assert_eq!(config.store_breaker.retry_after, Duration::from_millis(500));
    let admin = config.admin.as_ref().expect("admin on");
    assert!(admin.accepts("admin-7f3a9c1e5b8d2046e1c4"));
    let printed = format!("{config:?}");
    assert!(!printed.contains("store-password"), "{printed}");
    assert!(!printed.contains("admin-7f3a"), "{printed}");
}

#[test]
fn admin_is_off_without_a_token() {
    assert!(Config::from_toml("").expect("valid").admin.is_none());
    assert!(
        Config::from_toml("[admin]\n")
            .expect("valid")
            .admin
            .is_none()
    );
}

#[test]
fn reload_names_the_sections_that_need_a_restart() {
    let check = |old: &str, new: &str, expected: &[&str]| {
        let old = Config::from_toml(old).expect("old config valid");
        let new = Config::from_toml(new).expect("new config valid");
        assert_eq!(old.restart_required(&new), expected, "{old:?} -> {new:?}");
    };
    check("", "", &[]);
    // Live changes.
    check(
        "",
        "[index]\nef_search = 128\ncandidates = 8\n[cache]\nmax_entry_bytes = 10\n\
         [classifier]\nmargin = 0.2\n[adaptive]\nenabled = true\n\
         [admin]\ntoken = \"9f1c4be07a3d52e86c0b7f49a1d3e65b\"\n[categories.general]\nthreshold = 0.5\n",
        &[],
    );
    // Restart changes, in section order.
    check(
        "",
        "[server]\nlisten = \"127.0.0.1:9000\"\n[upstream]\ntimeout = \"1m\"\n\
         [engine]\n[embedder]\nmax_batch = 8\n[index]\nm = 32\n\
         [store]\nsnapshot = \"s.bin\"\n",
        &["server", "upstream", "engine", "embedder", "index", "store"],
    );
    check("", "[index]\nef_construction = 100\n", &["index"]);
    let token = "token = \"9f1c4be07a3d52e86c0b7f49a1d3e65b\"\n";
    check(
        &format!("[admin]\n{token}"),
        &format!("[admin]\n{token}listen = \"127.0.0.1:9090\"\n"),
        &["admin.listen"],
    );
    check("", "[store]\nbreaker_failures = 9\n", &["store"]);
}

#[test]
fn the_default_config_keeps_todays_behaviour() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/default.toml");
    let config = Config::load(&path).expect("default config valid");
    assert_eq!(
        config.store,
        StoreSettings::Memory {
            snapshot: Some("cachet-data/snapshot.bin".into()),
            snapshot_interval: Duration::from_secs(60),
        }
    );
    assert!(!config.adaptive.enabled);
    assert!(config.admin.is_none());
    for category in &config.categories {
        assert_eq!(category.eviction, Eviction::Lru, "{}", category.name);
        assert_eq!(
            category.relaxed_threshold, category.threshold,
            "{}",
            category.name
        );
        assert_eq!(category.relaxed_ttl, category.ttl, "{}", category.name);
    }
}

#[test]
fn error_budgets_and_shadow_rates_are_validated_with_their_paths() {
    let paths = |text: &str| -> Vec<String> {
        Config::from_toml(text)
            .map(|_| Vec::new())
            .unwrap_or_else(|e| e.problems().iter().map(|p| p.path.clone()).collect())
    };
    let calibrated = "[calibration]\nfile = \"scores.tsv\"\n";
    assert!(
        paths(&format!(
            "{calibrated}[categories.general]\nmax_wrong_rate = 0.01\n"
        ))
        .is_empty()
    );
    assert_eq!(
        paths("[categories.general]\nmax_wrong_rate = 0.01\n"),
        ["categories.general.max_wrong_rate"],
        "a budget needs calibration data"
    );
    assert_eq!(
        paths(&format!(
            "{calibrated}[categories.general]\nmax_wrong_rate = 0.01\nthreshold = 0.8\n"
        )),
        ["categories.general.threshold"],
        "a budget chooses the threshold"
    );
    assert_eq!(
        paths(&format!(
            "{calibrated}[categories.general]\nmax_wrong_rate = 0.02\nrelaxed_max_wrong_rate = 0.01\n"
        )),
        ["categories.general.relaxed_max_wrong_rate"]
    );
    assert_eq!(
        paths(&format!(
            "{calibrated}[categories.general]\nmax_wrong_rate = 1.5\n"
        )),
        ["categories.general.max_wrong_rate"]
    );
    assert_eq!(
        paths("[categories.general]\n[categories.live]\ncacheable = false\nshadow_rate = 0.5\n"),
        ["categories.live.shadow_rate"],
        "a category that is not cached has no hits to check"
    );
    assert_eq!(
        paths("[calibration]\nconfidence = 1.0\n[shadow]\nmin_samples = 0\nagreement = 2\n"),
        [
            "calibration.confidence",
            "shadow.agreement",
            "shadow.min_samples"
        ]
    );
    let config = Config::from_toml("[categories.general]\n[categories.live]\ncacheable = false\n")
        .expect("valid");
    assert_eq!(
        config.category("general").expect("general").shadow_rate,
        0.01
    );
    assert_eq!(config.category("live").expect("live").shadow_rate, 0.0);
}

#[test]
fn tenancy_keys_are_checked() {
    check_refused(
        "[categories.faq]\nshared = true\nmatch.headers = { \"x-team\" = \"a\" }\n\
         [categories.pooled]\nmax_entries = 10\nmax_entries_per_tenant = 20\n\
         [categories.general]\nmax_entries_per_tenant = 0\n[cache]\nanonymous = \"share\"\n",
        &[
            "categories.faq.match.headers: selects a shared category by a header",
            "categories.pooled.max_entries_per_tenant: 20 is above max_entries 10",
            "categories.general.max_entries_per_tenant: 0 must be a positive integer",
            "cache.anonymous: \"share\" is neither",
        ],
    );
    let config = Config::from_toml(
        "[categories.faq]\nshared = true\nselectable_by_header = true\n\
         match.headers = { \"x-team\" = \"a\" }\nmax_entries_per_tenant = 5\n\
         [cache]\nanonymous = \"tenant\"\n[categories.general]\n",
    )
    .expect("an operator may opt in");
    let faq = config.category("faq").expect("faq");
    assert!(faq.selectable_by_header);
    assert_eq!(faq.max_entries_per_tenant.map(|n| n.get()), Some(5));
    assert_eq!(config.cache.anonymous, cachet_policies::Anonymous::Tenant);
    let defaults = Config::from_toml("").expect("valid");
    assert_eq!(defaults.cache.anonymous, cachet_policies::Anonymous::Bypass);
    assert!(!defaults.categories[0].selectable_by_header);
}
