//! Device activations: tensors whose buffers come from a pool and go back to it on drop.
//!
//! Every activation buffer is sized for the step capacity (the most tokens one step may
//! have), so a buffer of a given width fits any step and the pool reaches a steady
//! state after the first step: later steps allocate nothing. Growing the capacity
//! starts a new generation; buffers of the old one are freed as they come back.

use std::collections::HashMap;
use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream, DevicePtr};
use parking_lot::Mutex;

use crate::{Error, Result};

/// Element type of an activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    Bf16,
    F32,
}

impl Dtype {
    pub fn size_bytes(self) -> usize {
        match self {
            Dtype::Bf16 => 2,
            Dtype::F32 => 4,
        }
    }
}

#[derive(Default)]
struct PoolState {
    free: HashMap<usize, Vec<CudaSlice<u8>>>,
    generation: u64,
    /// Set while a CUDA graph is captured: an allocation then would be recorded into
    /// the graph, so it is refused instead.
    frozen: bool,
}

/// Recycles device buffers by size.
#[derive(Clone)]
pub struct BufferPool {
    state: Arc<Mutex<PoolState>>,
    stream: Arc<CudaStream>,
}

impl std::fmt::Debug for BufferPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state.lock();
        f.debug_struct("BufferPool")
            .field("generation", &state.generation)
            .field("free", &state.free.values().map(Vec::len).sum::<usize>())
            .finish()
    }
}

impl BufferPool {
    pub fn new(stream: Arc<CudaStream>) -> Self {
        Self {
            state: Arc::default(),
            stream,
        }
    }

    /// A buffer of exactly `bytes` bytes, reused when one is free.
    pub fn take(&self, bytes: usize) -> Result<DeviceBuffer> {
        let mut state = self.state.lock();
        let generation = state.generation;
        let reused = state.free.get_mut(&bytes).and_then(Vec::pop);
        let slice = match reused {
            Some(slice) => slice,
            None if state.frozen => {
                return Err(Error::InvalidSettings(format!(
                    "a {bytes}-byte activation buffer was needed while a cuda graph was captured"
                )));
            }
            None => {
                // SAFETY: the buffer is uninitialised; every kernel that takes a new
                // tensor writes all of its rows before anything reads them.
                unsafe { self.stream.alloc::<u8>(bytes.max(1)) }.map_err(|source| Error::Cuda {
                    what: format!("allocating {bytes} bytes of activations"),
                    source,
                })?
            }
        };
        let ptr = raw_ptr(&slice, &self.stream);
        Ok(DeviceBuffer {
            ptr,
            bytes,
            generation,
            slice: Some(slice),
            pool: self.state.clone(),
        })
    }

    /// Frees the free buffers and makes buffers still in use be freed when dropped.
    pub fn next_generation(&self) {
        let mut state = self.state.lock();
        state.generation += 1;
        state.free.clear();
    }

    pub fn set_frozen(&self, frozen: bool) {
        self.state.lock().frozen = frozen;
    }
}

/// A pooled device buffer; its memory goes back to the pool when dropped.
pub struct DeviceBuffer {
    ptr: u64,
    bytes: usize,
    generation: u64,
    slice: Option<CudaSlice<u8>>,
    pool: Arc<Mutex<PoolState>>,
}

impl std::fmt::Debug for DeviceBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceBuffer")
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl DeviceBuffer {
    pub fn ptr(&self) -> u64 {
        self.ptr
    }
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        let Some(slice) = self.slice.take() else {
            return;
        };
        let mut state = self.pool.lock();
        if state.generation == self.generation {
            state.free.entry(self.bytes).or_default().push(slice);
        }
    }
}

/// A `[rows, cols]` row-major activation on the GPU.
pub struct CudaTensor {
    pub rows: usize,
    pub cols: usize,
    pub dtype: Dtype,
    /// Rows picked for the output projection: its product is kept in f32.
    pub logits_input: bool,
    pub buffer: DeviceBuffer,
}

impl std::fmt::Debug for CudaTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaTensor")
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .field("dtype", &self.dtype)
            .finish()
    }
}

impl CudaTensor {
    pub fn ptr(&self) -> u64 {
        self.buffer.ptr()
    }
}

/// A weight resident on the GPU in bf16, `[rows, cols]` (vectors have one row).
pub struct CudaWeight {
    pub rows: usize,
    pub cols: usize,
    pub ptr: u64,
    // Kept to own the memory; kernels reach it through `ptr`.
    _slice: CudaSlice<u16>,
}

impl std::fmt::Debug for CudaWeight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaWeight")
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .finish()
    }
}

impl CudaWeight {
    pub fn new(rows: usize, cols: usize, slice: CudaSlice<u16>, stream: &CudaStream) -> Self {
        let ptr = raw_ptr(&slice, stream);
        Self {
            rows,
            cols,
            ptr,
            _slice: slice,
        }
    }
}

/// The raw device address of a buffer, for kernel arguments and cuBLAS.
pub fn raw_ptr<T>(slice: &CudaSlice<T>, stream: &CudaStream) -> u64 {
    // Event tracking is off for the backend's context, so the guard records nothing.
    let (ptr, _guard) = slice.device_ptr(stream);
    ptr
}

/// f32 to bf16 bits, rounding to nearest even (as the kernels do).
pub fn to_bf16_bits(values: &[f32]) -> Vec<u16> {
    values
        .iter()
        .map(|&v| half::bf16::from_f32(v).to_bits())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_conversion_rounds_to_nearest_even() {
        // 1 + 2^-8 lies halfway between two bf16 values and rounds to the even one (1.0);
        // 1 + 3 * 2^-9 rounds up.
        let bits = to_bf16_bits(&[1.0, 1.0 + 1.0 / 256.0, 1.0 + 3.0 / 512.0, -2.5]);
        assert_eq!(bits, vec![0x3f80, 0x3f80, 0x3f81, 0xc020]);
    }
}
