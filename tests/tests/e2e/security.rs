//! The security stance end to end (SECURITY.md names each test): keyless callers, poisoning a
//! shared category, per-tenant quotas, credentials in `/healthz` and logs, placeholder tokens,
//! the admin listener and the metrics token, and upstream redirects.

use std::time::{Duration, Instant};

use cachet_tests::gateway::{run_cachet_with_env, write_config};
use cachet_tests::ports::{closed_addr, free_port};
use cachet_tests::upstream::CHAT_PATH;
use cachet_tests::{Gateway, GatewayConfig, Reply, ScriptedUpstream, paths};
use serde_json::{Value, json};

use crate::fleet::{
    ADMIN_TOKEN, admin_post, ask, ask_stored, base_config, chat_body, fills, start_gateways,
};
use crate::support::*;

const CHAT: &str = "/v1/chat/completions";
const EXIT_TIMEOUT: Duration = Duration::from_secs(60);
/// Written in the upstream URL; must never be shown.
const UPSTREAM_PASSWORD: &str = "pa55-9d2f7c41e8";
const METRICS_TOKEN: &str = "m3tr1cs-5e9a0c7f2b84d16e";
const PLACEHOLDER: &str = "replace-with-output-of-openssl-rand-hex-32";

fn body_with(question: &str, params: Value) -> String {
    let mut body = json!({
        "model": "test-model",
        "messages": [{"role": "user", "content": question}],
    });
    if let (Some(body), Some(params)) = (body.as_object_mut(), params.as_object()) {
        body.extend(params.clone());
    }
    body.to_string()
}

/// Posts a chat body as `key` and waits until the gateway has stored its answer.
fn post_stored(gateway: &Gateway, key: &str, body: String) -> RawResponse {
    let before = fills(gateway);
    let response = Raw::new(gateway.base_url()).post(CHAT, key, body);
    assert_eq!(response.cache(), Some("miss"), "{response:#?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while fills(gateway) < before + 1.0 {
        assert!(Instant::now() < deadline, "not stored: {response:#?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    response
}

/// A shared `faq` category, chosen by its keyword, ahead of the default categories.
fn with_shared_faq(config: &mut GatewayConfig) {
    let mut faq = toml::Table::new();
    faq.insert("shared".into(), true.into());
    faq.insert("ttl".into(), "1h".into());
    let mut rules = toml::Table::new();
    rules.insert("keywords".into(), vec!["opening hours"].into());
    faq.insert("match".into(), rules.into());
    config.add_section("categories.faq", faq, Some("categories.live"));
}

#[test]
fn keyless_requests_bypass_the_cache_unless_the_operator_opts_in() {
    let upstreams = [
        ScriptedUpstream::start().unwrap(),
        ScriptedUpstream::start().unwrap(),
    ];
    let configs = upstreams
        .iter()
        .zip(["bypass", "tenant"])
        .map(|(upstream, anonymous)| {
            let mut config = base_config(upstream);
            config.set("cache.anonymous", anonymous).unwrap();
            config
        })
        .collect();
    let gateways = start_gateways(configs);
    // The default: never looked up, never stored.
    let raw = Raw::new(gateways[0].base_url());
    for _ in 0..2 {
        let response = raw.post_keyless(CHAT, chat_body(EVEREST, false));
        assert_eq!(response.status, 200, "{response:#?}");
        assert_eq!(response.cache(), Some("bypass"), "{response:#?}");
        assert_eq!(response.header("x-cachet-bypass"), Some("anonymous"));
    }
    assert_eq!(upstreams[0].calls(CHAT_PATH), 2);
    assert_eq!(fills(&gateways[0]), 0.0);
    // Opted in: keyless callers are one tenant.
    let raw = Raw::new(gateways[1].base_url());
    let first = raw.post_keyless(CHAT, chat_body(EVEREST, false));
    assert_eq!(first.cache(), Some("miss"), "{first:#?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while fills(&gateways[1]) < 1.0 {
        assert!(Instant::now() < deadline, "not stored: {first:#?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let again = raw.post_keyless(CHAT, chat_body(EVEREST, false));
    assert_eq!(again.cache(), Some("hit-exact"), "{again:#?}");
}

#[test]
fn a_skewed_answer_in_a_shared_category_never_reaches_default_requests() {
    let upstream = ScriptedUpstream::start().unwrap();
    let mut config = base_config(&upstream);
    with_shared_faq(&mut config);
    let gateway = Gateway::start(&config).unwrap();
    let question = "What are the opening hours of the museum?";
    // Tenant A stores a one-token answer (cut at its limit) and a logit-biased one.
    upstream.push(Reply::Finish {
        text: "Mon".into(),
        finish_reason: "length".into(),
    });
    upstream.push(Reply::Text("Biased answer".into()));
    let cut = post_stored(
        &gateway,
        KEY_A,
        body_with(question, json!({"max_tokens": 1})),
    );
    assert_eq!(cut.header("x-cachet-category"), Some("faq"), "{cut:#?}");
    post_stored(
        &gateway,
        KEY_A,
        body_with(question, json!({"logit_bias": {"1734": 100}})),
    );
    // Tenant B with default parameters, other words or the same: never A's skewed answers.
    // (The first is a miss; its fresh answer, stored, may then serve the second.)
    let raw = Raw::new(gateway.base_url());
    let reworded = "When is the museum open? What are its opening hours?";
    for (i, asked) in [reworded, question].into_iter().enumerate() {
        let response = raw.post(CHAT, KEY_B, body_with(asked, json!({})));
        if i == 0 {
            assert_eq!(response.cache(), Some("miss"), "{asked}: {response:#?}");
        }
        assert_eq!(
            response.content(),
            format!("Answer 3 to: {reworded}"),
            "{asked}: {response:#?}"
        );
    }
    // The one-token answer serves only the same limit (shared, so to B as well).
    let same_limit = raw.post(CHAT, KEY_B, body_with(question, json!({"max_tokens": 1})));
    assert_eq!(same_limit.cache(), Some("hit-exact"), "{same_limit:#?}");
    assert_eq!(same_limit.content(), "Mon");
    // Naming the shared category by header does not put another question in it; the
    // response says which category was used.
    let named = raw.post_with(
        CHAT,
        KEY_B,
        body_with("What is my account balance?", json!({})),
        &[("x-cachet-category", "faq")],
    );
    assert_eq!(
        named.header("x-cachet-category"),
        Some("general"),
        "{named:#?}"
    );
    // What a key stored in a shared category is recorded as that key's: the operator can
    // take it all back by the key.
    let deleted = admin_post(
        &gateway,
        "/admin/invalidate",
        ADMIN_TOKEN,
        json!({"api_key": KEY_A}),
    );
    assert_eq!(deleted.json()["deleted"], 2, "{deleted:#?}");
    let gone = raw.post(CHAT, KEY_B, body_with(question, json!({"max_tokens": 1})));
    assert_eq!(gone.cache(), Some("miss"), "{gone:#?}");
}

#[test]
fn a_tenant_flooding_a_category_evicts_only_its_own_entries() {
    let upstream = ScriptedUpstream::start().unwrap();
    let mut config = base_config(&upstream);
    config
        .set("categories.general.max_entries_per_tenant", 2)
        .unwrap();
    let gateway = Gateway::start(&config).unwrap();
    for question in [EVEREST, FRANCE] {
        ask_stored(&gateway, KEY_A, question);
    }
    for question in [
        PHOTOSYNTHESIS,
        BOILING,
        SOURDOUGH,
        "How many legs does a spider have?",
        "Who wrote the novel Moby-Dick?",
        "How far away is the Moon from the Earth?",
    ] {
        ask_stored(&gateway, KEY_B, question);
    }
    for question in [EVEREST, FRANCE] {
        let again = ask(&gateway, KEY_A, question);
        assert_eq!(again.cache(), Some("hit-exact"), "{question}: {again:#?}");
    }
    // B kept its two newest.
    let oldest = ask(&gateway, KEY_B, PHOTOSYNTHESIS);
    assert_eq!(oldest.cache(), Some("miss"), "{oldest:#?}");
}

#[test]
fn credentials_never_show_in_healthz_metrics_or_logs() {
    // Nothing listens there: the request fails, and its error is logged.
    let upstream = format!(
        "http://cachet-user:{UPSTREAM_PASSWORD}@{}/v1",
        closed_addr().unwrap()
    );
    let mut config = GatewayConfig::default_with_upstream(&upstream).unwrap();
    config.set("embedder.threads", 1).unwrap();
    let gateway = Gateway::start(&config).unwrap();
    let raw = Raw::new(gateway.base_url());
    let failed = raw.post(CHAT, KEY_A, chat_body(EVEREST, false));
    // The log names the upstream, redacted, at start and in the failure's error (the log is
    // read from the process's stderr as it comes, so give it a moment).
    let deadline = Instant::now() + Duration::from_secs(10);
    while gateway.log_tail().matches("http://***@127.0.0.1:").count() < 2 {
        assert!(
            Instant::now() < deadline,
            "the log does not name the upstream, redacted, twice:\n{}",
            gateway.log_tail()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(failed.status, 502, "{failed:#?}");
    let health = raw.get("/healthz");
    assert_eq!(health.status, 200);
    let shown = health.json()["upstream"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(shown.starts_with("http://***@127.0.0.1:"), "{shown}");
    for (what, text) in [
        ("/healthz", health.body),
        ("/metrics", raw.get("/metrics").body),
        ("the failed answer", failed.body),
        ("the log", gateway.log_tail()),
    ] {
        assert!(
            !text.contains(UPSTREAM_PASSWORD) && !text.contains("cachet-user"),
            "{what} shows the upstream's credentials:\n{text}"
        );
    }
}

#[test]
fn check_config_refuses_a_placeholder_admin_token_with_its_field_path() {
    let shipped = paths::repo_root().join("configs/redis.toml");
    let shipped = shipped.to_str().unwrap();
    let check = |config: &str, env: &[(&str, &str)]| {
        let output =
            run_cachet_with_env(&["check-config", "--config", config], env, EXIT_TIMEOUT).unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        (output.status.success(), stderr)
    };
    // As shipped, the tokens come from the environment: unset, the file is refused.
    let (ok, stderr) = check(shipped, &[]);
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("admin.token_env: the environment variable CACHET_ADMIN_TOKEN is not set"),
        "{stderr}"
    );
    let strong = [
        ("CACHET_ADMIN_TOKEN", "5d0e8a2f7c41b9e36a1f0d4c8b7e2593"),
        ("CACHET_METRICS_TOKEN", "e81b3f6a0c9d42e7b5a1f8c03d6e94b2"),
    ];
    let (ok, stderr) = check(shipped, &strong);
    assert!(
        ok,
        "the shipped redis.toml with its documented variables: {stderr}"
    );
    let (ok, stderr) = check(shipped, &[("CACHET_ADMIN_TOKEN", PLACEHOLDER), strong[1]]);
    assert!(!ok);
    assert!(
        stderr.contains("admin.token_env: looks like a placeholder"),
        "{stderr}"
    );
    // The placeholder written into the file, as redis.toml once shipped it.
    let mut config = GatewayConfig::from_file(std::path::Path::new(shipped)).unwrap();
    config.remove("admin.token_env").unwrap();
    config.set("admin.token", PLACEHOLDER).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &config.to_toml()).unwrap();
    let (ok, stderr) = check(path.to_str().unwrap(), &strong);
    assert!(!ok);
    assert!(
        stderr.contains("admin.token: looks like a placeholder"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(PLACEHOLDER),
        "the token is quoted: {stderr}"
    );
}

#[test]
fn the_admin_api_listens_alone_and_metrics_can_require_a_token() {
    let upstream = ScriptedUpstream::start().unwrap();
    let mut config = base_config(&upstream);
    let admin_addr = format!("127.0.0.1:{}", free_port().unwrap());
    config.set("admin.listen", admin_addr.as_str()).unwrap();
    config.set("admin.metrics_token", METRICS_TOKEN).unwrap();
    let gateway = Gateway::start(&config).unwrap();
    let api = Raw::new(gateway.base_url());
    let admin = Raw::new(&format!("http://{admin_addr}"));

    let on_the_api = api.get_with_token("/admin/stats", ADMIN_TOKEN);
    assert_eq!(on_the_api.status, 404, "{on_the_api:#?}");
    let stats = admin.get_with_token("/admin/stats", ADMIN_TOKEN);
    assert_eq!(stats.status, 200, "{stats:#?}");
    assert_eq!(stats.header("x-content-type-options"), Some("nosniff"));
    assert!(
        stats
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/json"))
    );
    assert_eq!(admin.get("/admin/stats").status, 401);

    for listener in [&api, &admin] {
        assert_eq!(listener.get("/metrics").status, 401);
        assert_eq!(listener.get_with_token("/metrics", ADMIN_TOKEN).status, 401);
        let metrics = listener.get_with_token("/metrics", METRICS_TOKEN);
        assert_eq!(metrics.status, 200, "{metrics:#?}");
        assert!(metrics.body.contains("cachet_"), "{metrics:#?}");
        // Load balancers probe health without a token.
        assert_eq!(listener.get("/healthz").status, 200);
    }
}

#[test]
fn a_client_cannot_point_the_upstream_call_elsewhere() {
    let elsewhere = ScriptedUpstream::start().unwrap();
    let upstream = ScriptedUpstream::start().unwrap();
    let gateway = Gateway::start(&base_config(&upstream)).unwrap();
    // Neither the Host a client names nor an x-cachet-tenant it sends reach the upstream.
    let forged = Raw::new(gateway.base_url()).post_with(
        CHAT,
        KEY_A,
        chat_body(EVEREST, false),
        &[
            ("host", "internal.example"),
            ("x-cachet-tenant", "someone-else"),
        ],
    );
    assert_eq!(forged.status, 200, "{forged:#?}");
    let seen = &upstream.requests()[0].headers;
    assert_eq!(
        seen.get("host").map(String::as_str),
        Some(upstream.addr().to_string().as_str())
    );
    assert!(!seen.contains_key("x-cachet-tenant"), "{seen:?}");
    // An upstream's redirect is its answer, passed back; following it would carry the
    // client's key wherever the upstream points.
    upstream.set_fallback(Reply::Redirect(format!(
        "{}/chat/completions",
        elsewhere.base_url()
    )));
    // A client that does not follow redirects either, to see what the gateway answered.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let request = client
        .post(format!("{}{CHAT}", gateway.base_url()))
        .bearer_auth(KEY_A)
        .header("content-type", "application/json")
        .body(chat_body(FRANCE, false));
    let response = runtime.block_on(async { read_raw(request.send().await.unwrap()).await });
    assert_eq!(response.status, 307, "{response:#?}");
    assert!(
        response
            .header("location")
            .is_some_and(|l| l.starts_with(&elsewhere.base_url())),
        "{response:#?}"
    );
    assert!(
        elsewhere.requests().is_empty(),
        "the gateway followed the redirect with the client's key"
    );
}
