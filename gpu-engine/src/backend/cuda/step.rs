//! A step's layout packed into one `u32` array, uploaded to the GPU in one copy.
//!
//! The kernels read token ids, positions, KV slots and block tables from device
//! memory rather than from launch arguments, so the same launches (and a captured
//! graph) serve any step of the same shape.

use crate::backend::{KvLayout, SeqChunk, StepBatch};

/// Query rows per tile of the prefill attention kernel (its PF_ROWS).
pub const TILE_ROWS: usize = 16;
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
    /// Query tiles of the prefill attention kernel: (first token, rows) pairs, at most
    /// [`TILE_ROWS`] consecutive tokens of one sequence each, for the sequences with
    /// more than one query token.
    pub tiles: usize,
    pub n_tiles: usize,
    /// Every token index, those of one-token (decode) sequences first: the per-token
    /// attention kernel takes the first `n_decode_tokens` when the prefill tiles go to
    /// the tiled kernel, and all of them otherwise.
    pub token_order: usize,
    pub n_decode_tokens: usize,
    /// Whether some sequence has more than one query token (a prefill chunk).
    pub has_prefill: bool,
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
    // Everything a captured decode graph reads lies before the block tables, whose
    // length changes from step to step: its offsets depend only on the bucket size.
    offsets.token_order = out.len();
    // Decode tokens whose sequences start with the same KV block (a cached prefix) go
    // next to each other: the attention blocks that read those keys then run at the same
    // time, and all but the first find them in L2.
    let mut decodes: Vec<&SeqChunk> = batch.seqs.iter().filter(|s| s.query_len == 1).collect();
    decodes.sort_by_key(|s| s.block_table.first().copied().unwrap_or(u32::MAX));
    out.extend(decodes.iter().map(|s| s.query_start as u32));
    for seq in batch.seqs.iter().filter(|s| s.query_len > 1) {
        out.extend((seq.query_start..seq.query_start + seq.query_len).map(|t| t as u32));
    }
    offsets.n_decode_tokens = decodes.len();
    offsets.block_tables = out.len();
    for seq in &batch.seqs {
        out.extend_from_slice(&seq.block_table);
    }
    offsets.tiles = out.len();
    for seq in batch.seqs.iter().filter(|s| s.query_len > 1) {
        for start in (0..seq.query_len).step_by(TILE_ROWS) {
            let rows = (seq.query_len - start).min(TILE_ROWS);
            out.extend_from_slice(&[(seq.query_start + start) as u32, rows as u32]);
        }
    }
    offsets.n_tiles = (out.len() - offsets.tiles) / 2;
    offsets.has_prefill = batch.seqs.iter().any(|s| s.query_len > 1);
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
        assert_eq!(part(o.tiles, 2 * o.n_tiles), vec![0, 3]);
        assert!(o.has_prefill);
        assert_eq!(part(o.token_order, 4), vec![3, 0, 1, 2]);
        assert_eq!(o.n_decode_tokens, 1);
        assert_eq!(o.len, out.len());
    }

    #[test]
    fn decode_layout_offsets_do_not_move_with_block_tables() {
        // A graph captured for one decode step is replayed for later ones, whose block
        // tables are longer: every part it reads must stay where it was.
        let kv = KvLayout {
            n_blocks: 16,
            block_size: 4,
        };
        let decode = |table_len: u32| {
            let mut batch = StepBatch::default();
            for s in 0..3 {
                let table = (s * 5..s * 5 + table_len).collect();
                batch.push_seq(&[1], table_len as usize * 4 - 1, table, 4, true);
            }
            let mut out = Vec::new();
            let o = pack(&batch, kv, 100, &mut out).unwrap();
            (o, out[o.token_order..o.token_order + 3].to_vec())
        };
        let ((a, order_a), (b, order_b)) = (decode(1), decode(4));
        assert_eq!(order_a, vec![0, 1, 2]);
        assert_eq!(order_a, order_b);
        let fixed = |o: StepOffsets| {
            [
                o.token_ids,
                o.positions,
                o.slot_mapping,
                o.token_seq,
                o.seq_table_offset,
                o.logit_rows,
                o.token_order,
                o.block_tables,
            ]
        };
        assert_eq!(fixed(a), fixed(b));
    }

    #[test]
    fn decode_tokens_sharing_a_first_block_are_ordered_together() {
        let kv = KvLayout {
            n_blocks: 16,
            block_size: 4,
        };
        let mut batch = StepBatch::default();
        // Sequences 0 and 2 share their first block (a cached prefix), 1 and 3 another.
        for (s, first) in [9u32, 4, 9, 4].into_iter().enumerate() {
            batch.push_seq(&[1], 5, vec![first, 10 + s as u32], 4, true);
        }
        batch.push_seq(&[2, 3], 0, vec![15], 4, true);
        let mut out = Vec::new();
        let o = pack(&batch, kv, 100, &mut out).unwrap();
        assert_eq!(out[o.token_order..o.token_order + 6], [1, 3, 0, 2, 4, 5]);
        assert_eq!(o.n_decode_tokens, 4);
    }

    #[test]
    fn long_chunks_split_into_tiles() {
        let mut batch = StepBatch::default();
        batch.push_seq(&[1; 40], 0, vec![0, 1, 2], 16, true);
        batch.push_seq(&[2], 7, vec![3], 16, true);
        let mut out = Vec::new();
        let kv = KvLayout {
            n_blocks: 4,
            block_size: 16,
        };
        let o = pack(&batch, kv, 100, &mut out).unwrap();
        let tiles = out[o.tiles..o.tiles + 2 * o.n_tiles].to_vec();
        assert_eq!(tiles, vec![0, 16, 16, 16, 32, 8]);
        let mut decode = StepBatch::default();
        decode.push_seq(&[2], 7, vec![3], 16, true);
        assert!(!pack(&decode, kv, 100, &mut out).unwrap().has_prefill);
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
