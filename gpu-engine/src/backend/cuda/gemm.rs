//! Matrix products of linear layers through cuBLAS (bf16 operands, f32 accumulation).

use std::sync::Arc;

use cudarc::cublas::{result as blas, sys as blas_sys};
use cudarc::driver::{CudaSlice, CudaStream};

use crate::{Error, Result};

/// cuBLAS workspace, preallocated so that no product allocates (and graph capture works).
const WORKSPACE_BYTES: usize = 32 << 20;

/// A cuBLAS handle bound to the backend's stream, with its own workspace.
pub struct Gemm {
    handle: blas_sys::cublasHandle_t,
    _workspace: CudaSlice<u8>,
}

impl std::fmt::Debug for Gemm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gemm").finish_non_exhaustive()
    }
}

// SAFETY: the handle is used only by the thread that owns the backend (the trait takes
// `&mut self`); cuBLAS handles may move between threads as long as they are not used
// from two at once.
unsafe impl Send for Gemm {}

fn blas_err(what: &str) -> impl FnOnce(blas::CublasError) -> Error + '_ {
    move |source| Error::Cublas {
        what: what.to_owned(),
        source,
    }
}

impl Gemm {
    pub fn new(stream: &Arc<CudaStream>) -> Result<Self> {
        let handle = blas::create_handle().map_err(blas_err("cublasCreate"))?;
        // SAFETY: `handle` was just created; the stream outlives the backend that owns both.
        unsafe { blas::set_stream(handle, stream.cu_stream() as _) }
            .map_err(blas_err("cublasSetStream"))?;
        // SAFETY: the workspace is allocated uninitialised; cuBLAS only uses it as scratch.
        let workspace =
            unsafe { stream.alloc::<u8>(WORKSPACE_BYTES) }.map_err(|source| Error::Cuda {
                what: "allocating the cublas workspace".into(),
                source,
            })?;
        let ptr = super::memory::raw_ptr(&workspace, stream);
        // SAFETY: the workspace lives as long as the handle (both owned by `Gemm`).
        unsafe { blas_sys::cublasSetWorkspace_v2(handle, ptr as *mut _, WORKSPACE_BYTES) }
            .result()
            .map_err(blas_err("cublasSetWorkspace"))?;
        Ok(Self {
            handle,
            _workspace: workspace,
        })
    }

    /// `out[m, n] = x[m, k] · w[n, k]ᵀ`, row-major; bf16 inputs, bf16 or f32 output.
    ///
    /// # Safety
    /// `x`, `w` and `out` must be device pointers to at least `m·k`, `n·k` and `m·n`
    /// elements of the stated types, live until the stream has run the product.
    pub unsafe fn linear(
        &self,
        x: u64,
        w: u64,
        out: u64,
        (m, n, k): (usize, usize, usize),
        out_f32: bool,
    ) -> Result<()> {
        let (alpha, beta) = (1.0f32, 0.0f32);
        let out_type = if out_f32 {
            blas_sys::cudaDataType::CUDA_R_32F
        } else {
            blas_sys::cudaDataType::CUDA_R_16BF
        };
        // cuBLAS is column-major: the row-major [m, n] output is the column-major
        // [n, m] product of w (row-major [n, k], read transposed) and x.
        // SAFETY: the caller guarantees the pointers and sizes; alpha and beta are host
        // scalars read during the call.
        unsafe {
            blas::gemm_ex(
                self.handle,
                blas_sys::cublasOperation_t::CUBLAS_OP_T,
                blas_sys::cublasOperation_t::CUBLAS_OP_N,
                n as i32,
                m as i32,
                k as i32,
                (&alpha as *const f32).cast(),
                w as *const _,
                blas_sys::cudaDataType::CUDA_R_16BF,
                k as i32,
                x as *const _,
                blas_sys::cudaDataType::CUDA_R_16BF,
                k as i32,
                (&beta as *const f32).cast(),
                out as *mut _,
                out_type,
                n as i32,
                blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT_TENSOR_OP,
            )
        }
        .map_err(blas_err("cublasGemmEx"))
    }
}

impl Drop for Gemm {
    fn drop(&mut self) {
        // SAFETY: the handle is destroyed once, after its last use.
        let _ = unsafe { blas::destroy_handle(self.handle) };
    }
}
