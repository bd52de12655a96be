//! One request's tokens and its place in the KV pool.

use crate::kv::{BlockHash, BlockId, TenantSalt, block_hashes};

/// Identifies a sequence for the lifetime of the engine.
pub type SeqId = u64;

/// A request being generated: prompt plus output tokens, and the blocks holding their KV.
#[derive(Debug, Clone)]
pub struct Sequence {
    pub id: SeqId,
    pub salt: TenantSalt,
    /// Prompt followed by every generated token.
    pub tokens: Vec<u32>,
    pub n_prompt: usize,
    /// Leading tokens whose KV is in `blocks`.
    pub n_computed: usize,
    pub blocks: Vec<BlockId>,
    /// Hashes of the full blocks of `tokens`.
    pub(crate) hashes: Vec<BlockHash>,
    /// Leading blocks registered in (or taken from) the prefix cache.
    pub(crate) n_registered: usize,
    /// A block could not be registered, so later ones cannot be either.
    pub(crate) cache_chain_broken: bool,
    /// Prompt tokens that the prefix cache supplied at first admission.
    pub n_cached_prompt: usize,
    pub(crate) admitted_before: bool,
}

impl Sequence {
    pub fn new(id: SeqId, salt: TenantSalt, prompt: Vec<u32>) -> Self {
        Self {
            id,
            salt,
            n_prompt: prompt.len(),
            tokens: prompt,
            n_computed: 0,
            blocks: Vec::new(),
            hashes: Vec::new(),
            n_registered: 0,
            cache_chain_broken: false,
            n_cached_prompt: 0,
            admitted_before: false,
        }
    }

    /// The generated tokens.
    pub fn output(&self) -> &[u32] {
        &self.tokens[self.n_prompt..]
    }

    /// Tokens still without KV (1 for a sequence that is decoding).
    pub fn n_uncomputed(&self) -> usize {
        self.tokens.len() - self.n_computed
    }

    pub(crate) fn update_hashes(&mut self, block_size: usize) {
        block_hashes(&self.salt, &self.tokens, block_size, &mut self.hashes);
    }

    /// Hashes of full blocks this sequence has yet to compute and register.
    pub(crate) fn pending_block_hashes(
        &self,
        block_size: usize,
    ) -> impl Iterator<Item = BlockHash> + '_ {
        let first = self.n_registered.max(self.n_computed / block_size);
        self.hashes.iter().skip(first).copied()
    }

    /// Forgets the KV (after its blocks were released), keeping the tokens for recompute.
    pub(crate) fn reset_kv(&mut self) {
        self.blocks.clear();
        self.n_computed = 0;
        self.n_registered = 0;
        self.cache_chain_broken = false;
    }
}
