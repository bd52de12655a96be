//! A tiny random Qwen2-style checkpoint (QKV bias, GQA, untied head) written for tests.

use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use safetensors::tensor::{Dtype, TensorView};

pub const VOCAB: usize = 64;

/// The sizes of a tiny checkpoint.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub hidden: usize,
    pub inter: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
}

/// The smallest shape: 2 layers of width 32, for tests of behaviour.
pub const TINY: Shape = Shape {
    hidden: 32,
    inter: 64,
    layers: 2,
    heads: 4,
    kv_heads: 2,
};

/// Writes config.json, model.safetensors (bf16, to exercise conversion), tokenizer.json
/// and tokenizer_config.json of a 2-layer Qwen2-style model into `dir`.
pub fn write_qwen2(dir: &Path, seed: u64) {
    write_qwen2_shaped(dir, seed, TINY);
}

/// [`write_qwen2`] with other sizes (a prefill that takes measurable time, for timing tests).
pub fn write_qwen2_shaped(dir: &Path, seed: u64, shape: Shape) {
    let Shape {
        hidden,
        inter,
        layers,
        heads,
        kv_heads,
    } = shape;
    let head_dim = hidden / heads;
    let config = serde_json::json!({
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
        "hidden_size": hidden, "intermediate_size": inter, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": kv_heads,
        "vocab_size": VOCAB, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
        "tie_word_embeddings": false, "max_position_embeddings": 512,
        "hidden_act": "silu", "eos_token_id": 1, "bos_token_id": 0
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();

    let mut rng = StdRng::seed_from_u64(seed);
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut add = |name: String, shape: Vec<usize>, scale: f32, offset: f32, rng: &mut StdRng| {
        let n: usize = shape.iter().product();
        let bytes = (0..n)
            .flat_map(|_| {
                let v = offset + scale * (rng.random::<f32>() * 2.0 - 1.0);
                half::bf16::from_f32(v).to_le_bytes()
            })
            .collect();
        tensors.push((name, shape, bytes));
    };
    add(
        "model.embed_tokens.weight".into(),
        vec![VOCAB, hidden],
        1.0,
        0.0,
        &mut rng,
    );
    add(
        "lm_head.weight".into(),
        vec![VOCAB, hidden],
        0.3,
        0.0,
        &mut rng,
    );
    add("model.norm.weight".into(), vec![hidden], 0.2, 1.0, &mut rng);
    for l in 0..layers {
        let p = format!("model.layers.{l}");
        let w = 1.0 / (hidden as f32).sqrt();
        add(
            format!("{p}.input_layernorm.weight"),
            vec![hidden],
            0.2,
            1.0,
            &mut rng,
        );
        add(
            format!("{p}.post_attention_layernorm.weight"),
            vec![hidden],
            0.2,
            1.0,
            &mut rng,
        );
        add(
            format!("{p}.self_attn.q_proj.weight"),
            vec![heads * head_dim, hidden],
            w,
            0.0,
            &mut rng,
        );
        add(
            format!("{p}.self_attn.k_proj.weight"),
            vec![kv_heads * head_dim, hidden],
            w,
            0.0,
            &mut rng,
        );
        add(
            format!("{p}.self_attn.v_proj.weight"),
            vec![kv_heads * head_dim, hidden],
            w,
            0.0,
            &mut rng,
        );
        add(
            format!("{p}.self_attn.q_proj.bias"),
            vec![heads * head_dim],
            0.5,
            0.0,
            &mut rng,
        );
        add(
            format!("{p}.self_attn.k_proj.bias"),
            vec![kv_heads * head_dim],
            0.5,
            0.0,
            &mut rng,
        );
        add(
            format!("{p}.self_attn.v_proj.bias"),
            vec![kv_heads * head_dim],
            0.5,
            0.0,
            &mut rng,
        );
        add(
            format!("{p}.self_attn.o_proj.weight"),
            vec![hidden, heads * head_dim],
            w,
            0.0,
            &mut rng,
        );
        add(
            format!("{p}.mlp.gate_proj.weight"),
            vec![inter, hidden],
            w,
            0.0,
            &mut rng,
        );
        add(
            format!("{p}.mlp.up_proj.weight"),
            vec![inter, hidden],
            w,
            0.0,
            &mut rng,
        );
        add(
            format!("{p}.mlp.down_proj.weight"),
            vec![hidden, inter],
            1.0 / (inter as f32).sqrt(),
            0.0,
            &mut rng,
        );
    }
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            (
                name.clone(),
                TensorView::new(Dtype::BF16, shape.clone(), bytes).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
    write_word_tokenizer(dir);
}

/// A word-level tokenizer: "w0".."w63" are the tokens, separated by spaces.
fn write_word_tokenizer(dir: &Path) {
    let vocab: serde_json::Map<String, serde_json::Value> = (0..VOCAB)
        .map(|i| (format!("w{i}"), serde_json::Value::from(i)))
        .collect();
    let tokenizer = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null,
        "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": null,
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": false},
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "w2"}
    });
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).unwrap();
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"eos_token": "w1", "chat_template": "{% for m in messages %}w3 {{ m.content }} w4 {% endfor %}w5"}"#,
    )
    .unwrap();
}
