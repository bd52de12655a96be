//! Memory-mapped safetensors files (single or sharded), converted tensor by tensor to f32.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::SafeTensors;
use safetensors::tensor::{Dtype, TensorInfo};
use serde::Deserialize;

use super::read_json;
use crate::{Error, Result};

/// A tensor copied to host memory as f32, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

struct Entry {
    file: usize,
    data_start: usize,
    info: TensorInfo,
}

/// The safetensors files of a checkpoint, mapped into memory; tensors are read on demand.
pub struct WeightFiles {
    paths: Vec<PathBuf>,
    maps: Vec<Mmap>,
    entries: HashMap<String, Entry>,
}

impl std::fmt::Debug for WeightFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeightFiles")
            .field("paths", &self.paths)
            .field("n_tensors", &self.entries.len())
            .finish()
    }
}

#[derive(Deserialize)]
struct ShardIndex {
    weight_map: HashMap<String, String>,
}

impl WeightFiles {
    /// Maps `model.safetensors`, or every shard named in `model.safetensors.index.json`.
    pub fn open(dir: &Path) -> Result<Self> {
        let index_path = dir.join("model.safetensors.index.json");
        let paths: Vec<PathBuf> = if index_path.exists() {
            let index: ShardIndex = read_json(&index_path)?;
            let mut names: Vec<String> = index.weight_map.into_values().collect();
            names.sort();
            names.dedup();
            names.into_iter().map(|n| dir.join(n)).collect()
        } else {
            vec![dir.join("model.safetensors")]
        };
        let mut maps = Vec::with_capacity(paths.len());
        let mut entries = HashMap::new();
        for (file, path) in paths.iter().enumerate() {
            let handle = File::open(path).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
            // SAFETY: the map is read-only and the checkpoint files are not modified while
            // the engine runs; a concurrent truncation would be an operator error that
            // memory-mapping cannot guard against, as with every mmap-based loader.
            let map = unsafe { Mmap::map(&handle) }.map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
            let (header_len, metadata) =
                SafeTensors::read_metadata(&map).map_err(|source| Error::Safetensors {
                    path: path.clone(),
                    source,
                })?;
            for (name, info) in metadata.tensors() {
                entries.insert(
                    name,
                    Entry {
                        file,
                        data_start: 8 + header_len,
                        info: info.clone(),
                    },
                );
            }
            maps.push(map);
        }
        Ok(Self {
            paths,
            maps,
            entries,
        })
    }

    /// Whether the checkpoint holds a tensor of this name.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// Reads a tensor as f32, checking that its shape is `expected`.
    pub fn get(&self, name: &str, expected: &[usize]) -> Result<HostTensor> {
        let entry = self
            .entries
            .get(name)
            .ok_or_else(|| Error::MissingTensor(name.to_owned()))?;
        if entry.info.shape != expected {
            return Err(Error::TensorShape {
                name: name.to_owned(),
                actual: entry.info.shape.clone(),
                expected: expected.to_vec(),
            });
        }
        let (start, end) = entry.info.data_offsets;
        let bytes = &self.maps[entry.file][entry.data_start + start..entry.data_start + end];
        let data = to_f32(bytes, entry.info.dtype).ok_or_else(|| Error::TensorDtype {
            name: name.to_owned(),
            dtype: format!("{:?}", entry.info.dtype),
        })?;
        Ok(HostTensor {
            shape: expected.to_vec(),
            data,
        })
    }
}

fn to_f32(bytes: &[u8], dtype: Dtype) -> Option<Vec<f32>> {
    let out = match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        _ => return None,
    };
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::tensor::TensorView;

    fn write(dir: &Path, dtype: Dtype, bytes: &[u8]) {
        let view = TensorView::new(dtype, vec![2], bytes).unwrap();
        safetensors::serialize_to_file([("w", view)], None, &dir.join("model.safetensors"))
            .unwrap();
    }

    #[test]
    fn reads_f32_f16_and_bf16_as_f32() {
        let cases: [(Dtype, Vec<u8>); 3] = [
            (
                Dtype::F32,
                [1.5f32, -2.0]
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect(),
            ),
            (
                Dtype::F16,
                [1.5f32, -2.0]
                    .iter()
                    .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
                    .collect(),
            ),
            (
                Dtype::BF16,
                [1.5f32, -2.0]
                    .iter()
                    .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
                    .collect(),
            ),
        ];
        for (dtype, bytes) in cases {
            let dir = tempfile::tempdir().unwrap();
            write(dir.path(), dtype, &bytes);
            let files = WeightFiles::open(dir.path()).unwrap();
            assert_eq!(
                files.get("w", &[2]).unwrap().data,
                vec![1.5, -2.0],
                "{dtype:?}"
            );
        }
    }

    #[test]
    fn wrong_shape_and_missing_tensor_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), Dtype::F32, &[0u8; 8]);
        let files = WeightFiles::open(dir.path()).unwrap();
        assert!(matches!(
            files.get("w", &[3]),
            Err(Error::TensorShape { .. })
        ));
        assert!(matches!(files.get("x", &[2]), Err(Error::MissingTensor(_))));
    }
}
