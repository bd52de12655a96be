//! The real model end to end: parity with Python, batching invariance, norms, edge inputs, errors.
//!
//! These tests need `scripts/fetch-assets` to have run; without the assets they fail and say so.

// Tests unwrap: a panic with the error is the most useful failure report here.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use cachet_embedder::pooling::cosine_similarity;
use cachet_embedder::{Device, EmbedBackend, Embedder, EmbedderConfig, Error, OrtBackend};
use common::{asset, minilm_config, norm, reference, reference_of, shipped_config};

/// One embedder for the whole file: loading the model once keeps the suite fast on two cores.
fn embedder() -> &'static Embedder {
    static EMBEDDER: OnceLock<Embedder> = OnceLock::new();
    EMBEDDER.get_or_init(|| {
        let mut config = minilm_config();
        config.max_tokens = reference().max_tokens;
        Embedder::start(config).expect("the int8 MiniLM model loads on the CPU")
    })
}

fn long_text(n_words: usize) -> String {
    (0..n_words).map(|i| format!("word{} ", i % 50)).collect()
}

#[tokio::test]
async fn matches_the_python_reference_vectors() {
    let reference = reference();
    assert!(!reference.items.is_empty());
    for item in &reference.items {
        let vector = embedder().embed(&item.text).await.unwrap();
        assert_eq!(vector.len(), item.embedding.len());
        let cosine = cosine_similarity(&vector, &item.embedding);
        assert!(cosine >= 0.999, "cosine {cosine} for {:?}", item.text);
    }
}

#[tokio::test]
async fn batched_equals_unbatched() {
    let texts: Vec<String> = reference()
        .items
        .into_iter()
        .map(|item| item.text)
        .collect();
    let batched = embedder().embed_many(texts.clone()).await.unwrap();
    for (text, from_batch) in texts.iter().zip(&batched) {
        let alone = embedder().embed(text).await.unwrap();
        let cosine = cosine_similarity(&alone, from_batch);
        assert!(cosine >= 0.9999, "cosine {cosine} for {text:?}");
    }
}

/// Embeds the sentences of the reference `name` with the shipped model and checks that
/// each vector is within `min_cosine` of the reference's.
fn assert_shipped_model_near(name: &str, min_cosine: f32) {
    let reference = reference_of(name);
    let mut config = shipped_config();
    config.max_tokens = reference.max_tokens;
    let mut backend = OrtBackend::new(&config).unwrap();
    let texts: Vec<&str> = reference
        .items
        .iter()
        .map(|item| item.text.as_str())
        .collect();
    // As one batch: on the CPU each text still runs alone, as the references ran them.
    let vectors = backend.embed_batch(&texts).unwrap();
    for (item, vector) in reference.items.iter().zip(&vectors) {
        let cosine = cosine_similarity(vector, &item.embedding);
        assert!(
            cosine >= min_cosine,
            "cosine {cosine} to {name} for {:?}",
            item.text
        );
    }
}

#[test]
fn the_shipped_int8_model_matches_its_python_reference() {
    assert_shipped_model_near("minilm-q8", 0.9999);
}

#[test]
fn the_shipped_int8_model_stays_close_to_float32_on_this_cpu() {
    // The Python reference runs the same ONNX Runtime kernels, so it shares their faults; the
    // float32 model's vectors do not. With signed int8 weights, ONNX Runtime's kernels for x86
    // CPUs without VNNI saturate 16-bit sums and the lowest cosine fell to 0.977 on an AVX2 CPU.
    assert_shipped_model_near("minilm-f32", 0.98);
}

#[test]
fn a_quantized_models_vectors_depend_on_the_batch_unless_texts_run_alone() {
    // The int8 activation scale spans a whole run, so batching moves a quantized model's
    // vectors; one text per run (the CPU default) keeps them what they are alone.
    let mut backend = OrtBackend::new(&shipped_config()).unwrap();
    let texts = [
        "What is the capital of France?",
        "How do I reverse a list in Python?",
        "Explain the difference between TCP and UDP in two sentences, with one example each.",
        "hi",
    ];
    let alone: Vec<Vec<f32>> = texts
        .iter()
        .map(|text| backend.embed_batch(&[text]).unwrap().remove(0))
        .collect();
    let default_batch = backend.embed_batch(&texts).unwrap();
    for ((text, a), b) in texts.iter().zip(&alone).zip(&default_batch) {
        assert_eq!(a, b, "{text:?} changed in a batch");
    }
    backend.set_length_buckets(false);
    backend.set_rows_per_run(usize::MAX);
    let one_run = backend.embed_batch(&texts).unwrap();
    let lowest = alone
        .iter()
        .zip(&one_run)
        .map(|(a, b)| cosine_similarity(a, b))
        .fold(1.0_f32, f32::min);
    assert!(
        lowest < 0.9999,
        "one padded run left every vector as it was alone (lowest cosine {lowest})"
    );
}

#[test]
fn one_padded_run_equals_length_buckets() {
    // The backend pads mixed lengths into one run when buckets are off; padding must not leak
    // into the pooled vectors.
    let mut backend = OrtBackend::new(&minilm_config()).unwrap();
    backend.set_rows_per_run(usize::MAX);
    let long = long_text(150);
    let texts = ["hi", "what is a semantic cache?", long.as_str(), ""];
    let bucketed = backend.embed_batch(&texts).unwrap();
    backend.set_length_buckets(false);
    let padded = backend.embed_batch(&texts).unwrap();
    for ((text, a), b) in texts.iter().zip(&bucketed).zip(&padded) {
        let cosine = cosine_similarity(a, b);
        assert!(cosine >= 0.9999, "cosine {cosine} for {text:?}");
    }
}

#[tokio::test]
async fn vectors_have_unit_length_and_the_models_width() {
    assert_eq!(embedder().dim(), 384);
    assert_eq!(embedder().provider(), "CPUExecutionProvider");
    let texts = vec![
        "a".to_owned(),
        "How do I sort a list?".to_owned(),
        long_text(400),
    ];
    for vector in embedder().embed_many(texts).await.unwrap() {
        assert_eq!(vector.len(), 384);
        assert!((norm(&vector) - 1.0).abs() < 1e-4, "norm {}", norm(&vector));
    }
}

#[tokio::test]
async fn empty_text_is_a_valid_vector() {
    // Documented behaviour: "" and whitespace embed as `[CLS] [SEP]`, a valid unit vector.
    let empty = embedder().embed("").await.unwrap();
    let blank = embedder().embed(" \n\t ").await.unwrap();
    assert!((norm(&empty) - 1.0).abs() < 1e-4);
    assert!(cosine_similarity(&empty, &blank) >= 0.9999);
    let other = embedder()
        .embed("what is the capital of France")
        .await
        .unwrap();
    assert!(
        cosine_similarity(&empty, &other) < 0.99,
        "empty text is not a wildcard"
    );
}

#[tokio::test]
async fn long_input_is_truncated_at_max_tokens() {
    let max_tokens = reference().max_tokens;
    // Every word is at least one token, so the shared prefix already fills the limit.
    let prefix = long_text(max_tokens + 10);
    let a = embedder()
        .embed(&format!("{prefix} the ending about cats"))
        .await
        .unwrap();
    let b = embedder()
        .embed(&format!("{prefix} a different ending about databases"))
        .await
        .unwrap();
    assert!(
        cosine_similarity(&a, &b) >= 0.9999,
        "text past the limit must not count"
    );
    // Far beyond the model's 512 positions, which it would reject without truncation.
    let huge = embedder().embed(&long_text(5000)).await.unwrap();
    assert!((norm(&huge) - 1.0).abs() < 1e-4);
}

#[tokio::test]
async fn a_smaller_max_tokens_truncates_earlier() {
    let mut config = minilm_config();
    config.max_tokens = 8;
    let short = Embedder::start(config).unwrap();
    let a = short
        .embed("one two three four five six seven eight nine")
        .await
        .unwrap();
    let b = short
        .embed("one two three four five six ten eleven twelve")
        .await
        .unwrap();
    assert!(cosine_similarity(&a, &b) >= 0.9999);
    let full_a = embedder()
        .embed("one two three four five six seven eight nine")
        .await
        .unwrap();
    let full_b = embedder()
        .embed("one two three four five six ten eleven twelve")
        .await
        .unwrap();
    assert!(
        cosine_similarity(&full_a, &full_b) < 0.9999,
        "the default limit keeps them apart"
    );
}

#[test]
fn max_tokens_beyond_the_model_fails_at_start() {
    let mut config = minilm_config();
    config.max_tokens = 600; // MiniLM has 512 positions
    let error = Embedder::start(config).unwrap_err();
    assert!(
        matches!(
            error,
            Error::WarmUp {
                max_tokens: 600,
                ..
            }
        ),
        "{error:?}"
    );
}

#[test]
fn cuda_without_a_gpu_build_fails_with_instructions() {
    let mut config = minilm_config();
    config.device = Device::Cuda(0);
    let error = Embedder::start(config).unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(error, Error::CudaUnavailable { device_id: 0, .. }),
        "{error:?}"
    );
    for hint in [
        "scripts/fetch-assets --gpu",
        "libonnxruntime.so.1.31.1",
        "LD_LIBRARY_PATH",
    ] {
        assert!(message.contains(hint), "{message:?} should mention {hint}");
    }
}

#[test]
fn a_second_onnx_runtime_library_is_refused() {
    let _ = embedder(); // make sure the real library is loaded first
    let mut config = minilm_config();
    config.onnxruntime = asset("minilm-int8/tokenizer.json"); // any other existing file
    let error = Embedder::start(config).unwrap_err();
    assert!(matches!(error, Error::RuntimeMismatch { .. }), "{error:?}");
    assert!(error.to_string().contains("already loaded"), "{error}");
}

/// Points one of the config's three files somewhere else.
type SetPath = fn(&mut EmbedderConfig, PathBuf);

#[test]
fn missing_files_name_the_path_and_the_fix() {
    let missing = PathBuf::from("/nonexistent/cachet/file");
    let cases: [(&str, SetPath); 3] = [
        ("model", |config, path| config.model = path),
        ("tokenizer", |config, path| config.tokenizer = path),
        ("onnxruntime", |config, path| config.onnxruntime = path),
    ];
    for (field, set) in cases {
        let mut config = minilm_config();
        set(&mut config, missing.clone());
        let message = Embedder::start(config).unwrap_err().to_string();
        assert!(
            message.contains("/nonexistent/cachet/file"),
            "{field}: {message}"
        );
        assert!(
            message.contains("scripts/fetch-assets"),
            "{field}: {message}"
        );
    }
}
