//! The Llama-family forward pass (Llama, Qwen2, Mistral), written once over [`Backend`].

use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};

use crate::backend::cpu::CpuBackend;
use crate::backend::cuda::CudaBackend;
use crate::backend::{Backend, KvLayout, ModelDims, StepBatch, StepMode};
use crate::checkpoint::{ModelConfig, WeightFiles};
use crate::sampling::RowSampling;
use crate::{Error, Result};

/// Runs one batched forward step; what the engine's worker needs from a loaded model.
pub trait ForwardStep: Send {
    /// Writes the step's keys and values into the KV pool and returns the logits of the
    /// last query token of every sequence that wants them, in batch order.
    fn forward(&mut self, batch: &StepBatch) -> Result<Vec<Vec<f32>>>;

    /// As `forward`, but returns the greedy token of each of those sequences instead of
    /// its logits (on a GPU only the ids leave the device).
    fn forward_greedy(&mut self, batch: &StepBatch) -> Result<Vec<u32>>;

    /// As `forward`, but samples each of those sequences' next token under `rows` (one
    /// entry per logits row; on a GPU the sampling runs there and only ids come back).
    fn forward_sample(&mut self, batch: &StepBatch, rows: &[RowSampling]) -> Result<Vec<u32>>;
}

/// Where the model runs, as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Device {
    Cpu,
    /// A CUDA GPU by ordinal (`cuda:0`); `graphs` replays decode steps from CUDA graphs
    /// (on unless turned off, for comparisons).
    Cuda {
        ordinal: usize,
        graphs: bool,
    },
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda { ordinal, .. } => write!(f, "cuda:{ordinal}"),
        }
    }
}

impl std::str::FromStr for Device {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let unknown = || Error::UnsupportedDevice(s.to_owned());
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda {
                ordinal: 0,
                graphs: true,
            }),
            _ => {
                let ordinal = s.strip_prefix("cuda:").ok_or_else(unknown)?;
                if ordinal.is_empty() || !ordinal.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(unknown());
                }
                let ordinal = ordinal.parse().map_err(|_| unknown())?;
                Ok(Device::Cuda {
                    ordinal,
                    graphs: true,
                })
            }
        }
    }
}

struct LayerWeights<W> {
    input_norm: W,
    q: W,
    k: W,
    v: W,
    qkv_bias: Option<[W; 3]>,
    o: W,
    post_norm: W,
    gate: W,
    up: W,
    down: W,
}

/// A Llama-family model whose weights live on backend `B`.
pub struct LlamaModel<B: Backend> {
    backend: B,
    embed: B::Weight,
    layers: Vec<LayerWeights<B::Weight>>,
    final_norm: B::Weight,
    /// `None` when the output projection is tied to the embedding table.
    lm_head: Option<B::Weight>,
}

impl Device {
    /// The same device with CUDA graphs off (no effect on the CPU).
    pub fn without_graphs(self) -> Self {
        match self {
            Device::Cuda { ordinal, .. } => Device::Cuda {
                ordinal,
                graphs: false,
            },
            other => other,
        }
    }
}

impl<B: Backend> std::fmt::Debug for LlamaModel<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlamaModel")
            .field("backend", &self.backend.name())
            .field("n_layers", &self.layers.len())
            .finish()
    }
}

/// The dimensions a backend needs, from a checked config.
pub fn model_dims(config: &ModelConfig) -> ModelDims {
    ModelDims {
        n_layers: config.n_layers,
        hidden_size: config.hidden_size,
        intermediate_size: config.intermediate_size,
        n_heads: config.n_heads,
        n_kv_heads: config.n_kv_heads,
        head_dim: config.head_dim,
        vocab_size: config.vocab_size,
        rms_norm_eps: config.rms_norm_eps,
        rope_inv_freq: config.rope_inv_freq(),
    }
}

/// Loads the checkpoint in `dir` onto `device` with a KV pool of `kv`.
pub fn load(
    dir: &Path,
    config: &ModelConfig,
    device: &Device,
    kv: KvLayout,
    show_progress: bool,
) -> Result<Box<dyn ForwardStep>> {
    let files = WeightFiles::open(dir)?;
    match device {
        Device::Cpu => {
            let backend = CpuBackend::new(model_dims(config), kv)?;
            Ok(Box::new(LlamaModel::load(
                backend,
                &files,
                config,
                show_progress,
            )?))
        }
        Device::Cuda { ordinal, graphs } => {
            let backend = CudaBackend::new(*ordinal, model_dims(config), kv, *graphs)?;
            Ok(Box::new(LlamaModel::load(
                backend,
                &files,
                config,
                show_progress,
            )?))
        }
    }
}

impl<B: Backend> LlamaModel<B> {
    /// Uploads every weight of the checkpoint to `backend`.
    pub fn load(
        mut backend: B,
        files: &WeightFiles,
        config: &ModelConfig,
        show_progress: bool,
    ) -> Result<Self> {
        let (h, i, v) = (
            config.hidden_size,
            config.intermediate_size,
            config.vocab_size,
        );
        let q_out = config.n_heads * config.head_dim;
        let kv_out = config.n_kv_heads * config.head_dim;
        let tied = config.tie_word_embeddings || !files.contains("lm_head.weight");
        let n_tensors = 2 + config.n_layers * 9 + usize::from(!tied);
        let progress = if show_progress {
            let bar = ProgressBar::new(n_tensors as u64);
            if let Ok(style) =
                ProgressStyle::with_template("loading weights {bar:40} {pos}/{len} {msg}")
            {
                bar.set_style(style);
            }
            bar
        } else {
            ProgressBar::hidden()
        };
        let mut get = |name: &str, shape: &[usize]| -> Result<B::Weight> {
            progress.set_message(name.to_owned());
            let tensor = files.get(name, shape)?;
            progress.inc(1);
            backend.upload(tensor)
        };
        let embed = get("model.embed_tokens.weight", &[v, h])?;
        let mut layers = Vec::with_capacity(config.n_layers);
        for l in 0..config.n_layers {
            let p = format!("model.layers.{l}");
            let qkv_bias = if config.qkv_bias {
                Some([
                    get(&format!("{p}.self_attn.q_proj.bias"), &[q_out])?,
                    get(&format!("{p}.self_attn.k_proj.bias"), &[kv_out])?,
                    get(&format!("{p}.self_attn.v_proj.bias"), &[kv_out])?,
                ])
            } else {
                None
            };
            layers.push(LayerWeights {
                input_norm: get(&format!("{p}.input_layernorm.weight"), &[h])?,
                q: get(&format!("{p}.self_attn.q_proj.weight"), &[q_out, h])?,
                k: get(&format!("{p}.self_attn.k_proj.weight"), &[kv_out, h])?,
                v: get(&format!("{p}.self_attn.v_proj.weight"), &[kv_out, h])?,
                qkv_bias,
                o: get(&format!("{p}.self_attn.o_proj.weight"), &[h, q_out])?,
                post_norm: get(&format!("{p}.post_attention_layernorm.weight"), &[h])?,
                gate: get(&format!("{p}.mlp.gate_proj.weight"), &[i, h])?,
                up: get(&format!("{p}.mlp.up_proj.weight"), &[i, h])?,
                down: get(&format!("{p}.mlp.down_proj.weight"), &[h, i])?,
            });
        }
        let final_norm = get("model.norm.weight", &[h])?;
        let lm_head = if tied {
            None
        } else {
            Some(get("lm_head.weight", &[v, h])?)
        };
        progress.finish_and_clear();
        Ok(Self {
            backend,
            embed,
            layers,
            final_norm,
            lm_head,
        })
    }
}

impl<B: Backend> LlamaModel<B> {
    /// The forward pass from the step's tokens to the logits of the rows that want them.
    fn compute(&mut self) -> Result<B::Tensor> {
        let b = &mut self.backend;
        let mut residual = b.embed(&self.embed)?;
        if self.layers.is_empty() {
            return Err(Error::InvalidConfig("the model has no layers".into()));
        }
        // Each sub-block's output is added into the residual stream by the norm that
        // starts the next one (fused with its products where the backend can).
        let mut delta: Option<B::Tensor> = None;
        for (index, layer) in self.layers.iter().enumerate() {
            let bias = layer.qkv_bias.as_ref();
            let projections = [
                (&layer.q, bias.map(|[q, _, _]| q)),
                (&layer.k, bias.map(|[_, k, _]| k)),
                (&layer.v, bias.map(|[_, _, v]| v)),
            ];
            let [mut q, mut k, v]: [B::Tensor; 3] = b
                .norm_linear_many(
                    &mut residual,
                    delta.as_ref(),
                    &layer.input_norm,
                    &projections,
                )?
                .try_into()
                .map_err(|_| Error::InvalidSettings("linear_many returned a wrong count".into()))?;
            b.rope_store_kv(index, &mut q, &mut k, &v)?;
            let attention = b.paged_attention(index, &q)?;
            let attention_out = b.linear(&attention, &layer.o, None)?;
            let activated = b.norm_gated_up(
                &mut residual,
                Some(&attention_out),
                &layer.post_norm,
                &layer.gate,
                &layer.up,
            )?;
            delta = Some(b.linear(&activated, &layer.down, None)?);
        }
        let h = b.residual_norm(&mut residual, delta.as_ref(), &self.final_norm)?;
        let rows = b.logit_rows(&h)?;
        b.linear(&rows, self.lm_head.as_ref().unwrap_or(&self.embed), None)
    }
}

impl<B: Backend> LlamaModel<B> {
    /// Runs one step in the mode the backend chose for it: eagerly, `read` takes the logits
    /// computed now; when the step is captured into a graph or replayed from one, `replay`
    /// reads the graph's output.
    fn step<T>(
        &mut self,
        batch: &StepBatch,
        read: impl FnOnce(&mut B, &B::Tensor) -> Result<T>,
        replay: impl FnOnce(&mut B) -> Result<T>,
    ) -> Result<T> {
        match self.backend.begin_step(batch)? {
            StepMode::Eager => {
                let logits = self.compute()?;
                read(&mut self.backend, &logits)
            }
            StepMode::Capture => {
                let logits = self.compute()?;
                self.backend.end_capture(logits)?;
                replay(&mut self.backend)
            }
            StepMode::Replay => replay(&mut self.backend),
        }
    }
}

impl<B: Backend> ForwardStep for LlamaModel<B> {
    fn forward(&mut self, batch: &StepBatch) -> Result<Vec<Vec<f32>>> {
        self.step(batch, |b, logits| b.to_host(logits), B::replay)
    }

    fn forward_greedy(&mut self, batch: &StepBatch) -> Result<Vec<u32>> {
        self.step(batch, |b, logits| b.argmax_rows(logits), B::replay_argmax)
    }

    fn forward_sample(&mut self, batch: &StepBatch, rows: &[RowSampling]) -> Result<Vec<u32>> {
        self.step(
            batch,
            |b, logits| b.sample_rows(logits, rows),
            |b| b.replay_sample(rows),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_from_their_names() {
        let cuda = |ordinal| Device::Cuda {
            ordinal,
            graphs: true,
        };
        assert_eq!("cpu".parse::<Device>().unwrap(), Device::Cpu);
        assert_eq!("cuda".parse::<Device>().unwrap(), cuda(0));
        assert_eq!("cuda:3".parse::<Device>().unwrap(), cuda(3));
        assert_eq!(cuda(3).to_string(), "cuda:3");
        for bad in ["gpu", "cuda:", "cuda:x", "cuda:-1", "cuda:+1", "CPU"] {
            assert!(
                matches!(bad.parse::<Device>(), Err(Error::UnsupportedDevice(_))),
                "{bad}"
            );
        }
    }
}
