//! A step's layout packed into one `u32` array, uploaded to the GPU in one copy.
//!
//! The kernels read token ids, positions, KV slots and block tables from device
//! memory rather than from launch arguments, so the same launches (and a captured
//! graph) serve any step of the same shape.

use crate::backend::{KvLayout, SeqChunk, StepBatch};

use crate::{Error, Result};

/// Query rows per tile of the tiled attention kernel (its PF_ROWS).
pub const TILE_ROWS: usize = 16;

/// Fewest shared keys worth a cascade tile: one key tile of the kernel (its PF_KEYS).
pub const CASCADE_MIN_KEYS: usize = 64;

/// Which decode tokens `pack` groups into cascade tiles: tokens whose sequences share
/// their first KV blocks (a cached prefix) have those keys read once for the tile by
/// `cascade_attention`, and only their own keys by the per-token kernel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CascadePlan {
    /// Most tokens per tile: [`TILE_ROWS`] / query heads per kv head. Below 2, the
    /// backend does not cascade (no grouped kernel for the model's heads, or turned off).
    pub tokens_per_tile: usize,
    /// Fewest decode tokens a step needs: the per-token launch must be the grouped
    /// kernel's unsplit one, which is what merges the cascade's part.
    pub min_decodes: usize,
    /// Most decode tokens a step may have: the size of the backend's scratch.
    pub max_decodes: usize,
}

impl CascadePlan {
    /// No cascade at all: for packing a batch only to check it.
    pub const NONE: Self = Self {
        tokens_per_tile: 0,
        min_decodes: 0,
        max_decodes: 0,
    };

    /// Whether the plan cascades any batch (tiles of at least two tokens).
    pub fn is_on(&self) -> bool {
        self.tokens_per_tile >= 2
    }

    fn applies(&self, n_decodes: usize) -> bool {
        self.is_on() && n_decodes >= self.min_decodes && n_decodes <= self.max_decodes
    }
}

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
    /// For each decode token, in token order: the keys it leaves to its cascade tile
    /// (0 for none). Set only when `n_cascade_slots` > 0.
    pub key_start: usize,
    /// Cascade tiles, `n_cascade_slots` entries of (first place in the token order,
    /// tokens, shared keys); the unused ones are zeros, so that a graph's fixed grid of
    /// `n_cascade_slots` blocks per kv head serves any step of its bucket.
    pub cascade_tiles: usize,
    pub n_cascade_slots: usize,
    pub n_cascade_tiles: usize,
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
    cascade: CascadePlan,
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
    // Decode tokens in the order of their block tables: sequences that share leading KV
    // blocks (a cached prefix) sit next to each other, the longest shared runs closest,
    // which is what the cascade tiles are cut from.
    let mut decodes: Vec<&SeqChunk> = batch.seqs.iter().filter(|s| s.query_len == 1).collect();
    decodes.sort_by(|a, b| a.block_table.cmp(&b.block_table));
    out.extend(decodes.iter().map(|s| s.query_start as u32));
    for seq in batch.seqs.iter().filter(|s| s.query_len > 1) {
        out.extend((seq.query_start..seq.query_start + seq.query_len).map(|t| t as u32));
    }
    offsets.n_decode_tokens = decodes.len();
    if cascade.applies(decodes.len()) {
        offsets.key_start = out.len();
        out.resize(out.len() + decodes.len(), 0);
        offsets.cascade_tiles = out.len();
        offsets.n_cascade_slots = decodes.len() / 2;
        out.resize(out.len() + 3 * offsets.n_cascade_slots, 0);
        let tiles = cascade_tiles(
            &decodes,
            &batch.positions,
            kv.block_size,
            cascade.tokens_per_tile,
        );
        for (i, tile) in tiles.iter().enumerate() {
            let entry = offsets.cascade_tiles + 3 * i;
            out[entry..entry + 3].copy_from_slice(&[tile.first, tile.len, tile.keys]);
            let starts = offsets.key_start + tile.first as usize;
            out[starts..starts + tile.len as usize].fill(tile.keys);
        }
        offsets.n_cascade_tiles = tiles.len();
    }
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

/// Decode tokens (places `first..first + len` of the token order) whose sequences share
/// their first `keys` keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CascadeTile {
    first: u32,
    len: u32,
    keys: u32,
}

/// Cuts `decodes` (sorted by block table) into tiles of 2 to `per_tile` neighbours that
/// share at least [`CASCADE_MIN_KEYS`] keys in whole blocks. A tile's shared keys stop
/// before each member's own last key, so that the per-token kernel always has a key of
/// its own; a neighbour that would shorten what the tile's members share starts
/// another tile instead.
fn cascade_tiles(
    decodes: &[&SeqChunk],
    positions: &[u32],
    block_size: usize,
    per_tile: usize,
) -> Vec<CascadeTile> {
    // Whole blocks before the token's own (last) key.
    let own = |s: &SeqChunk| positions[s.query_start] as usize / block_size;
    let common = |a: &SeqChunk, b: &SeqChunk| {
        let same = a
            .block_table
            .iter()
            .zip(&b.block_table)
            .take_while(|(x, y)| x == y)
            .count();
        same.min(own(a)).min(own(b))
    };
    let mut tiles = Vec::new();
    let mut i = 0;
    while i < decodes.len() {
        let mut shared = 0;
        let mut end = i + 1;
        while end < decodes.len() && end - i < per_tile {
            let with = common(decodes[i], decodes[end]);
            if with * block_size < CASCADE_MIN_KEYS || (end > i + 1 && with < shared) {
                break;
            }
            shared = with;
            end += 1;
        }
        if end - i >= 2 {
            tiles.push(CascadeTile {
                first: i as u32,
                len: (end - i) as u32,
                keys: (shared * block_size) as u32,
            });
        }
        i = end;
    }
    tiles
}

#[cfg(test)]
mod tests {
    use super::*;

    const KV: KvLayout = KvLayout {
        n_blocks: 8,
        block_size: 4,
    };

    const NO_CASCADE: CascadePlan = CascadePlan::NONE;

    /// Tiles of up to 4 tokens (a group of 4 query heads), from 2 decode tokens on.
    const CASCADE: CascadePlan = CascadePlan {
        tokens_per_tile: 4,
        min_decodes: 2,
        max_decodes: 64,
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
        let o = pack(&two_seqs(), KV, 100, NO_CASCADE, &mut out).unwrap();
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
            let o = pack(&batch, kv, 100, CASCADE, &mut out).unwrap();
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
                o.key_start,
                o.cascade_tiles,
                o.n_cascade_slots,
                o.block_tables,
            ]
        };
        assert_eq!(a.n_cascade_slots, 1);
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
        let o = pack(&batch, kv, 100, NO_CASCADE, &mut out).unwrap();
        assert_eq!(out[o.token_order..o.token_order + 6], [1, 3, 0, 2, 4, 5]);
        assert_eq!(o.n_decode_tokens, 4);
    }

    /// Decode sequences with the given block tables, each at the last slot of its table
    /// but `short` slots (block size 16), and a prefill chunk after them.
    fn decodes_with_tables(tables: &[Vec<u32>], short: usize) -> StepBatch {
        let mut batch = StepBatch::default();
        for table in tables {
            let position = table.len() * 16 - 1 - short;
            batch.push_seq(&[1], position, table.clone(), 16, true);
        }
        batch.push_seq(&[2, 3], 0, vec![99], 16, true);
        batch
    }

    fn packed_cascade(batch: &StepBatch, plan: CascadePlan) -> (StepOffsets, Vec<u32>) {
        let kv = KvLayout {
            n_blocks: 128,
            block_size: 16,
        };
        let mut out = Vec::new();
        let o = pack(batch, kv, 100, plan, &mut out).unwrap();
        (o, out)
    }

    #[test]
    fn cascade_tiles_take_neighbours_that_share_leading_blocks() {
        let prefix: Vec<u32> = (0..8).collect(); // 128 keys
        let with = |own: u32| [prefix.clone(), vec![own]].concat();
        let tables = vec![
            with(50),                                       // 0: prefix A
            vec![60, 61, 62, 63, 64],                       // 1: shares nothing
            with(51),                                       // 2: prefix A
            with(52),                                       // 3: prefix A
            [&prefix[..4], &[70, 71, 72, 73, 74]].concat(), // 4: only 4 blocks of A
            with(53),                                       // 5: prefix A
            with(54),                                       // 6: prefix A
        ];
        let (o, out) = packed_cascade(&decodes_with_tables(&tables, 0), CASCADE);
        // Sorted by table: the five full sharers, then 4 (it sorts after them), then 1.
        let order = &out[o.token_order..o.token_order + 7];
        assert_eq!(order, [0, 2, 3, 5, 6, 4, 1]);
        assert_eq!(o.n_cascade_slots, 3);
        assert_eq!(o.n_cascade_tiles, 2);
        let tiles = &out[o.cascade_tiles..o.cascade_tiles + 9];
        // Four full sharers (tile size 4), then the fifth with token 4: 4 blocks shared.
        assert_eq!(tiles, [0, 4, 128, 4, 2, 64, 0, 0, 0]);
        let starts = &out[o.key_start..o.key_start + 7];
        assert_eq!(starts, [128, 128, 128, 128, 64, 64, 0]);
        // The prefill chunk's token keeps its place after the decode tokens.
        assert_eq!(out[o.token_order + 7..o.token_order + 9], [7, 8]);
    }

    #[test]
    fn cascade_leaves_each_token_its_own_last_key() {
        // Both sequences sit at the first slot of their 9th block, which they share: the
        // tile stops before it, at 8 blocks, though 9 blocks are the same.
        let table: Vec<u32> = (0..9).collect();
        let batch = decodes_with_tables(&[table.clone(), table], 15);
        let (o, out) = packed_cascade(&batch, CASCADE);
        assert_eq!(out[o.cascade_tiles..o.cascade_tiles + 3], [0, 2, 128]);
        // Fewer shared keys than one key tile of the kernel: no tile.
        let short = decodes_with_tables(&[vec![0, 1, 2, 3, 4], vec![0, 1, 2, 9, 9]], 0);
        let (o, out) = packed_cascade(&short, CASCADE);
        assert_eq!(o.n_cascade_tiles, 0);
        assert_eq!(out[o.key_start..o.key_start + 2], [0, 0]);
    }

    #[test]
    fn cascade_only_for_the_batches_its_plan_covers() {
        let table: Vec<u32> = (0..9).collect();
        let batch = decodes_with_tables(&[table.clone(), table.clone(), table], 0);
        for (plan, slots) in [
            (CASCADE, 1),
            (NO_CASCADE, 0),
            (
                CascadePlan {
                    min_decodes: 4,
                    ..CASCADE
                },
                0,
            ),
            (
                CascadePlan {
                    max_decodes: 2,
                    ..CASCADE
                },
                0,
            ),
            (
                CascadePlan {
                    tokens_per_tile: 1,
                    ..CASCADE
                },
                0,
            ),
        ] {
            let (o, _) = packed_cascade(&batch, plan);
            assert_eq!(o.n_cascade_slots, slots, "{plan:?}");
        }
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
        let o = pack(&batch, kv, 100, NO_CASCADE, &mut out).unwrap();
        let tiles = out[o.tiles..o.tiles + 2 * o.n_tiles].to_vec();
        assert_eq!(tiles, vec![0, 16, 16, 16, 32, 8]);
        let mut decode = StepBatch::default();
        decode.push_seq(&[2], 7, vec![3], 16, true);
        assert!(
            !pack(&decode, kv, 100, NO_CASCADE, &mut out)
                .unwrap()
                .has_prefill
        );
    }

    #[test]
    fn refuses_what_would_read_or_write_outside_the_pool() {
        let mut out = Vec::new();
        let check = |batch: StepBatch, vocab: usize| {
            let mut out = Vec::new();
            pack(&batch, KV, vocab, NO_CASCADE, &mut out)
                .unwrap_err()
                .to_string()
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
        assert!(pack(&two_seqs(), KV, 100, NO_CASCADE, &mut out).is_ok());
    }
}
