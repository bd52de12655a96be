//! The question pairs the scenarios rely on, checked with the project's own embedder: when a
//! semantic scenario fails, this says whether the model or the gateway moved.

use cachet_embedder::{Embedder, EmbedderConfig};
use cachet_tests::paths::{repo_root, require_model_assets};

use crate::support::*;

/// Paraphrases clear any threshold up to this.
const PARAPHRASE_MIN: f32 = 0.95;
/// Unrelated questions stay below the default `general` threshold (0.55) with a margin.
const UNRELATED_MAX: f32 = 0.45;
/// Look-alikes are this close: no threshold tells them apart, only the hit guards.
const LOOK_ALIKE_MIN: f32 = 0.90;

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[test]
fn paraphrases_clear_the_threshold_and_the_rest_stay_well_below() {
    require_model_assets().unwrap();
    let root = repo_root();
    let embedder = Embedder::start(EmbedderConfig::new(
        root.join("assets/minilm-q8/model.onnx"),
        root.join("assets/minilm-q8/tokenizer.json"),
        root.join("assets/onnxruntime/libonnxruntime.so.1.32.0"),
    ))
    .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let similarity = |a: &str, b: &str| {
        runtime.block_on(async {
            let vectors = embedder
                .embed_many(vec![a.to_owned(), b.to_owned()])
                .await
                .unwrap();
            cosine(&vectors[0], &vectors[1])
        })
    };
    for (question, paraphrase) in [
        (EVEREST, EVEREST_PARAPHRASE),
        (FRANCE, FRANCE_PARAPHRASE),
        (PHOTOSYNTHESIS, PHOTOSYNTHESIS_PARAPHRASE),
        (BOILING, BOILING_PARAPHRASE),
    ] {
        let score = similarity(question, paraphrase);
        assert!(
            score >= PARAPHRASE_MIN,
            "{question:?} ~ {paraphrase:?}: {score}"
        );
    }
    let unrelated = [EVEREST, FRANCE, PHOTOSYNTHESIS, BOILING, SOURDOUGH];
    for (i, a) in unrelated.iter().enumerate() {
        for b in &unrelated[i + 1..] {
            let score = similarity(a, b);
            assert!(score <= UNRELATED_MAX, "{a:?} ~ {b:?}: {score}");
        }
    }
    let score = similarity(FRANCE, GERMANY);
    assert!(score > 0.55, "{FRANCE:?} ~ {GERMANY:?}: {score}");
    for (a, b, _) in LOOK_ALIKES {
        let score = similarity(a, b);
        assert!(score >= LOOK_ALIKE_MIN, "{a:?} ~ {b:?}: {score}");
    }
}
