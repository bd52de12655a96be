//! Compiling the kernels with NVRTC to a CUBIN for the GPU's architecture, cached on disk.
//!
//! CUBIN rather than PTX: PTX from a newer NVRTC than the driver (13.5 writes `.version
//! 9.5`) does not load on an older driver, while a CUBIN for the exact architecture does.
//! The cache key is a hash of the source, the architecture and the NVRTC version, so an
//! edited kernel or a different card never picks up a stale binary.

use std::ffi::{CString, c_char, c_int};
use std::path::{Path, PathBuf};

use cudarc::nvrtc::{result as nvrtc, sys as nvrtc_sys};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// The kernels' source, embedded in the binary.
pub const KERNELS_SOURCE: &str = include_str!("kernels.cu");

/// The NVRTC target for a compute capability: `sm_90a` on Hopper (its arch-specific
/// instructions), `sm_XY` elsewhere.
pub fn arch_for(major: i32, minor: i32) -> String {
    if (major, minor) == (9, 0) {
        "sm_90a".into()
    } else {
        format!("sm_{major}{minor}")
    }
}

/// The file a compiled CUBIN is cached in.
pub fn cache_path(dir: &Path, source: &str, arch: &str, nvrtc_version: (i32, i32)) -> PathBuf {
    let mut hasher = Sha256::new();
    hasher.update(source.as_bytes());
    hasher.update([0]);
    hasher.update(arch.as_bytes());
    hasher.update(format!("/{}.{}", nvrtc_version.0, nvrtc_version.1).as_bytes());
    let digest = hasher.finalize();
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    dir.join(format!("kernels-{arch}-{hex}.cubin"))
}

/// Where compiled kernels are kept: `$CACHET_ENGINE_KERNEL_CACHE`, else
/// `$XDG_CACHE_HOME/cachet-engine`, else `~/.cache/cachet-engine`, else the temp dir.
pub fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CACHET_ENGINE_KERNEL_CACHE") {
        return dir.into();
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("cachet-engine");
    }
    if let Some(home) = std::env::var_os("HOME") {
        return PathBuf::from(home).join(".cache").join("cachet-engine");
    }
    std::env::temp_dir().join("cachet-engine")
}

fn nvrtc_version() -> Result<(i32, i32)> {
    let (mut major, mut minor): (c_int, c_int) = (0, 0);
    // SAFETY: both pointers are to live locals that NVRTC writes once.
    unsafe { nvrtc_sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .map_err(|source| Error::Nvrtc {
            what: "nvrtcVersion".into(),
            source,
        })?;
    Ok((major, minor))
}

/// Returns the CUBIN for `arch`, from the cache when present, else compiled and stored.
/// A cache that cannot be written only costs the next start a compilation.
pub fn cubin(source: &str, arch: &str, cache_dir: &Path) -> Result<Vec<u8>> {
    let path = cache_path(cache_dir, source, arch, nvrtc_version()?);
    if let Ok(bytes) = std::fs::read(&path) {
        tracing::debug!(path = %path.display(), "kernels loaded from the cache");
        return Ok(bytes);
    }
    let started = std::time::Instant::now();
    let bytes = compile(source, arch)?;
    tracing::info!(
        arch,
        compile_ms = started.elapsed().as_millis() as u64,
        "kernels compiled with nvrtc"
    );
    let stored = std::fs::create_dir_all(cache_dir).and_then(|()| {
        // Write then rename, so a concurrent start never reads half a file.
        let partial = path.with_extension(format!("partial{}", std::process::id()));
        std::fs::write(&partial, &bytes)?;
        std::fs::rename(&partial, &path)
    });
    if let Err(err) = stored {
        tracing::warn!(error = %err, path = %path.display(), "could not cache the compiled kernels");
    }
    Ok(bytes)
}

fn compile(source: &str, arch: &str) -> Result<Vec<u8>> {
    let nvrtc_err = |what: &str| {
        let what = what.to_owned();
        move |source| Error::Nvrtc { what, source }
    };
    let src = CString::new(source).map_err(|_| Error::KernelCompile {
        arch: arch.into(),
        log: "the kernel source contains a nul byte".into(),
    })?;
    let program = nvrtc::create_program(&src, Some(c"cachet_kernels.cu"))
        .map_err(nvrtc_err("nvrtcCreateProgram"))?;
    let options = [
        format!("--gpu-architecture={arch}"),
        "--std=c++17".to_owned(),
    ];
    // SAFETY: `program` was just created and is destroyed once, below.
    let compiled = unsafe { nvrtc::compile_program(program, &options) };
    let result = match compiled {
        Ok(()) => read_cubin(program).map_err(nvrtc_err("nvrtcGetCUBIN")),
        Err(_) => Err(Error::KernelCompile {
            arch: arch.into(),
            log: program_log(program),
        }),
    };
    // SAFETY: as above; nothing uses `program` after this.
    let _ = unsafe { nvrtc::destroy_program(program) };
    result
}

fn read_cubin(program: nvrtc_sys::nvrtcProgram) -> Result<Vec<u8>, nvrtc::NvrtcError> {
    let mut size = 0usize;
    // SAFETY: `program` is a compiled program; NVRTC writes the size, then exactly that
    // many bytes into a buffer of that size.
    unsafe {
        nvrtc_sys::nvrtcGetCUBINSize(program, &mut size).result()?;
        let mut bytes = vec![0u8; size];
        nvrtc_sys::nvrtcGetCUBIN(program, bytes.as_mut_ptr().cast::<c_char>()).result()?;
        Ok(bytes)
    }
}

fn program_log(program: nvrtc_sys::nvrtcProgram) -> String {
    // SAFETY: `program` is live; the log is copied out before it is destroyed.
    match unsafe { nvrtc::get_program_log(program) } {
        Ok(log) => {
            let bytes: Vec<u8> = log
                .iter()
                .take_while(|&&c| c != 0)
                .map(|&c| c as u8)
                .collect();
            String::from_utf8_lossy(&bytes).into_owned()
        }
        Err(_) => "no compiler log".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hopper_gets_the_arch_specific_target() {
        assert_eq!(arch_for(9, 0), "sm_90a");
        assert_eq!(arch_for(8, 9), "sm_89");
        assert_eq!(arch_for(10, 0), "sm_100");
    }

    #[test]
    fn cache_key_changes_with_source_arch_and_compiler() {
        let dir = Path::new("/cache");
        let base = cache_path(dir, "a", "sm_90a", (13, 0));
        assert_eq!(base, cache_path(dir, "a", "sm_90a", (13, 0)));
        assert_ne!(base, cache_path(dir, "b", "sm_90a", (13, 0)));
        assert_ne!(base, cache_path(dir, "a", "sm_89", (13, 0)));
        assert_ne!(base, cache_path(dir, "a", "sm_90a", (13, 1)));
        assert!(base.starts_with(dir));
    }

    #[test]
    fn kernels_use_no_toolkit_headers() {
        assert!(!KERNELS_SOURCE.contains("#include"));
        for name in [
            "embed_rows",
            "add_rms_norm",
            "rope_store_kv",
            "gemv_small_m",
            "argmax_parts",
            "argmax_finish",
        ] {
            assert!(
                KERNELS_SOURCE.contains(&format!(" {name}(")),
                "kernel {name} is missing"
            );
        }
        for head_size in [64, 128, 256] {
            assert!(
                KERNELS_SOURCE.contains(&format!("ATTENTION_ENTRY(paged_attention_{head_size},"))
            );
        }
    }
}
