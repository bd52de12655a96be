//! Getting a step's results back to the host: its logits, or only its greedy token ids.

use cudarc::driver::{LaunchConfig, PushKernelArg};

use super::memory::Dtype;
use super::{CudaBackend, SamplingBuffers, cuda_err, per_row, pinned};
use crate::sampling::RowSampling;
use crate::{Error, Result};

/// Runs of a row the greedy argmax's first kernel splits it into (its ARGMAX_PARTS).
const ARGMAX_PARTS: usize = 64;
/// Threads of that kernel (its ARGMAX_THREADS).
const ARGMAX_THREADS: u32 = 256;

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

    /// Samples rows of host logits (`rows × cols`) on the GPU, outside any step: the
    /// check of the sampling kernel against the host reference (`cachet-engine sample-check`).
    pub fn sample_host_logits(
        &mut self,
        logits: &[f32],
        cols: usize,
        params: &[RowSampling],
    ) -> Result<Vec<u32>> {
        let rows = params.len();
        if logits.len() != rows * cols {
            return Err(Error::InvalidSettings(format!(
                "{} logits are not {rows} rows of {cols}",
                logits.len()
            )));
        }
        if rows > self.capacity_rows {
            self.capacity_rows = rows.next_power_of_two();
            self.pool.next_generation();
            self.graphs.clear();
        }
        let device = self
            .stream
            .clone_htod(logits)
            .map_err(cuda_err("uploading logits"))?;
        let ptr = super::memory::raw_ptr(&device, &self.stream);
        let ids = self.sampled_ids(ptr, rows, cols, params);
        drop(device);
        ids
    }

    /// Runs the graph of the current step and samples each real row under `params`.
    pub(super) fn replay_graph_sample(&mut self, params: &[RowSampling]) -> Result<Vec<u32>> {
        let (ptr, vocab) = self.launch_step_graph()?;
        self.sampled_ids(ptr, self.n_real_rows, vocab, params)
    }

    /// A token drawn from each of `rows` rows of f32 logits at `ptr` under `params` (one
    /// per row), sampled on the GPU; only the ids are copied to the host.
    pub(super) fn sampled_ids(
        &mut self,
        ptr: u64,
        rows: usize,
        cols: usize,
        params: &[RowSampling],
    ) -> Result<Vec<u32>> {
        if params.len() != rows {
            return Err(Error::InvalidSettings(format!(
                "{rows} rows of logits for {} sampling rows",
                params.len()
            )));
        }
        if params.iter().all(RowSampling::is_greedy) {
            return self.greedy_ids(ptr, rows, cols);
        }
        if rows > self.sampling.rows {
            self.sync()?;
            self.sampling = SamplingBuffers::new(&self.stream, rows.next_power_of_two())?;
        }
        let buffers = &mut self.sampling;
        buffers.packed.clear();
        for row in params {
            row.pack(&mut buffers.packed);
        }
        let len = buffers.packed.len();
        let host = buffers
            .host
            .as_mut_slice()
            .map_err(cuda_err("waiting for the sampling buffer"))?;
        host[..len].copy_from_slice(&buffers.packed);
        // SAFETY: the pinned source holds `len` values and the device buffer as many;
        // the source is not rewritten before the stream is synchronised below.
        unsafe {
            cudarc::driver::result::memcpy_htod_async(
                buffers.device_ptr,
                &host[..len],
                self.stream.cu_stream(),
            )
        }
        .map_err(cuda_err("uploading the sampling parameters"))?;
        let ids = self.tensor(rows, 1, Dtype::F32)?;
        let (ids_ptr, cols_i, params_ptr) = (ids.ptr(), cols as i32, self.sampling.device_ptr);
        let mut launch = self.stream.launch_builder(&self.kernels.sample_rows);
        launch.arg(&ptr).arg(&params_ptr).arg(&ids_ptr).arg(&cols_i);
        // SAFETY: `ptr` holds rows × cols f32 logits, the parameters `rows` packed rows
        // and `ids` at least `rows` u32 slots.
        unsafe { launch.launch(per_row(rows, 1024, 0)) }
            .map_err(cuda_err("launching sample_rows"))?;
        self.ids_to_host(ids_ptr, rows)
    }

    /// The argmax of each of `rows` rows of f32 logits at `ptr`, computed on the GPU;
    /// only the ids are copied to the host.
    pub(super) fn greedy_ids(&mut self, ptr: u64, rows: usize, cols: usize) -> Result<Vec<u32>> {
        if rows == 0 {
            self.sync()?;
            return Ok(Vec::new());
        }
        let ids = self.tensor(rows, 1, Dtype::F32)?;
        // Each row's ARGMAX_PARTS partial winners, u64 each (two f32 slots).
        let parts = self.tensor(rows, 2 * ARGMAX_PARTS, Dtype::F32)?;
        let (ids_ptr, parts_ptr, cols_i) = (ids.ptr(), parts.ptr(), cols as i32);
        let mut launch = self.stream.launch_builder(&self.kernels.argmax_parts);
        launch.arg(&ptr).arg(&parts_ptr).arg(&cols_i);
        let config = LaunchConfig {
            grid_dim: (ARGMAX_PARTS as u32, rows as u32, 1),
            block_dim: (ARGMAX_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: `ptr` holds rows × cols f32 logits and `parts` rows × ARGMAX_PARTS u64s.
        unsafe { launch.launch(config) }.map_err(cuda_err("launching argmax_parts"))?;
        let mut launch = self.stream.launch_builder(&self.kernels.argmax_finish);
        launch.arg(&parts_ptr).arg(&ids_ptr);
        // SAFETY: `parts` was filled above for `rows` rows; `ids` holds `rows` u32 slots.
        unsafe { launch.launch(per_row(rows, 32, 0)) }
            .map_err(cuda_err("launching argmax_finish"))?;
        self.ids_to_host(ids_ptr, rows)
    }

    /// Copies `rows` token ids at `ids_ptr` to the host and waits for the step.
    fn ids_to_host(&mut self, ids_ptr: u64, rows: usize) -> Result<Vec<u32>> {
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
