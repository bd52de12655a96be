//! Greedy decoding and logits of the model match the independent numpy reference.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use cachet_engine::backend::{KvLayout, StepBatch};
use cachet_engine::checkpoint::ModelConfig;
use cachet_engine::model::{self, Device, ForwardStep};
use cachet_engine::sampling::argmax;
use cachet_engine::text::TextCodec;

const BLOCK: usize = 16;

/// Greedy decoding straight on the model (no scheduler): prefill, then one token a step.
fn greedy(model: &mut dyn ForwardStep, prompt: &[u32], n_new: usize) -> (Vec<f32>, Vec<u32>) {
    let table: Vec<u32> = (0..((prompt.len() + n_new) / BLOCK + 1) as u32).collect();
    let mut batch = StepBatch::default();
    batch.push_seq(prompt, 0, table.clone(), BLOCK, true);
    let first = model.forward(&batch).unwrap().remove(0);
    let mut out = vec![argmax(&first)];
    while out.len() < n_new {
        let mut batch = StepBatch::default();
        let last = *out.last().unwrap();
        batch.push_seq(
            &[last],
            prompt.len() + out.len() - 1,
            table.clone(),
            BLOCK,
            true,
        );
        out.push(argmax(&model.forward(&batch).unwrap()[0]));
    }
    (first, out)
}

fn load(dir: &Path) -> Box<dyn ForwardStep> {
    let config = ModelConfig::from_dir(dir).unwrap();
    let kv = KvLayout {
        n_blocks: 32,
        block_size: BLOCK,
    };
    model::load(dir, &config, &Device::Cpu, kv, false).unwrap()
}

const PROMPTS: [&str; 5] = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a small village,",
    "The three primary colors are",
    "Water boils at a temperature of",
];

#[test]
fn smollm2_matches_reference_for_32_greedy_tokens() {
    let dir = common::smollm2_dir();
    let codec = TextCodec::from_dir(&dir).unwrap();
    let mut model = load(&dir);
    for prompt in PROMPTS {
        let reference = common::reference(&dir, &["--prompt", prompt], 32);
        let ids = codec.encode(prompt, true).unwrap();
        assert_eq!(ids, reference.prompt_ids, "tokenization of {prompt:?}");
        let (logits, tokens) = greedy(model.as_mut(), &ids, 32);
        let diff = common::max_abs_diff(&logits, &reference.first_logits);
        assert!(diff < 1e-3, "{prompt:?}: logits differ by {diff}");
        assert_eq!(tokens, reference.generated_ids, "{prompt:?}");
    }
}

#[test]
fn tiny_qwen2_with_qkv_bias_matches_reference() {
    let dir = tempfile::tempdir().unwrap();
    common::tiny::write_qwen2(dir.path(), 7);
    let mut model = load(dir.path());
    for ids in [
        vec![0u32, 5, 9, 13, 2],
        (0..40).map(|i| (i * 7 % 64) as u32).collect(),
    ] {
        let text: Vec<String> = ids.iter().map(u32::to_string).collect();
        let reference = common::reference(dir.path(), &["--ids", &text.join(",")], 24);
        let (logits, tokens) = greedy(model.as_mut(), &ids, 24);
        let diff = common::max_abs_diff(&logits, &reference.first_logits);
        assert!(diff < 1e-3, "logits differ by {diff}");
        assert_eq!(tokens, reference.generated_ids);
    }
}

/// `forward_greedy` (the worker's path for greedy requests) picks the argmax of the
/// logits `forward` returns, in prefill and decode steps alike.
#[test]
fn greedy_steps_pick_the_argmax_of_the_logits() {
    let dir = tempfile::tempdir().unwrap();
    common::tiny::write_qwen2(dir.path(), 11);
    let (mut a, mut b) = (load(dir.path()), load(dir.path()));
    let mut next = vec![3u32, 9, 27, 11];
    for step in 0..6 {
        let position = if step == 0 { 0 } else { 3 + step };
        let mut batch = StepBatch::default();
        batch.push_seq(&next, position, (0..4).collect(), BLOCK, true);
        let logits = a.forward(&batch).unwrap();
        let ids = b.forward_greedy(&batch).unwrap();
        assert_eq!(ids, vec![argmax(&logits[0])], "step {step}");
        next = ids;
    }
}
