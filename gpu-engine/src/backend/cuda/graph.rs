//! Decode steps replayed from CUDA graphs, one graph per batch-size bucket.
//!
//! A decode step launches some fifteen kernels per layer; at batch 1 the launch
//! overhead alone is close to the time the GPU needs to read the weights. A graph
//! replays the whole step with one launch. Graphs are fixed in shape, so a decode batch
//! is padded up to its bucket with dummy sequences that attend to a scratch KV block
//! the scheduler never hands out; everything that changes between steps (tokens,
//! positions, slots, block tables) is read from the step's layout buffer, whose
//! address stays put. A bucket is captured on its second decode step, once the first
//! has run eagerly and filled the buffer pool, so the capture allocates nothing.

use std::collections::{HashMap, HashSet};

use cudarc::driver::CudaGraph;

use crate::backend::StepBatch;

/// Decode batch sizes that get their own graph; larger batches run eagerly.
pub const BUCKETS: [usize; 12] = [1, 2, 4, 8, 16, 32, 48, 64, 96, 128, 192, 256];

/// The bucket a decode-only batch pads to, or `None` for a step that runs eagerly
/// (prefill chunks, or more sequences than the largest bucket).
pub fn bucket_for(batch: &StepBatch) -> Option<usize> {
    let n = batch.seqs.len();
    let decode_only = n > 0
        && batch.n_tokens() == n
        && batch
            .seqs
            .iter()
            .all(|s| s.query_len == 1 && s.wants_logits);
    if !decode_only {
        return None;
    }
    BUCKETS.iter().copied().find(|&b| b >= n)
}

/// `batch` padded to `bucket` sequences with one-token dummies at position 0 of
/// `scratch_block`.
pub fn padded(
    batch: &StepBatch,
    bucket: usize,
    scratch_block: u32,
    block_size: usize,
) -> StepBatch {
    let mut padded = batch.clone();
    for _ in batch.seqs.len()..bucket {
        padded.push_seq(&[0], 0, vec![scratch_block], block_size, true);
    }
    padded
}

/// A captured step: the graph and where it leaves its logits.
pub struct StepGraph {
    pub graph: CudaGraph,
    pub logits_ptr: u64,
    pub vocab: usize,
}

impl std::fmt::Debug for StepGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepGraph")
            .field("vocab", &self.vocab)
            .finish_non_exhaustive()
    }
}

// SAFETY: graphs are not internally synchronised, so they must not be used from two
// threads at once; the backend that owns them is used by one thread at a time (the
// trait takes `&mut self`), which is all moving it between threads needs.
unsafe impl Send for StepGraph {}

/// The graphs of one backend, and the buckets that have run eagerly once.
#[derive(Default)]
pub struct Graphs {
    pub by_bucket: HashMap<usize, StepGraph>,
    pub warm: HashSet<usize>,
}

impl std::fmt::Debug for Graphs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut buckets: Vec<_> = self.by_bucket.keys().collect();
        buckets.sort();
        f.debug_struct("Graphs").field("buckets", &buckets).finish()
    }
}

impl Graphs {
    /// Forgets every graph: they point at buffers that are about to be freed.
    pub fn clear(&mut self) {
        self.by_bucket.clear();
        self.warm.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(n: usize) -> StepBatch {
        let mut batch = StepBatch::default();
        for i in 0..n {
            batch.push_seq(&[7], 5, vec![i as u32], 16, true);
        }
        batch
    }

    #[test]
    fn only_decode_batches_get_a_bucket() {
        assert_eq!(bucket_for(&decode(1)), Some(1));
        assert_eq!(bucket_for(&decode(3)), Some(4));
        assert_eq!(bucket_for(&decode(33)), Some(48));
        assert_eq!(bucket_for(&decode(256)), Some(256));
        assert_eq!(bucket_for(&decode(257)), None);
        assert_eq!(bucket_for(&StepBatch::default()), None);
        let mut prefill = decode(2);
        prefill.push_seq(&[1, 2], 0, vec![9], 16, true);
        assert_eq!(bucket_for(&prefill), None);
        let mut no_logits = decode(2);
        no_logits.seqs[0].wants_logits = false;
        assert_eq!(bucket_for(&no_logits), None);
    }

    #[test]
    fn padding_adds_dummies_on_the_scratch_block() {
        let batch = padded(&decode(3), 4, 99, 16);
        assert_eq!(batch.seqs.len(), 4);
        assert_eq!(&batch.token_ids[..3], &decode(3).token_ids[..]);
        assert_eq!(batch.slot_mapping[3], 99 * 16);
        assert_eq!(batch.seqs[3].block_table, vec![99]);
        assert_eq!(batch.positions[3], 0);
    }
}
