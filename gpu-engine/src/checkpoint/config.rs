//! config.json of a Llama-family checkpoint, parsed and checked into [`ModelConfig`].

use std::path::Path;

use serde::Deserialize;

use super::read_json;
use crate::{Error, Result};

/// The model families the engine runs; they share one forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    Llama,
    Qwen2,
    Mistral,
}

/// How RoPE frequencies are adjusted for long contexts.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    None,
    /// Positions divided by `factor` (equivalently, frequencies divided by it).
    Linear {
        factor: f64,
    },
    /// Llama 3.1's piecewise frequency scaling.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
}

/// A checked model configuration: every field the forward pass needs, with defaults applied.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    pub tie_word_embeddings: bool,
    pub qkv_bias: bool,
    /// The longest sequence (prompt plus output) the model accepts.
    pub max_positions: usize,
    pub eos_token_ids: Vec<u32>,
}

#[derive(Debug, Deserialize)]
struct RawConfig {
    #[serde(default)]
    architectures: Vec<String>,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    vocab_size: usize,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_scaling: Option<serde_json::Value>,
    /// transformers 5 writes RoPE's theta and scaling here instead (`rope_type`,
    /// `rope_theta`, `factor`, ...).
    rope_parameters: Option<serde_json::Value>,
    tie_word_embeddings: Option<bool>,
    attention_bias: Option<bool>,
    max_position_embeddings: Option<usize>,
    sliding_window: Option<usize>,
    hidden_act: Option<String>,
    eos_token_id: Option<TokenIds>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum TokenIds {
    One(u32),
    Many(Vec<u32>),
}

impl TokenIds {
    fn into_vec(self) -> Vec<u32> {
        match self {
            TokenIds::One(id) => vec![id],
            TokenIds::Many(ids) => ids,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct RawGenerationConfig {
    eos_token_id: Option<TokenIds>,
}

impl ModelConfig {
    /// Reads `config.json` (and `generation_config.json` for end-of-sequence ids) from `dir`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let mut config = Self::from_json_str_at(dir.join("config.json").as_path())?;
        let generation_path = dir.join("generation_config.json");
        if generation_path.exists() {
            let generation: RawGenerationConfig = read_json(&generation_path)?;
            if let Some(ids) = generation.eos_token_id {
                config.eos_token_ids = ids.into_vec();
            }
        }
        Ok(config)
    }

    fn from_json_str_at(path: &Path) -> Result<Self> {
        let raw: RawConfig = read_json(path)?;
        Self::from_raw(raw)
    }

    /// Parses a config.json body; used by tests and by [`ModelConfig::from_dir`].
    pub fn from_json(text: &str) -> Result<Self> {
        let raw: RawConfig = serde_json::from_str(text).map_err(|source| Error::Json {
            path: "config.json".into(),
            source,
        })?;
        Self::from_raw(raw)
    }

    fn from_raw(raw: RawConfig) -> Result<Self> {
        let name = raw.architectures.first().cloned().unwrap_or_default();
        let architecture = match name.as_str() {
            "LlamaForCausalLM" => Architecture::Llama,
            "Qwen2ForCausalLM" => Architecture::Qwen2,
            "MistralForCausalLM" => Architecture::Mistral,
            _ => return Err(Error::UnsupportedArchitecture(name)),
        };
        if let Some(act) = raw.hidden_act.as_deref()
            && act != "silu"
        {
            return Err(Error::InvalidConfig(format!(
                "hidden_act {act:?} is not supported, only \"silu\""
            )));
        }
        let n_heads = raw.num_attention_heads;
        let n_kv_heads = raw.num_key_value_heads.unwrap_or(n_heads);
        if n_heads == 0 || n_kv_heads == 0 || !n_heads.is_multiple_of(n_kv_heads) {
            return Err(Error::InvalidConfig(format!(
                "num_attention_heads {n_heads} is not a multiple of num_key_value_heads {n_kv_heads}"
            )));
        }
        let head_dim = raw.head_dim.unwrap_or(raw.hidden_size / n_heads);
        if head_dim == 0 || !head_dim.is_multiple_of(2) {
            return Err(Error::InvalidConfig(format!(
                "head_dim {head_dim} must be even and positive"
            )));
        }
        let rope_scaling =
            parse_rope_scaling(raw.rope_scaling.as_ref().or(raw.rope_parameters.as_ref()))?;
        let rope_theta = raw.rope_theta.or_else(|| {
            raw.rope_parameters
                .as_ref()
                .and_then(|p| p.get("rope_theta"))
                .and_then(serde_json::Value::as_f64)
        });
        let mut max_positions = raw.max_position_embeddings.unwrap_or(4096);
        // The engine attends over the whole context; Mistral's sliding window would only
        // differ beyond it, so the context is capped there instead of silently diverging.
        if architecture == Architecture::Mistral
            && let Some(window) = raw.sliding_window
        {
            max_positions = max_positions.min(window);
        }
        Ok(Self {
            architecture,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            n_layers: raw.num_hidden_layers,
            n_heads,
            n_kv_heads,
            head_dim,
            vocab_size: raw.vocab_size,
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(1e-6) as f32,
            rope_theta: rope_theta.unwrap_or(10_000.0),
            rope_scaling,
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            qkv_bias: match architecture {
                Architecture::Qwen2 => true,
                _ => raw.attention_bias.unwrap_or(false),
            },
            max_positions,
            eos_token_ids: raw.eos_token_id.map(TokenIds::into_vec).unwrap_or_default(),
        })
    }

    /// RoPE inverse frequencies, one per pair of dimensions, as Hugging Face computes them.
    pub fn rope_inv_freq(&self) -> Vec<f64> {
        let d = self.head_dim as f64;
        let base: Vec<f64> = (0..self.head_dim / 2)
            .map(|i| 1.0 / self.rope_theta.powf((2 * i) as f64 / d))
            .collect();
        match self.rope_scaling {
            RopeScaling::None => base,
            RopeScaling::Linear { factor } => base.iter().map(|f| f / factor).collect(),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: old_ctx,
            } => {
                let low_wavelen = old_ctx / low_freq_factor;
                let high_wavelen = old_ctx / high_freq_factor;
                base.iter()
                    .map(|&freq| {
                        let wavelen = 2.0 * std::f64::consts::PI / freq;
                        if wavelen < high_wavelen {
                            freq
                        } else if wavelen > low_wavelen {
                            freq / factor
                        } else {
                            let smooth = (old_ctx / wavelen - low_freq_factor)
                                / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * freq / factor + smooth * freq
                        }
                    })
                    .collect()
            }
        }
    }
}

fn parse_rope_scaling(value: Option<&serde_json::Value>) -> Result<RopeScaling> {
    let Some(obj) = value.and_then(|v| v.as_object()) else {
        return Ok(RopeScaling::None);
    };
    let kind = obj
        .get("rope_type")
        .or_else(|| obj.get("type"))
        .and_then(|v| v.as_str())
        .unwrap_or("default");
    let number = |key: &str| {
        obj.get(key).and_then(|v| v.as_f64()).ok_or_else(|| {
            Error::InvalidConfig(format!("rope_scaling.{key} is missing or not a number"))
        })
    };
    match kind {
        "default" => Ok(RopeScaling::None),
        "linear" => Ok(RopeScaling::Linear {
            factor: number("factor")?,
        }),
        "llama3" => Ok(RopeScaling::Llama3 {
            factor: number("factor")?,
            low_freq_factor: number("low_freq_factor")?,
            high_freq_factor: number("high_freq_factor")?,
            original_max_position_embeddings: number("original_max_position_embeddings")?,
        }),
        other => Err(Error::InvalidConfig(format!(
            "rope_scaling type {other:?} is not supported"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMOL: &str = r#"{"architectures": ["LlamaForCausalLM"], "hidden_size": 576,
        "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
        "num_key_value_heads": 3, "vocab_size": 49152, "rms_norm_eps": 1e-05,
        "rope_theta": 100000.0, "tie_word_embeddings": true, "eos_token_id": 2,
        "max_position_embeddings": 8192}"#;

    #[test]
    fn parses_llama_with_defaults() {
        let c = ModelConfig::from_json(SMOL).unwrap();
        assert_eq!(c.architecture, Architecture::Llama);
        assert_eq!(c.head_dim, 64);
        assert_eq!(c.n_kv_heads, 3);
        assert!(c.tie_word_embeddings);
        assert!(!c.qkv_bias);
        assert_eq!(c.eos_token_ids, vec![2]);
        assert_eq!(c.rope_scaling, RopeScaling::None);
    }

    #[test]
    fn qwen2_has_qkv_bias() {
        let text = SMOL.replace("LlamaForCausalLM", "Qwen2ForCausalLM");
        assert!(ModelConfig::from_json(&text).unwrap().qkv_bias);
    }

    #[test]
    fn unknown_architecture_is_refused() {
        let text = SMOL.replace("LlamaForCausalLM", "GPTNeoXForCausalLM");
        let err = ModelConfig::from_json(&text).unwrap_err();
        assert!(matches!(err, Error::UnsupportedArchitecture(ref a) if a == "GPTNeoXForCausalLM"));
        assert!(err.to_string().contains("GPTNeoXForCausalLM"));
    }

    /// Checkpoints saved by transformers 5 keep theta and scaling in `rope_parameters`;
    /// missing them would silently run RoPE at the default theta.
    #[test]
    fn rope_parameters_of_transformers_5_are_read() {
        let text = SMOL.replace(
            "\"rope_theta\": 100000.0",
            "\"rope_parameters\": {\"rope_type\": \"llama3\", \"rope_theta\": 500000.0, \"factor\": 8.0, \
             \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 8192}",
        );
        let c = ModelConfig::from_json(&text).unwrap();
        assert_eq!(c.rope_theta, 500_000.0);
        assert!(matches!(c.rope_scaling, RopeScaling::Llama3 { factor, .. } if factor == 8.0));
    }

    #[test]
    fn unknown_rope_scaling_is_refused() {
        let text = SMOL.replace(
            "\"rope_theta\"",
            "\"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4.0}, \"rope_theta\"",
        );
        assert!(matches!(
            ModelConfig::from_json(&text),
            Err(Error::InvalidConfig(_))
        ));
    }

    #[test]
    fn llama3_scaling_matches_hugging_face_formula() {
        let text = SMOL.replace(
            "\"rope_theta\": 100000.0",
            "\"rope_theta\": 500000.0, \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0, \
             \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, \
             \"original_max_position_embeddings\": 8192}",
        );
        let c = ModelConfig::from_json(&text).unwrap();
        let freqs = c.rope_inv_freq();
        // The highest frequency (short wavelength) is kept, the lowest is divided by 8.
        assert_eq!(freqs[0], 1.0);
        let last_base = 1.0 / 500000f64.powf(62.0 / 64.0);
        assert!((freqs[31] - last_base / 8.0).abs() < 1e-15);
    }

    #[test]
    fn mistral_context_is_capped_at_its_window() {
        let text = SMOL
            .replace("LlamaForCausalLM", "MistralForCausalLM")
            .replace(
                "\"max_position_embeddings\": 8192",
                "\"max_position_embeddings\": 8192, \"sliding_window\": 4096",
            );
        assert_eq!(ModelConfig::from_json(&text).unwrap().max_positions, 4096);
    }
}
