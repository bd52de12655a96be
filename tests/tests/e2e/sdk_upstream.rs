//! The harness checked against itself: the SDK driver talking straight to the scripted
//! upstream, no gateway, so that a gateway test failure never hides a harness bug.

use cachet_tests::upstream::{CHAT_PATH, COMPLETIONS_PATH, MODELS};
use cachet_tests::{ChatCall, OpenAiPy, Reply, ScriptedUpstream};

fn direct() -> (ScriptedUpstream, OpenAiPy) {
    let upstream = ScriptedUpstream::start().unwrap();
    let client = OpenAiPy::start(&upstream.base_url()).unwrap();
    (upstream, client)
}

#[test]
fn the_sdk_reads_plain_and_streamed_answers_of_the_upstream() {
    let (upstream, mut client) = direct();
    let plain = client.chat(&ChatCall::new("Why?")).unwrap();
    assert_eq!(plain.text(), "Answer 1 to: Why?");
    assert_eq!(plain.status, Some(200));
    assert_eq!(plain.finish_reason.as_deref(), Some("stop"));
    assert_eq!(plain.id.as_deref(), Some("chatcmpl-upstream-1"));

    let streamed = client
        .chat(
            &ChatCall::new("Why?")
                .stream(true)
                .param("stream_options", serde_json::json!({"include_usage": true})),
        )
        .unwrap();
    assert_eq!(streamed.text(), "Answer 2 to: Why?");
    assert_eq!(streamed.finish_reason.as_deref(), Some("stop"));
    assert_eq!(streamed.chunk_ids, ["chatcmpl-upstream-2"]);
    assert!(streamed.chunks >= 4, "{streamed:#?}");
    assert!(streamed.usage.is_some(), "{streamed:#?}");
    assert_eq!(
        streamed.header("content-type"),
        Some("text/event-stream"),
        "{streamed:#?}"
    );

    let completion = client
        .completion(&ChatCall::new("Once upon a time").stream(true))
        .unwrap();
    assert_eq!(completion.text(), "Answer 3 to: Once upon a time");
    assert_eq!(upstream.calls(CHAT_PATH), 2);
    assert_eq!(upstream.calls(COMPLETIONS_PATH), 1);
    assert_eq!(
        upstream.authorizations(),
        vec![Some("Bearer sk-tenant-a".to_owned()); 3]
    );
}

#[test]
fn the_sdk_reports_errors_without_retrying() {
    let (upstream, mut client) = direct();
    upstream.push(Reply::rate_limited());
    let outcome = client.chat(&ChatCall::new("q")).unwrap();
    assert!(!outcome.ok);
    assert_eq!(outcome.status, Some(429));
    assert_eq!(outcome.exception.as_deref(), Some("RateLimitError"));
    assert_eq!(
        outcome.error.as_ref().unwrap()["code"],
        "rate_limit_exceeded"
    );
    assert_eq!(upstream.calls(CHAT_PATH), 1, "the driver must not retry");

    upstream.push(Reply::Cut("half an".into()));
    let outcome = client.chat(&ChatCall::new("q").stream(true)).unwrap();
    assert!(!outcome.ok, "a cut stream must surface: {outcome:#?}");
    assert!(outcome.finish_reason.is_none());
}

#[test]
fn the_sdk_lists_models_and_decodes_embeddings() {
    let (upstream, mut client) = direct();
    let models = client.models("sk-x").unwrap();
    assert!(models.ok, "{models:#?}");
    assert_eq!(models.data.unwrap(), serde_json::json!(MODELS));
    let embeddings = client.embeddings("sk-x", &["hello"]).unwrap();
    assert!(embeddings.ok, "{embeddings:#?}");
    let vector: Vec<f32> = serde_json::from_value(embeddings.data.unwrap()[0].clone()).unwrap();
    assert_eq!(vector, cachet_tests::upstream::fake_embedding("hello"));
    assert_eq!(upstream.calls("/v1/embeddings"), 1);
}
