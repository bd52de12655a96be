//! The CUDA backend: bf16 weights and activations on one GPU, cuBLAS for matrix
//! products, NVRTC-compiled kernels for the rest, and the paged KV pool in device memory.
//!
//! CUDA's libraries are loaded at run time (cudarc's dynamic loading), so the engine
//! builds and runs without them; asking for `cuda:N` where they or the GPU are missing
//! is a start-up error that says what is missing, never a fall-back to the CPU.

pub mod compile;
mod gemm;
pub mod memory;
mod open;
pub mod step;

use std::sync::Arc;

use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, LaunchConfig, PinnedHostSlice,
};

use self::gemm::Gemm;
use self::memory::{BufferPool, CudaTensor, Dtype};
use self::step::StepOffsets;
use super::{KvLayout, ModelDims};
use crate::{Error, Result};

pub use self::open::check_available;

/// Widest row the norm kernels stage in shared memory (f32), within the 48 KiB default.
const MAX_NORM_COLS: usize = 11 * 1024;

struct Kernels {
    embed_rows: CudaFunction,
    gather_rows: CudaFunction,
    add_rms_norm: CudaFunction,
    add_bias: CudaFunction,
    silu_mul: CudaFunction,
    rope_store_kv: CudaFunction,
    paged_attention: CudaFunction,
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
    pub fn new(ordinal: usize, dims: ModelDims, kv: KvLayout) -> Result<Self> {
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
            paged_attention: load("paged_attention")?,
        };
        let gemm = Gemm::new(&stream)?;
        let per_layer = kv.n_blocks * kv.block_size * dims.n_kv_heads * dims.head_dim;
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
            in_flight: false,
            stream,
            _ctx: ctx,
        })
    }

    /// Bytes of KV memory per block across all layers (keys and values, bf16).
    pub fn kv_bytes_per_block(dims: &ModelDims, block_size: usize) -> usize {
        2 * dims.n_layers * block_size * dims.n_kv_heads * dims.head_dim * 2
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

    fn sync(&mut self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(cuda_err("synchronising the stream"))?;
        self.in_flight = false;
        Ok(())
    }
}

fn check_dims(dims: &ModelDims) -> Result<()> {
    let problem = if dims.head_dim % 2 != 0 || dims.head_dim > 256 {
        format!("head_dim {} (needs an even size up to 256)", dims.head_dim)
    } else if dims.n_kv_heads == 0 || dims.n_heads % dims.n_kv_heads != 0 {
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

impl StepBuffers {
    fn new(stream: &Arc<CudaStream>, len: usize) -> Result<Self> {
        let host = pinned::<u32>(stream.context(), len)?;
        // SAFETY: only the packed prefix written by each step's copy is ever read.
        let device = unsafe { stream.alloc::<u32>(len) }
            .map_err(cuda_err("allocating the step layout buffer"))?;
        let device_ptr = memory::raw_ptr(&device, stream);
        Ok(Self {
            host,
            _device: device,
            device_ptr,
            offsets: StepOffsets::default(),
        })
    }
}

mod ops;
