//! The ONNX Runtime backend: tokenizer, session on CPU or CUDA, mean pooling.

use std::borrow::Cow;
use std::path::PathBuf;

use ort::session::{Session, SessionInputValue};
use ort::value::TensorRef;

use crate::backend::EmbedBackend;
use crate::config::{Device, EmbedderConfig};
use crate::error::{Error, Result};
use crate::pooling::mean_pool_normalized;
use crate::runtime;
use crate::tokenize::{BatchTokenizer, TokenBatch};

const CPU_PROVIDER: &str = "CPUExecutionProvider";
const CUDA_PROVIDER: &str = "CUDAExecutionProvider";
/// Graph fusions that make the CPU provider slower (see `OrtBackend::new`).
const CPU_DISABLED_OPTIMIZERS: &str = "SkipLayerNormFusion";

/// Runs a BERT-style ONNX encoder (all-MiniLM-L6-v2) and pools its token vectors into unit vectors.
#[derive(Debug)]
pub struct OrtBackend {
    session: Session,
    tokenizer: BatchTokenizer,
    model_path: PathBuf,
    output_name: String,
    takes_token_type_ids: bool,
    dim: usize,
    provider: &'static str,
    length_buckets: bool,
    max_padded_tokens_per_run: usize,
    rows_per_run: usize,
}

/// Default cap on `rows × padded length` of one model run.
///
/// Activation memory grows with it (attention alone is `rows × 12 heads × seq²` floats). In
/// embed_bench, 64 mixed texts of up to 256 tokens peaked at 3.1 GiB RSS as one run, 1.1 GiB
/// with a 4096-token cap, 0.74 GiB with 2048 and 0.51 GiB with 1024 (two sessions loaded). A
/// 2048-token run still keeps a CPU busy long enough that splitting costs little; on a GPU a
/// larger cap may pay off (`set_max_padded_tokens_per_run`).
pub const DEFAULT_MAX_PADDED_TOKENS_PER_RUN: usize = 2048;

impl OrtBackend {
    /// Loads ONNX Runtime (once per process), the tokenizer and the model, and runs one warm-up
    /// input of `max_tokens` tokens so that a too-large limit fails here rather than on a request.
    pub fn new(config: &EmbedderConfig) -> Result<Self> {
        if !config.model.is_file() {
            return Err(Error::MissingAsset {
                what: "onnx model",
                path: config.model.clone(),
            });
        }
        let tokenizer = BatchTokenizer::load(&config.tokenizer, config.max_tokens)?;
        let environment = runtime::environment(&config.onnxruntime)?;
        let ort_error = |context| {
            move |source: ort::Error<_>| Error::Ort {
                context,
                source: source.into(),
            }
        };
        let mut builder = Session::builder(&environment).map_err(|source| Error::Ort {
            context: "creating session options",
            source,
        })?;
        if let Some(threads) = config.threads() {
            builder = builder
                .with_intra_threads(threads)
                .map_err(ort_error("setting intra-op threads"))?;
        }
        let provider = match config.device {
            Device::Cpu => {
                // ONNX Runtime 1.32 fuses bias + residual adds and LayerNorm into
                // SkipLayerNormalization, whose CPU kernel took 53 µs a call on a 25-token
                // question against ~14 µs for LayerNormalization: leaving them unfused made an
                // int8 MiniLM run 26% faster on one thread and 12% on two (build machine).
                builder = builder
                    .with_disabled_optimizers(CPU_DISABLED_OPTIMIZERS)
                    .map_err(ort_error("disabling graph fusions"))?;
                CPU_PROVIDER
            }
            Device::Cuda(device_id) => {
                // Without `error_on_failure` ONNX Runtime would log the failure and run on the CPU,
                // which the design forbids: a GPU deployment must not silently become a CPU one.
                let cuda = ort::ep::CUDA::default()
                    .with_device_id(i32::try_from(device_id).unwrap_or(i32::MAX))
                    .build()
                    .error_on_failure();
                builder = builder.with_execution_providers([cuda]).map_err(|source| {
                    Error::CudaUnavailable {
                        device_id,
                        source: source.into(),
                    }
                })?;
                CUDA_PROVIDER
            }
        };
        let session =
            builder
                .commit_from_file(&config.model)
                .map_err(|source| Error::LoadModel {
                    path: config.model.clone(),
                    source,
                })?;
        let (output_name, dim, takes_token_type_ids) = inspect_model(&session, &config.model)?;
        let mut backend = Self {
            session,
            tokenizer,
            model_path: config.model.clone(),
            output_name,
            takes_token_type_ids,
            dim,
            provider,
            length_buckets: true,
            max_padded_tokens_per_run: DEFAULT_MAX_PADDED_TOKENS_PER_RUN,
            rows_per_run: config.rows_per_run(),
        };
        backend.warm_up()?;
        Ok(backend)
    }

    /// Whether a batch is split into runs of similar token length (on by default).
    ///
    /// Exposed so the benchmark can measure what the split saves.
    pub fn set_length_buckets(&mut self, enabled: bool) {
        self.length_buckets = enabled;
    }

    fn warm_up(&mut self) -> Result<()> {
        let max_tokens = self.tokenizer.max_tokens();
        let longest = "a ".repeat(max_tokens);
        self.embed_batch(&[longest.as_str()])
            .map(drop)
            .map_err(|source| Error::WarmUp {
                max_tokens,
                source: Box::new(source),
            })
    }

    /// Caps the texts of one model run (see [`EmbedderConfig::rows_per_run`]). Exposed so that
    /// tests and the benchmark can compare batched and single runs.
    pub fn set_rows_per_run(&mut self, rows: usize) {
        self.rows_per_run = rows.max(1);
    }

    /// Caps `rows × padded length` per model run, bounding activation memory (a single row
    /// may exceed it). Exposed so the benchmark can try larger runs on a GPU.
    pub fn set_max_padded_tokens_per_run(&mut self, max_tokens: usize) {
        self.max_padded_tokens_per_run = max_tokens.max(1);
    }

    /// Runs the model on one padded batch and pools its output.
    fn run(&mut self, inputs: &TokenBatch) -> Result<Vec<Vec<f32>>> {
        let shape = [inputs.batch, inputs.seq];
        let tensor = |data| input_tensor(shape, data);
        let mut values: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = vec![
            ("input_ids".into(), tensor(&inputs.input_ids)?.into()),
            (
                "attention_mask".into(),
                tensor(&inputs.attention_mask)?.into(),
            ),
        ];
        if self.takes_token_type_ids {
            values.push((
                "token_type_ids".into(),
                tensor(&inputs.token_type_ids)?.into(),
            ));
        }
        let outputs = self.session.run(values).map_err(|source| Error::Ort {
            context: "running the model",
            source,
        })?;
        let (out_shape, hidden) = outputs[self.output_name.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(|source| Error::Ort {
                context: "reading the model output",
                source,
            })?;
        let expected = [inputs.batch as i64, inputs.seq as i64, self.dim as i64];
        if **out_shape != expected {
            return Err(Error::UnsupportedModel {
                path: self.model_path.clone(),
                reason: format!("output has shape {out_shape}, expected {expected:?}"),
            });
        }
        Ok(mean_pool_normalized(
            hidden,
            &inputs.attention_mask,
            inputs.batch,
            inputs.seq,
            self.dim,
        ))
    }
}

impl EmbedBackend for OrtBackend {
    fn embed_batch(&mut self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let encodings = self.tokenizer.encode(texts)?;
        let lengths: Vec<usize> = encodings.iter().map(|encoding| encoding.len()).collect();
        let groups = if self.length_buckets {
            length_groups(&lengths)
        } else {
            vec![(0..texts.len()).collect()]
        };
        let groups = split_runs(
            groups,
            &lengths,
            self.max_padded_tokens_per_run,
            self.rows_per_run,
        );
        let mut vectors = vec![Vec::new(); texts.len()];
        for group in groups {
            let members: Vec<_> = group.iter().map(|&index| &encodings[index]).collect();
            let packed = self.tokenizer.pack(&members);
            for (index, vector) in group.into_iter().zip(self.run(&packed)?) {
                vectors[index] = vector;
            }
        }
        Ok(vectors)
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn provider(&self) -> &str {
        self.provider
    }
}

/// Wraps a `[batch, seq]` slice as a model input without copying it.
fn input_tensor(shape: [usize; 2], data: &[i64]) -> Result<TensorRef<'_, i64>> {
    TensorRef::from_array_view((shape, data)).map_err(|source| Error::Ort {
        context: "creating input tensors",
        source,
    })
}

/// Splits a batch into runs whose token lengths fall in the same power-of-two bucket.
///
/// Every row of a run is padded to the run's longest, so one 200-token text in a batch of short
/// questions would make them all cost 200 tokens. Bucketing by powers of two bounds the padding at
/// under half of each run while keeping the number of runs small (at most `log2(max_tokens)`).
fn length_groups(lengths: &[usize]) -> Vec<Vec<usize>> {
    // Lengths up to 16 share one bucket: below that, an extra run costs more than the padding.
    let bucket = |length: usize| length.max(16).next_power_of_two();
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&index| lengths[index]);
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for index in order {
        match groups.last_mut() {
            Some(group) if bucket(lengths[group[0]]) == bucket(lengths[index]) => group.push(index),
            _ => groups.push(vec![index]),
        }
    }
    groups
}

/// Splits groups into model runs of at most `max_rows` texts that pad no more than `budget`
/// tokens in all (at least one row each).
fn split_runs(
    groups: Vec<Vec<usize>>,
    lengths: &[usize],
    budget: usize,
    max_rows: usize,
) -> Vec<Vec<usize>> {
    let mut runs = Vec::with_capacity(groups.len());
    for group in groups {
        let mut run: Vec<usize> = Vec::new();
        let mut longest = 0;
        for index in group {
            let candidate_longest = longest.max(lengths[index]);
            let full = run.len() >= max_rows || (run.len() + 1) * candidate_longest > budget;
            if !run.is_empty() && full {
                runs.push(std::mem::take(&mut run));
                longest = 0;
            }
            longest = longest.max(lengths[index]);
            run.push(index);
        }
        if !run.is_empty() {
            runs.push(run);
        }
    }
    runs
}

/// Finds the hidden-state output and its width, and whether the model takes `token_type_ids`.
fn inspect_model(session: &Session, path: &std::path::Path) -> Result<(String, usize, bool)> {
    let unsupported = |reason: String| Error::UnsupportedModel {
        path: path.to_path_buf(),
        reason,
    };
    let input_names: Vec<&str> = session.inputs().iter().map(|input| input.name()).collect();
    for required in ["input_ids", "attention_mask"] {
        if !input_names.contains(&required) {
            return Err(unsupported(format!(
                "it has no {required} input (inputs: {input_names:?})"
            )));
        }
    }
    let output = session
        .outputs()
        .iter()
        .find(|output| output.name() == "last_hidden_state")
        .or_else(|| session.outputs().first())
        .ok_or_else(|| unsupported("it has no outputs".to_owned()))?;
    let dim = output
        .dtype()
        .tensor_shape()
        .filter(|shape| shape.len() == 3)
        .and_then(|shape| usize::try_from(shape[2]).ok())
        .ok_or_else(|| {
            unsupported(format!(
                "output {} is not a [batch, seq, dim] tensor with a fixed dim",
                output.name()
            ))
        })?;
    Ok((
        output.name().to_owned(),
        dim,
        input_names.contains(&"token_type_ids"),
    ))
}

#[cfg(test)]
mod tests {
    use super::{length_groups, split_runs};

    fn check(lengths: &[usize], expected: &[&[usize]]) {
        let groups = length_groups(lengths);
        let expected: Vec<Vec<usize>> = expected.iter().map(|group| group.to_vec()).collect();
        assert_eq!(groups, expected, "lengths {lengths:?}");
    }

    #[test]
    fn groups_by_power_of_two_length() {
        check(&[], &[]);
        check(&[12], &[&[0]]);
        check(&[12, 14, 9], &[&[2, 0, 1]]);
        check(&[12, 200, 15, 31, 256], &[&[0, 2], &[3], &[1, 4]]);
        check(&[3, 2, 256, 5, 17], &[&[1, 0, 3], &[4], &[2]]);
    }

    #[test]
    fn runs_stay_within_the_token_budget() {
        let lengths = [10, 10, 10, 10, 10, 300];
        let groups = vec![vec![0, 1, 2, 3, 4], vec![5]];
        let runs = split_runs(groups, &lengths, 30, usize::MAX);
        // Three rows of 10 fill the budget; a 300-token text alone exceeds it but still runs.
        assert_eq!(runs, vec![vec![0, 1, 2], vec![3, 4], vec![5]]);
        // The longest row sets the padded width of a whole run.
        let runs = split_runs(vec![vec![0, 5, 1]], &lengths, 400, usize::MAX);
        assert_eq!(runs, vec![vec![0], vec![5], vec![1]]);
        let runs = split_runs(vec![vec![0, 1, 5]], &lengths, 1000, usize::MAX);
        assert_eq!(runs, vec![vec![0, 1, 5]]);
    }

    #[test]
    fn runs_hold_at_most_rows_per_run_texts() {
        let groups = vec![vec![4, 2, 0], vec![1], vec![3, 5]];
        let lengths = [10; 6];
        let split = |rows| split_runs(groups.clone(), &lengths, usize::MAX, rows);
        assert_eq!(
            split(1),
            vec![vec![4], vec![2], vec![0], vec![1], vec![3], vec![5]]
        );
        assert_eq!(split(2), vec![vec![4, 2], vec![0], vec![1], vec![3, 5]]);
        assert_eq!(split(usize::MAX), groups);
        assert_eq!(split(0), split(1));
    }

    #[test]
    fn every_index_appears_once() {
        let lengths: Vec<usize> = (0..100).map(|i| (i * 37) % 256 + 2).collect();
        let mut seen: Vec<usize> = length_groups(&lengths).into_iter().flatten().collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..100).collect::<Vec<_>>());
    }
}
