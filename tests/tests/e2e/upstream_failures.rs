//! What the upstream gets wrong: errors pass through unchanged and are never cached, and
//! neither are filtered, unfinished or broken answers.

use cachet_tests::upstream::{CHAT_PATH, COMPLETIONS_PATH};
use cachet_tests::{ChatCall, Gateway, GatewayConfig, Reply, ports};
use serde_json::{Value, json};

use crate::support::*;

fn assert_miss_answered_by_upstream(stack: &mut Stack, call: &ChatCall, calls_before: usize) {
    let retry = stack.chat(call);
    assert_eq!(
        retry.cache(),
        Some("miss"),
        "a failed answer was cached: {retry:#?}"
    );
    assert_eq!(retry.finish_reason.as_deref(), Some("stop"));
    assert_eq!(stack.upstream.completion_calls(), calls_before + 1);
}

#[test]
fn upstream_errors_pass_through_unchanged_and_are_not_cached() {
    let mut stack = Stack::start();
    let cases = [
        (Reply::rate_limited(), 429, false, EVEREST),
        (Reply::rate_limited(), 429, true, FRANCE),
        (Reply::server_error(), 500, false, BOILING),
        (Reply::server_error(), 500, true, PHOTOSYNTHESIS),
    ];
    for (reply, status, stream, question) in cases {
        let Reply::Error {
            message,
            kind,
            code,
            ..
        } = &reply
        else {
            unreachable!("the cases are errors")
        };
        let expected =
            json!({"error": {"message": message, "type": kind, "param": null, "code": code}});
        stack.upstream.push(reply.clone());
        let call = ChatCall::new(question).stream(stream);
        let outcome = stack.chat(&call);
        assert!(!outcome.ok, "{outcome:#?}");
        assert_eq!(outcome.status, Some(status), "{outcome:#?}");
        let body: Value =
            serde_json::from_str(outcome.body_text.as_deref().unwrap_or("null")).unwrap();
        assert_eq!(
            body, expected,
            "the upstream's error body must pass through unchanged"
        );
        let calls = stack.upstream.completion_calls();
        assert_miss_answered_by_upstream(&mut stack, &call, calls);
    }
}

#[test]
fn a_content_filtered_answer_is_not_cached() {
    let mut stack = Stack::start();
    for stream in [false, true] {
        let question = if stream { FRANCE } else { BOILING };
        stack.upstream.push(Reply::Finish {
            text: "I cannot answer that".into(),
            finish_reason: "content_filter".into(),
        });
        let call = ChatCall::new(question).stream(stream);
        let filtered = stack.chat(&call);
        assert_eq!(filtered.text(), "I cannot answer that");
        assert_eq!(filtered.finish_reason.as_deref(), Some("content_filter"));
        let calls = stack.upstream.completion_calls();
        assert_miss_answered_by_upstream(&mut stack, &call, calls);
    }
}

#[test]
fn a_length_finished_answer_is_cached() {
    let mut stack = Stack::start();
    stack.upstream.push(Reply::Finish {
        text: "Mount Everest is 8,849".into(),
        finish_reason: "length".into(),
    });
    let call = ChatCall::new(EVEREST).stream(true);
    let first = stack.chat_stored(&call);
    assert_eq!(first.finish_reason.as_deref(), Some("length"));
    let again = stack.chat(&call);
    assert_eq!(again.cache(), Some("hit-exact"), "{again:#?}");
    assert_eq!(again.text(), "Mount Everest is 8,849");
    assert_eq!(again.finish_reason.as_deref(), Some("length"));
}

#[test]
fn a_stream_cut_mid_way_is_not_cached_and_not_completed() {
    let mut stack = Stack::start();
    stack.upstream.push(Reply::Cut("Mount Everest is".into()));
    let call = ChatCall::new(EVEREST).stream(true);
    let cut = stack.chat(&call);
    assert!(
        !cut.ok || cut.finish_reason.is_none(),
        "a cut stream must not look complete to the client: {cut:#?}"
    );
    assert_ne!(cut.finish_reason.as_deref(), Some("stop"));
    assert_miss_answered_by_upstream(&mut stack, &call, 1);
    assert!(stack.gateway.is_running());
}

#[test]
fn a_stream_without_finish_reason_is_not_cached() {
    let mut stack = Stack::start();
    stack
        .upstream
        .push(Reply::Unfinished("Mount Everest is tall".into()));
    let call = ChatCall::new(EVEREST).stream(true);
    let unfinished = stack.chat(&call);
    assert_eq!(unfinished.finish_reason, None, "{unfinished:#?}");
    assert_miss_answered_by_upstream(&mut stack, &call, 1);
}

#[test]
fn a_plain_answer_cut_mid_way_never_reaches_the_client_whole() {
    let stack = Stack::start();
    stack.upstream.push(Reply::Cut("Mount Everest is".into()));
    let body = json!({"model": "test-model", "messages": [{"role": "user", "content": EVEREST}]});
    let response = stack
        .raw()
        .post("/v1/chat/completions", KEY_A, body.to_string());
    // The gateway may relay the body as it arrives (then the client's body breaks off too) or
    // buffer it (then it must answer with an OpenAI-shaped 5xx); a 200 with a whole body
    // would be a lie.
    if response.body_error.is_none() {
        assert!(response.status >= 500, "{response:?}");
        response.assert_openai_error();
    }
    let retry = stack
        .raw()
        .post("/v1/chat/completions", KEY_A, body.to_string());
    assert_eq!(retry.status, 200, "{retry:?}");
    assert_eq!(retry.header("x-cachet-cache"), Some("miss"));
    assert_eq!(stack.upstream.calls(CHAT_PATH), 2);
}

#[test]
fn an_unreachable_upstream_is_an_openai_shaped_gateway_error() {
    let closed = ports::closed_addr().unwrap();
    let config = GatewayConfig::default_with_upstream(&format!("http://{closed}/v1")).unwrap();
    let gateway = Gateway::start(&config).unwrap();
    let raw = Raw::new(gateway.base_url());
    let body = json!({"model": "test-model", "messages": [{"role": "user", "content": EVEREST}]});
    let response = raw.post("/v1/chat/completions", KEY_A, body.to_string());
    assert!((500..600).contains(&response.status), "{response:?}");
    let error = response.assert_openai_error();
    assert!(
        !error["message"]
            .as_str()
            .unwrap()
            .contains(&closed.port().to_string()),
        "5xx bodies stay generic; the upstream's address belongs in the log: {error}"
    );
    assert_eq!(raw.get("/healthz").status, 200);
}

#[test]
fn the_upstream_flag_overrides_the_config() {
    let upstream = cachet_tests::ScriptedUpstream::start().unwrap();
    let closed = ports::closed_addr().unwrap();
    let config = GatewayConfig::default_with_upstream(&format!("http://{closed}/v1")).unwrap();
    let gateway =
        Gateway::start_toml(&config.to_toml(), &["--upstream", &upstream.base_url()]).unwrap();
    let raw = Raw::new(gateway.base_url());
    let body = json!({"model": "test-model", "prompt": "Once upon a time"});
    let response = raw.post("/v1/completions", KEY_A, body.to_string());
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(upstream.calls(COMPLETIONS_PATH), 1);
}

#[test]
fn hits_are_served_while_the_upstream_is_down() {
    let mut stack = Stack::start();
    let first = stack.chat_stored(&ChatCall::new(EVEREST));
    // Replacing the upstream drops (stops) the one the gateway forwards to.
    let addr = stack.upstream.addr();
    stack.upstream = cachet_tests::ScriptedUpstream::start().unwrap();
    assert!(std::net::TcpStream::connect(addr).is_err());
    for question in [EVEREST, EVEREST_PARAPHRASE] {
        let hit = stack.chat(&ChatCall::new(question));
        assert!(
            hit.cache().unwrap_or_default().starts_with("hit"),
            "{hit:#?}"
        );
        assert_eq!(hit.text(), first.text());
    }
    let miss = stack.chat(&ChatCall::new(SOURDOUGH));
    assert!(!miss.ok, "{miss:#?}");
    assert!(miss.status.is_some_and(|s| s >= 500), "{miss:#?}");
}
