//! The CUDA backend: bf16 weights and activations on one GPU, cuBLAS for matrix
//! products, NVRTC-compiled kernels for the rest, and the paged KV pool in device memory.
//!
//! CUDA's libraries are loaded at run time (cudarc's dynamic loading), so the engine
//! builds and runs without them; asking for `cuda:N` where they or the GPU are missing
//! is a start-up error that says what is missing, never a fall-back to the CPU.

pub mod compile;
mod gemm;
pub mod graph;
pub mod memory;
mod open;
mod readback;
pub mod step;

use std::sync::Arc;

use cudarc::driver::sys;

use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, LaunchConfig, PinnedHostSlice,
};

use self::gemm::Gemm;
use self::graph::Graphs;
use self::memory::{BufferPool, CudaTensor, Dtype};
use self::step::StepOffsets;
use super::{KvLayout, ModelDims, StepBatch, StepMode};
use crate::{Error, Result};

pub use self::open::check_available;

/// See `CudaBackend::gqa_min_blocks`: the grouped kernel by default, wherever it applies.
const GQA_MIN_BLOCKS: usize = 0;

/// Most runs the grouped attention kernel splits a token's keys into.
const MAX_ATTENTION_SPLITS: usize = 16;

/// How many runs the grouped attention kernel splits each token's keys into, for
/// `pairs` (token, kv head) pairs: enough blocks for `target` (two per multiprocessor),
/// at most [`MAX_ATTENTION_SPLITS`], and none while the pairs alone fill the GPU. The
/// split blocks of a step never exceed `2 * target` (pairs < target, splits ≤
/// ceil(target / pairs)), which sizes [`SplitScratch`].
fn attention_splits(pairs: usize, target: usize) -> usize {
    if pairs == 0 || pairs >= target {
        1
    } else {
        target.div_ceil(pairs).min(MAX_ATTENTION_SPLITS)
    }
}

/// Where the blocks of a split attention launch leave their parts for the last one to
/// merge (see `attention_gqa` in kernels.cu).
struct SplitScratch {
    /// Blocks the kernel should have at least: two per multiprocessor.
    target: usize,
    /// Unnormalised outputs, [split block][GQA_MAX_GROUP][MAX_SPLIT_HEAD_DIM] f32.
    acc: CudaSlice<f32>,
    /// Softmax max and sum of each part.
    ml: CudaSlice<f32>,
    /// Finished blocks per (token, kv head); the last block resets its count to 0.
    done: CudaSlice<u32>,
}

/// Largest group of query heads per kv head the grouped kernel takes (its GMAX).
const GQA_MAX_GROUP: usize = 8;
/// Largest head size the grouped kernel takes.
const MAX_SPLIT_HEAD_DIM: usize = 128;

/// Whether the grouped attention kernel (and with it the cascade) takes the model's
/// heads: head sizes 64 and 128, groups of up to [`GQA_MAX_GROUP`] query heads.
fn grouped_kernel_fits(dims: &ModelDims) -> bool {
    matches!(dims.head_dim, 64 | 128) && dims.n_heads / dims.n_kv_heads <= GQA_MAX_GROUP
}

impl SplitScratch {
    fn new(stream: &Arc<CudaStream>, multiprocessors: usize) -> Result<Self> {
        let target = 2 * multiprocessors.max(1);
        let slots = 2 * target * GQA_MAX_GROUP;
        let alloc = |n: usize| {
            stream
                .alloc_zeros::<f32>(n)
                .map_err(cuda_err("allocating the split attention scratch"))
        };
        Ok(Self {
            target,
            acc: alloc(slots * MAX_SPLIT_HEAD_DIM)?,
            ml: alloc(slots * 2)?,
            done: stream
                .alloc_zeros::<u32>(target)
                .map_err(cuda_err("allocating the split attention counters"))?,
        })
    }
}

/// Most decode tokens a step cascades (see [`step::CascadePlan`]): the largest graph
/// bucket twice over. The scratch holds one output row per (token, query head).
const CASCADE_MAX_DECODES: usize = 512;

/// Where `cascade_attention` leaves its part of each decode token's attention for the
/// per-token kernel to merge.
struct CascadeScratch {
    plan: step::CascadePlan,
    /// Unnormalised outputs, [place in the token order][query head][head_dim] f32.
    acc: CudaSlice<f32>,
    /// Softmax max and sum of each.
    ml: CudaSlice<f32>,
}

impl CascadeScratch {
    /// The plan for `dims`: tiles as large as the tiled kernel's rows allow, for decode
    /// batches whose grouped launch is not split (at least `fewest_pairs` (token, kv
    /// head) pairs). `enabled` false (or a model the grouped kernel does not take)
    /// plans no cascade and allocates nothing.
    fn new(
        stream: &Arc<CudaStream>,
        dims: &ModelDims,
        fewest_pairs: usize,
        enabled: bool,
    ) -> Result<Self> {
        let plan = step::CascadePlan {
            tokens_per_tile: if enabled && grouped_kernel_fits(dims) {
                step::TILE_ROWS / (dims.n_heads / dims.n_kv_heads)
            } else {
                0
            },
            min_decodes: fewest_pairs.div_ceil(dims.n_kv_heads).max(2),
            max_decodes: CASCADE_MAX_DECODES,
        };
        let rows = if plan.is_on() {
            CASCADE_MAX_DECODES * dims.n_heads
        } else {
            1
        };
        let alloc = |n: usize| {
            stream
                .alloc_zeros::<f32>(n)
                .map_err(cuda_err("allocating the cascade attention scratch"))
        };
        Ok(Self {
            plan,
            acc: alloc(rows * dims.head_dim)?,
            ml: alloc(rows * 2)?,
        })
    }
}

/// Widest row the norm kernel holds in registers (NORM_THREADS × NORM_PER_THREAD).
const MAX_NORM_COLS: usize = 12 * 1024;

struct Kernels {
    embed_rows: CudaFunction,
    gather_rows: CudaFunction,
    add_rms_norm: CudaFunction,
    add_bias: CudaFunction,
    silu_mul: CudaFunction,
    rope_store_kv: CudaFunction,
    /// Attention for head sizes up to 64, 128 and 256.
    paged_attention: [CudaFunction; 3],
    /// Per-token attention with a block per kv head (all its query heads at once), for
    /// head sizes up to 64 and 128 and groups of up to 4 and 8 query heads.
    gqa_attention: [[CudaFunction; 2]; 2],
    /// The same, held to two blocks per multiprocessor: for launches that are not split.
    gqa_attention_x2: [[CudaFunction; 2]; 2],
    /// Tiled attention of steps with prefill chunks, for head sizes 64 and 128.
    prefill_attention: [CudaFunction; 2],
    /// The shared-prefix part of decode attention, for head sizes 64 and 128.
    cascade_attention: [CudaFunction; 2],
    gemv_small_m: CudaFunction,
    gemv_multi: CudaFunction,
    gemv_gate_up_silu: CudaFunction,
    argmax_parts: CudaFunction,
    argmax_finish: CudaFunction,
    sample_rows: CudaFunction,
}

/// The step's packed layout, staged in pinned memory and mirrored on the device.
struct StepBuffers {
    host: PinnedHostSlice<u32>,
    // Owns the memory that kernels reach through `device_ptr`.
    _device: CudaSlice<u32>,
    device_ptr: u64,
    offsets: StepOffsets,
}

/// The CUDA implementation of [`Backend`] on one GPU.
pub struct CudaBackend {
    ordinal: usize,
    dims: ModelDims,
    kv: KvLayout,
    stream: Arc<CudaStream>,
    kernels: Kernels,
    gemm: Gemm,
    pool: BufferPool,
    /// Rows every activation buffer holds; grows with the largest step seen.
    capacity_rows: usize,
    k_cache: Vec<CudaSlice<u16>>,
    v_cache: Vec<CudaSlice<u16>>,
    inv_freq: CudaSlice<f32>,
    step: StepBuffers,
    /// The packed layout of the current step, on the host.
    packed: Vec<u32>,
    logits_host: PinnedHostSlice<f32>,
    /// Greedy token ids on their way to the host.
    ids_host: PinnedHostSlice<u32>,
    /// The sampling parameters of a step's rows (`RowSampling::pack`), staged and on the device.
    sampling: SamplingBuffers,
    /// Replay decode steps from CUDA graphs.
    use_graphs: bool,
    /// Fewest blocks (tokens × kv heads) for which attention runs one block per kv
    /// head rather than per query head ($CACHET_ENGINE_GQA_MIN_BLOCKS, default
    /// [`GQA_MIN_BLOCKS`]: always, since the grouped kernel splits the keys of a small
    /// batch over more blocks; the parity checks set it high to test the per-head kernel).
    gqa_min_blocks: usize,
    split: SplitScratch,
    cascade: CascadeScratch,
    graphs: Graphs,
    /// The bucket being captured, between begin_step and end_capture.
    capturing: Option<usize>,
    /// The graph bucket of the current step, if it is padded to one.
    bucket: Option<usize>,
    /// Logits rows of the current step that belong to real sequences (not padding).
    n_real_rows: usize,
    /// Whether work was queued since the stream was last synchronised (the pinned
    /// staging buffer must not be rewritten while a copy from it may be pending).
    in_flight: bool,
    // Declared last so it is dropped after every buffer above.
    _ctx: Arc<CudaContext>,
}

impl std::fmt::Debug for CudaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaBackend")
            .field("device", &self.ordinal)
            .field("kv", &self.kv)
            .field("capacity_rows", &self.capacity_rows)
            .finish_non_exhaustive()
    }
}

fn cuda_err(what: impl Into<String>) -> impl FnOnce(cudarc::driver::DriverError) -> Error {
    let what = what.into();
    move |source| Error::Cuda { what, source }
}

fn grid(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (n.div_ceil(256).clamp(1, 65_535) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn per_row(rows: usize, threads: u32, shared_mem_bytes: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows as u32, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes,
    }
}

impl CudaBackend {
    /// Opens GPU `ordinal`, compiles (or loads from the cache) the kernels and allocates
    /// the KV pool.
    pub fn new(ordinal: usize, dims: ModelDims, kv: KvLayout, use_graphs: bool) -> Result<Self> {
        if kv.n_blocks == 0 || kv.block_size == 0 {
            return Err(Error::InvalidSettings(
                "the kv pool needs at least one block of at least one token".into(),
            ));
        }
        check_dims(&dims)?;
        let ctx = open::open_device(ordinal)?;
        // One stream, used by one thread: cudarc's per-buffer event tracking would only
        // add work to every launch (and events inside graph capture).
        // SAFETY: every buffer of this backend is used on `stream` alone.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(cuda_err("creating a stream"))?;
        let (major, minor) = ctx
            .compute_capability()
            .map_err(cuda_err("reading the compute capability"))?;
        let arch = compile::arch_for(major, minor);
        let cubin = compile::cubin(
            compile::KERNELS_SOURCE,
            &arch,
            &compile::default_cache_dir(),
        )?;
        let module = ctx
            .load_module(cudarc::nvrtc::Ptx::from_binary(cubin))
            .map_err(cuda_err(format!("loading the kernels compiled for {arch}")))?;
        let load = |name: &str| {
            module
                .load_function(name)
                .map_err(cuda_err(format!("loading kernel {name}")))
        };
        let kernels = Kernels {
            embed_rows: load("embed_rows")?,
            gather_rows: load("gather_rows")?,
            add_rms_norm: load("add_rms_norm")?,
            add_bias: load("add_bias")?,
            silu_mul: load("silu_mul")?,
            rope_store_kv: load("rope_store_kv")?,
            paged_attention: [
                load("paged_attention_64")?,
                load("paged_attention_128")?,
                load("paged_attention_256")?,
            ],
            gqa_attention: [
                [load("gqa_attention_64_4")?, load("gqa_attention_64_8")?],
                [load("gqa_attention_128_4")?, load("gqa_attention_128_8")?],
            ],
            gqa_attention_x2: [
                [
                    load("gqa_attention_64_4_x2")?,
                    load("gqa_attention_64_8_x2")?,
                ],
                [
                    load("gqa_attention_128_4_x2")?,
                    load("gqa_attention_128_8_x2")?,
                ],
            ],
            prefill_attention: [
                load("prefill_attention_64")?,
                load("prefill_attention_128")?,
            ],
            cascade_attention: [
                load("cascade_attention_64")?,
                load("cascade_attention_128")?,
            ],
            gemv_small_m: load("gemv_small_m")?,
            gemv_multi: load("gemv_multi")?,
            gemv_gate_up_silu: load("gemv_gate_up_silu")?,
            argmax_parts: load("argmax_parts")?,
            argmax_finish: load("argmax_finish")?,
            sample_rows: load("sample_rows")?,
        };
        let gemm = Gemm::new(&stream)?;
        let multiprocessors = ctx
            .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(cuda_err("reading the multiprocessor count"))?;
        let split = SplitScratch::new(&stream, multiprocessors as usize)?;
        let gqa_min_blocks = std::env::var("CACHET_ENGINE_GQA_MIN_BLOCKS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(GQA_MIN_BLOCKS);
        // $CACHET_ENGINE_CASCADE=0 turns the cascade off (for A/B runs and parity checks).
        let cascade_on = std::env::var("CACHET_ENGINE_CASCADE").map_or(true, |v| v != "0");
        let cascade =
            CascadeScratch::new(&stream, &dims, split.target.max(gqa_min_blocks), cascade_on)?;
        // One block more than the scheduler's pool: the scratch block of graph padding.
        let per_layer = (kv.n_blocks + 1) * kv.block_size * dims.n_kv_heads * dims.head_dim;
        let mut k_cache = Vec::with_capacity(dims.n_layers);
        let mut v_cache = Vec::with_capacity(dims.n_layers);
        for _ in 0..dims.n_layers {
            // Zeroed so that a slot read before it is written (never, by construction)
            // holds finite values rather than garbage.
            let alloc = || {
                stream
                    .alloc_zeros::<u16>(per_layer)
                    .map_err(cuda_err(format!("allocating {per_layer} kv elements")))
            };
            k_cache.push(alloc()?);
            v_cache.push(alloc()?);
        }
        let inv_freq: Vec<f32> = dims.rope_inv_freq.iter().map(|&f| f as f32).collect();
        let inv_freq = stream
            .clone_htod(&inv_freq)
            .map_err(cuda_err("uploading rope frequencies"))?;
        let step = StepBuffers::new(&stream, 1024)?;
        let logits_host = pinned::<f32>(&ctx, dims.vocab_size)?;
        let ids_host = pinned::<u32>(&ctx, graph::BUCKETS[graph::BUCKETS.len() - 1])?;
        let sampling = SamplingBuffers::new(&stream, graph::BUCKETS[graph::BUCKETS.len() - 1])?;
        tracing::info!(
            device = ordinal,
            arch,
            name = ctx.name().unwrap_or_default(),
            "cuda backend ready"
        );
        Ok(Self {
            ordinal,
            pool: BufferPool::new(stream.clone()),
            capacity_rows: 0,
            dims,
            kv,
            kernels,
            gemm,
            k_cache,
            v_cache,
            inv_freq,
            step,
            packed: Vec::new(),
            logits_host,
            ids_host,
            sampling,
            use_graphs,
            gqa_min_blocks,
            split,
            cascade,
            graphs: Graphs::default(),
            capturing: None,
            bucket: None,
            n_real_rows: 0,
            in_flight: false,
            stream,
            _ctx: ctx,
        })
    }

    fn tensor(&self, rows: usize, cols: usize, dtype: Dtype) -> Result<CudaTensor> {
        let buffer = self
            .pool
            .take(self.capacity_rows * cols * dtype.size_bytes())?;
        Ok(CudaTensor {
            rows,
            cols,
            dtype,
            logits_input: false,
            buffer,
        })
    }

    fn step_ptr(&self, offset: usize) -> u64 {
        self.step.device_ptr + 4 * offset as u64
    }

    /// Packs and uploads the step (padded to its graph bucket when graphs are on) and
    /// picks how it runs.
    fn prepare_step(&mut self, batch: &StepBatch) -> Result<StepMode> {
        if self.capturing.take().is_some() {
            // The last capture failed half-way: end it so the stream runs work again.
            let _ = self
                .stream
                .end_capture(sys::CUgraphInstantiate_flags_enum(0));
            self.pool.set_frozen(false);
        }
        if self.in_flight {
            self.sync()?;
        }
        self.bucket = if self.use_graphs {
            graph::bucket_for(batch)
        } else {
            None
        };
        // A batch padded to a graph bucket is packed again below: this first packing
        // only checks it and counts its rows, and cuts no cascade tiles.
        let plan = if self.bucket.is_some() {
            step::CascadePlan::NONE
        } else {
            self.cascade.plan
        };
        let mut offsets = step::pack(batch, self.kv, self.dims.vocab_size, plan, &mut self.packed)?;
        self.n_real_rows = offsets.n_logit_rows;
        if let Some(bucket) = self.bucket {
            let scratch = self.kv.n_blocks as u32;
            let padded = graph::padded(batch, bucket, scratch, self.kv.block_size);
            let with_scratch = KvLayout {
                n_blocks: self.kv.n_blocks + 1,
                ..self.kv
            };
            offsets = step::pack(
                &padded,
                with_scratch,
                self.dims.vocab_size,
                self.cascade.plan,
                &mut self.packed,
            )?;
        }
        if offsets.n_tokens > self.capacity_rows {
            // Every activation buffer is sized for the step capacity; a larger step
            // replaces them all (rare: the capacity only grows to the largest step),
            // and with them the graphs that point into them.
            self.capacity_rows = offsets.n_tokens.next_power_of_two().max(16);
            self.pool.next_generation();
            self.graphs.clear();
        }
        if offsets.len > self.step.host.len() {
            self.step = StepBuffers::new(&self.stream, offsets.len.next_power_of_two())?;
            self.graphs.clear();
        }
        let host = self
            .step
            .host
            .as_mut_slice()
            .map_err(cuda_err("waiting for the step buffer"))?;
        host[..offsets.len].copy_from_slice(&self.packed[..offsets.len]);
        // SAFETY: the pinned source holds `offsets.len` values and the device buffer at
        // least as many; the source is not rewritten before the stream is synchronised.
        unsafe {
            cudarc::driver::result::memcpy_htod_async(
                self.step.device_ptr,
                &host[..offsets.len],
                self.stream.cu_stream(),
            )
        }
        .map_err(cuda_err("uploading the step layout"))?;
        self.step.offsets = offsets;
        self.in_flight = true;
        let Some(bucket) = self.bucket else {
            return Ok(StepMode::Eager);
        };
        if self.graphs.by_bucket.contains_key(&bucket) {
            return Ok(StepMode::Replay);
        }
        if self.graphs.warm.insert(bucket) {
            return Ok(StepMode::Eager);
        }
        self.pool.set_frozen(true);
        self.stream
            .begin_capture(sys::CUstreamCaptureMode_enum::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(cuda_err("starting a graph capture"))?;
        self.capturing = Some(bucket);
        Ok(StepMode::Capture)
    }

    fn finish_capture(&mut self, logits: CudaTensor) -> Result<()> {
        let bucket = self.capturing.take().ok_or_else(|| {
            Error::InvalidSettings("end_capture without a capture in progress".into())
        })?;
        self.pool.set_frozen(false);
        let graph = self
            .stream
            .end_capture(sys::CUgraphInstantiate_flags_enum(0))
            .map_err(cuda_err("ending a graph capture"))?
            .ok_or_else(|| Error::InvalidSettings("the graph capture recorded nothing".into()))?;
        tracing::debug!(bucket, "decode step captured as a cuda graph");
        // The logits buffer goes back to the pool with the others: replays write it
        // again, and it is read right after each replay, before any other step runs.
        let step_graph = graph::StepGraph {
            graph,
            logits_ptr: logits.ptr(),
            vocab: logits.cols,
        };
        self.graphs.by_bucket.insert(bucket, step_graph);
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(cuda_err("synchronising the stream"))?;
        self.in_flight = false;
        Ok(())
    }
}

fn check_dims(dims: &ModelDims) -> Result<()> {
    let problem = if !dims.head_dim.is_multiple_of(2) || dims.head_dim > 256 {
        format!("head_dim {} (needs an even size up to 256)", dims.head_dim)
    } else if dims.n_kv_heads == 0 || !dims.n_heads.is_multiple_of(dims.n_kv_heads) {
        format!("{} heads over {} kv heads", dims.n_heads, dims.n_kv_heads)
    } else if dims.hidden_size > MAX_NORM_COLS {
        format!(
            "hidden size {} (the norm kernel takes up to {MAX_NORM_COLS})",
            dims.hidden_size
        )
    } else {
        return Ok(());
    };
    Err(Error::InvalidConfig(format!(
        "the cuda backend does not support {problem}"
    )))
}

fn pinned<T: cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits>(
    ctx: &Arc<CudaContext>,
    len: usize,
) -> Result<PinnedHostSlice<T>> {
    // Not write-combined: the host reads these buffers back.
    // SAFETY: the memory is only read after a copy has filled it.
    unsafe { ctx.alloc_pinned_with_flags::<T>(len.max(1), 0) }.map_err(cuda_err(format!(
        "allocating {len} elements of pinned memory"
    )))
}

/// Room for the sampling parameters of `rows` rows, in pinned memory and on the device.
struct SamplingBuffers {
    rows: usize,
    host: PinnedHostSlice<u32>,
    // Owns the memory that the kernel reaches through `device_ptr`.
    _device: CudaSlice<u32>,
    device_ptr: u64,
    packed: Vec<u32>,
}

/// A pinned host buffer of `len` u32s and its device mirror (uninitialised: only what
/// each copy from the host writes is ever read), with the mirror's address.
fn staged(
    stream: &Arc<CudaStream>,
    len: usize,
    what: &str,
) -> Result<(PinnedHostSlice<u32>, CudaSlice<u32>, u64)> {
    let host = pinned::<u32>(stream.context(), len)?;
    // SAFETY: the kernels read only the prefix that each step's copy has written.
    let device =
        unsafe { stream.alloc::<u32>(len) }.map_err(cuda_err(format!("allocating the {what}")))?;
    let device_ptr = memory::raw_ptr(&device, stream);
    Ok((host, device, device_ptr))
}

impl SamplingBuffers {
    fn new(stream: &Arc<CudaStream>, rows: usize) -> Result<Self> {
        let len = rows * crate::sampling::PACKED_ROW_LEN;
        let (host, device, device_ptr) = staged(stream, len, "sampling parameters")?;
        Ok(Self {
            rows,
            host,
            _device: device,
            device_ptr,
            packed: Vec::with_capacity(len),
        })
    }
}

impl StepBuffers {
    fn new(stream: &Arc<CudaStream>, len: usize) -> Result<Self> {
        let (host, device, device_ptr) = staged(stream, len, "step layout buffer")?;
        Ok(Self {
            host,
            _device: device,
            device_ptr,
            offsets: StepOffsets::default(),
        })
    }
}

mod ops;

#[cfg(test)]
mod tests {
    use super::{MAX_ATTENTION_SPLITS, attention_splits};

    #[test]
    fn small_batches_split_their_keys_until_the_gpu_is_full() {
        // Batch 1 of a Llama-3 shape: 8 (token, kv head) pairs on 132 multiprocessors.
        assert_eq!(attention_splits(8, 264), MAX_ATTENTION_SPLITS);
        assert_eq!(attention_splits(64, 264), 5);
        assert_eq!(attention_splits(263, 264), 2);
        assert_eq!(attention_splits(264, 264), 1);
        assert_eq!(attention_splits(2048, 264), 1);
        assert_eq!(attention_splits(0, 264), 1);
    }

    #[test]
    fn a_split_launch_fits_the_scratch() {
        // SplitScratch holds 2 * target parts and `target` counters.
        let target = 264;
        for pairs in 1..3 * target {
            let splits = attention_splits(pairs, target);
            if splits > 1 {
                assert!(pairs < target, "{pairs} pairs");
                assert!(pairs * splits < 2 * target, "{pairs} pairs x {splits}");
            }
        }
    }
}
