//! A step's layout packed into one `u32` array, uploaded to the GPU in one copy.
//!
//! The kernels read token ids, positions, KV slots and block tables from device
//! memory rather than from launch arguments, so the same launches (and a captured
//! graph) serve any step of the same shape.

use crate::backend::{KvLayout, StepBatch};
use crate::{Error, Result};

/// Offsets (in `u32`s) of each part of the packed step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepOffsets {
    pub token_ids: usize,
    pub positions: usize,
    pub slot_mapping: usize,
    /// For each token, the index of its sequence.
    pub token_seq: usize,
    /// For each sequence, where its block table starts in `block_tables`.
    pub seq_table_offset: usize,
    /// The rows whose logits are wanted (each sequence's last query token).
    pub logit_rows: usize,
    pub block_tables: usize,
    pub n_tokens: usize,
    pub n_logit_rows: usize,
    pub len: usize,
}

/// Checks `batch` against the model and the KV pool, and packs it into `out`.
pub fn pack(
    batch: &StepBatch,
    kv: KvLayout,
    vocab_size: usize,
    out: &mut Vec<u32>,
) -> Result<StepOffsets> {
    let n = batch.n_tokens();
    let capacity = (kv.n_blocks * kv.block_size) as u32;
    let bad = |message: String| Err(Error::InvalidSettings(message));
    if batch.positions.len() != n || batch.slot_mapping.len() != n {
        return bad("the step's positions and slots do not match its tokens".into());
    }
    if let Some(&id) = batch
        .token_ids
        .iter()
        .find(|&&id| id as usize >= vocab_size)
    {
        return bad(format!(
            "token id {id} is outside the vocabulary of {vocab_size}"
        ));
    }
    if let Some(&slot) = batch.slot_mapping.iter().find(|&&s| s >= capacity) {
        return bad(format!(
            "kv slot {slot} is outside the pool of {capacity} slots"
        ));
    }
    out.clear();
    let mut offsets = StepOffsets {
        n_tokens: n,
        token_ids: 0,
        positions: n,
        slot_mapping: 2 * n,
        token_seq: 3 * n,
        seq_table_offset: 4 * n,
        ..StepOffsets::default()
    };
    out.extend_from_slice(&batch.token_ids);
    out.extend_from_slice(&batch.positions);
    out.extend_from_slice(&batch.slot_mapping);
    out.resize(4 * n, u32::MAX);
    let mut table_len = 0usize;
    for (index, seq) in batch.seqs.iter().enumerate() {
        let end = seq.query_start + seq.query_len;
        if end > n || seq.context_len > seq.block_table.len() * kv.block_size {
            return bad(format!(
                "sequence {index} of the step does not fit its tokens or its block table"
            ));
        }
        if let Some(&block) = seq.block_table.iter().find(|&&b| b as usize >= kv.n_blocks) {
            return bad(format!(
                "kv block {block} is outside the pool of {}",
                kv.n_blocks
            ));
        }
        for t in seq.query_start..end {
            // A token may only look at positions its block table covers.
            if batch.positions[t] as usize >= seq.context_len {
                return bad(format!(
                    "token {t} is past its sequence's context of {}",
                    seq.context_len
                ));
            }
            out[3 * n + t] = index as u32;
        }
        out.push(table_len as u32);
        table_len += seq.block_table.len();
    }
    if out[3 * n..4 * n].contains(&u32::MAX) {
        return bad("a token of the step belongs to no sequence".into());
    }
    offsets.logit_rows = out.len();
    for seq in batch
        .seqs
        .iter()
        .filter(|s| s.wants_logits && s.query_len > 0)
    {
        out.push((seq.query_start + seq.query_len - 1) as u32);
    }
    offsets.n_logit_rows = out.len() - offsets.logit_rows;
    offsets.block_tables = out.len();
    for seq in &batch.seqs {
        out.extend_from_slice(&seq.block_table);
    }
    offsets.len = out.len();
    Ok(offsets)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KV: KvLayout = KvLayout {
        n_blocks: 8,
        block_size: 4,
    };

    fn two_seqs() -> StepBatch {
        let mut batch = StepBatch::default();
        // A 3-token prefill chunk after 4 cached tokens, then a decode token.
        batch.push_seq(&[5, 6, 7], 4, vec![2, 5], 4, true);
        batch.push_seq(&[9], 2, vec![7], 4, true);
        batch
    }

    #[test]
    fn packs_tokens_sequences_and_block_tables() {
        let mut out = Vec::new();
        let o = pack(&two_seqs(), KV, 100, &mut out).unwrap();
        let part = |start: usize, len: usize| out[start..start + len].to_vec();
        assert_eq!(part(o.token_ids, 4), vec![5, 6, 7, 9]);
        assert_eq!(part(o.positions, 4), vec![4, 5, 6, 2]);
        assert_eq!(part(o.slot_mapping, 4), vec![20, 21, 22, 30]);
        assert_eq!(part(o.token_seq, 4), vec![0, 0, 0, 1]);
        assert_eq!(part(o.seq_table_offset, 2), vec![0, 2]);
        assert_eq!(part(o.logit_rows, o.n_logit_rows), vec![2, 3]);
        assert_eq!(part(o.block_tables, 3), vec![2, 5, 7]);
        assert_eq!(o.len, out.len());
    }

    #[test]
    fn refuses_what_would_read_or_write_outside_the_pool() {
        let mut out = Vec::new();
        let check = |batch: StepBatch, vocab: usize| {
            let mut out = Vec::new();
            pack(&batch, KV, vocab, &mut out).unwrap_err().to_string()
        };
        assert!(check(two_seqs(), 9).contains("vocabulary"));
        let mut batch = two_seqs();
        batch.seqs[1].block_table = vec![8];
        assert!(check(batch, 100).contains("kv block 8"));
        let mut batch = two_seqs();
        batch.slot_mapping[0] = 32;
        assert!(check(batch, 100).contains("kv slot 32"));
        let mut batch = two_seqs();
        batch.seqs[0].context_len = 5;
        assert!(check(batch, 100).contains("past its sequence"));
        assert!(pack(&two_seqs(), KV, 100, &mut out).is_ok());
    }
}
