//! Getting a step's results back to the host: its logits, or only its greedy token ids.

use cudarc::driver::PushKernelArg;

use super::memory::Dtype;
use super::{CudaBackend, cuda_err, per_row, pinned};
use crate::{Error, Result};

impl CudaBackend {
    /// Launches the graph captured for the current step's batch-size bucket; returns where its
    /// logits land and the vocabulary size.
    fn launch_step_graph(&mut self) -> Result<(u64, usize)> {
        let bucket = self
            .bucket
            .ok_or_else(|| Error::InvalidSettings("replay of a step without a graph".into()))?;
        let Some(step_graph) = self.graphs.by_bucket.get(&bucket) else {
            return Err(Error::InvalidSettings(format!(
                "no graph for bucket {bucket}"
            )));
        };
        let (ptr, vocab) = (step_graph.logits_ptr, step_graph.vocab);
        step_graph
            .graph
            .launch()
            .map_err(cuda_err("launching a step graph"))?;
        Ok((ptr, vocab))
    }

    /// Runs the graph of the current step and returns its logits, one `Vec` per row.
    pub(super) fn replay_graph(&mut self) -> Result<Vec<Vec<f32>>> {
        let (ptr, vocab) = self.launch_step_graph()?;
        self.copy_logits(ptr, self.n_real_rows, vocab)
    }

    /// Runs the graph of the current step and returns the greedy token of each real row.
    pub(super) fn replay_graph_argmax(&mut self) -> Result<Vec<u32>> {
        let (ptr, vocab) = self.launch_step_graph()?;
        self.greedy_ids(ptr, self.n_real_rows, vocab)
    }

    /// The argmax of each of `rows` rows of f32 logits at `ptr`, computed on the GPU;
    /// only the ids are copied to the host.
    pub(super) fn greedy_ids(&mut self, ptr: u64, rows: usize, cols: usize) -> Result<Vec<u32>> {
        if rows == 0 {
            self.sync()?;
            return Ok(Vec::new());
        }
        let ids = self.tensor(rows, 1, Dtype::F32)?;
        let (ids_ptr, cols_i) = (ids.ptr(), cols as i32);
        let mut launch = self.stream.launch_builder(&self.kernels.argmax_rows);
        launch.arg(&ptr).arg(&ids_ptr).arg(&cols_i);
        // SAFETY: `ptr` holds rows × cols f32 logits and `ids` at least `rows` u32 slots.
        unsafe { launch.launch(per_row(rows, 1024, 0)) }
            .map_err(cuda_err("launching argmax_rows"))?;
        if rows > self.ids_host.len() {
            self.sync()?;
            self.ids_host = pinned::<u32>(self.stream.context(), rows)?;
        }
        let host = self
            .ids_host
            .as_mut_slice()
            .map_err(cuda_err("waiting for the ids buffer"))?;
        // SAFETY: the ids buffer holds `rows` values and the pinned buffer at least as many.
        unsafe {
            cudarc::driver::result::memcpy_dtoh_async(
                &mut host[..rows],
                ids_ptr,
                self.stream.cu_stream(),
            )
        }
        .map_err(cuda_err("copying token ids to the host"))?;
        self.sync()?;
        let host = self
            .ids_host
            .as_slice()
            .map_err(cuda_err("reading the ids buffer"))?;
        Ok(host[..rows].to_vec())
    }

    /// Copies `rows` rows of f32 logits at `ptr` to the host and waits for the step.
    pub(super) fn copy_logits(
        &mut self,
        ptr: u64,
        rows: usize,
        cols: usize,
    ) -> Result<Vec<Vec<f32>>> {
        let n = rows * cols;
        if n > self.logits_host.len() {
            self.sync()?;
            self.logits_host = pinned::<f32>(self.stream.context(), n)?;
        }
        let host = self
            .logits_host
            .as_mut_slice()
            .map_err(cuda_err("waiting for the logits buffer"))?;
        // SAFETY: `ptr` holds at least n f32 values (the step's logits) and the pinned
        // buffer at least n.
        unsafe {
            cudarc::driver::result::memcpy_dtoh_async(&mut host[..n], ptr, self.stream.cu_stream())
        }
        .map_err(cuda_err("copying logits to the host"))?;
        self.sync()?;
        let host = self
            .logits_host
            .as_slice()
            .map_err(cuda_err("reading the logits buffer"))?;
        Ok(host[..n].chunks(cols.max(1)).map(<[f32]>::to_vec).collect())
    }
}
