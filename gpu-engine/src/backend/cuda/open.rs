//! Opening a GPU: each CUDA library is checked before first use, since with dynamic
//! loading a missing one would otherwise panic inside cudarc.

use std::sync::Arc;

use cudarc::driver::CudaContext;

use crate::{Error, Result};

fn unavailable(ordinal: usize, reason: impl Into<String>) -> Error {
    Error::DeviceUnavailable {
        device: format!("cuda:{ordinal}"),
        reason: reason.into(),
    }
}

/// Checks that the driver, NVRTC and cuBLAS can be loaded and that GPU `ordinal` exists.
pub fn check_available(ordinal: usize) -> Result<()> {
    // SAFETY: these only try to dlopen the libraries; nothing is called in them.
    let (driver, nvrtc, cublas) = unsafe {
        (
            cudarc::driver::sys::is_culib_present(),
            cudarc::nvrtc::sys::is_culib_present(),
            cudarc::cublas::sys::is_culib_present(),
        )
    };
    if !driver {
        return Err(unavailable(
            ordinal,
            "no cuda driver found (libcuda.so could not be loaded): this machine has no usable nvidia gpu driver",
        ));
    }
    if !nvrtc {
        return Err(unavailable(
            ordinal,
            "libnvrtc could not be loaded: install the cuda runtime libraries or add their folder to LD_LIBRARY_PATH",
        ));
    }
    if !cublas {
        return Err(unavailable(
            ordinal,
            "libcublas could not be loaded: add the cuda libraries' folder (e.g. /usr/local/cuda/lib64) to LD_LIBRARY_PATH",
        ));
    }
    let count = CudaContext::device_count().map_err(|source| Error::Cuda {
        what: "counting gpus".into(),
        source,
    })?;
    if ordinal >= count.max(0) as usize {
        return Err(unavailable(
            ordinal,
            format!("the driver sees {count} gpu(s)"),
        ));
    }
    Ok(())
}

/// Checks availability, then creates the device's context.
pub fn open_device(ordinal: usize) -> Result<Arc<CudaContext>> {
    check_available(ordinal)?;
    CudaContext::new(ordinal).map_err(|source| Error::Cuda {
        what: format!("opening gpu {ordinal}"),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a machine without an NVIDIA driver (CI, this repository's build machines)
    /// asking for a GPU must be a clear error, not a panic or a CPU fall-back.
    #[test]
    fn no_driver_is_a_clear_error() {
        // SAFETY: only probes whether the library can be loaded.
        if unsafe { cudarc::driver::sys::is_culib_present() } {
            return;
        }
        let message = check_available(0).unwrap_err().to_string();
        assert!(
            message.starts_with("device cuda:0 is not available"),
            "{message}"
        );
        assert!(message.contains("no cuda driver found"), "{message}");
    }
}
