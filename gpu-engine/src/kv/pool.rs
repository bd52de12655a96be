//! The block pool: allocation with reference counts, and the prefix cache over freed blocks.
//!
//! A full block can be registered under its [`BlockHash`]. Registered blocks stay
//! findable after their last user releases them, and are only reclaimed when a fresh
//! block is needed: least recently used first, and only blocks that no other cached
//! block continues (leaves), so a sequence's tail goes before the prefix it shares
//! with others. Because a cached block's parent is therefore always cached too, a
//! lookup checks each candidate's parent block, salt and tokens: a hash collision can
//! make a lookup miss, never return KV computed for other tokens.

use std::collections::{BTreeSet, HashMap};

use super::hash::{BlockHash, TenantSalt};

/// Index of a block in the KV pool.
pub type BlockId = u32;

#[derive(Debug)]
struct CachedBlock {
    hash: BlockHash,
    parent: Option<BlockId>,
    salt: TenantSalt,
    tokens: Box<[u32]>,
}

#[derive(Debug, Default)]
struct BlockState {
    ref_count: u32,
    cached: Option<CachedBlock>,
    n_cached_children: u32,
    last_used: u64,
}

/// Allocation and prefix caching for `n_blocks` blocks of `block_size` tokens.
#[derive(Debug)]
pub struct BlockPool {
    block_size: usize,
    blocks: Vec<BlockState>,
    /// Free blocks holding nothing worth keeping.
    free_uncached: Vec<BlockId>,
    /// Free cached leaf blocks by last use: the eviction order.
    evictable: BTreeSet<(u64, BlockId)>,
    by_hash: HashMap<BlockHash, BlockId>,
    clock: u64,
    n_free: usize,
}

impl BlockPool {
    pub fn new(n_blocks: usize, block_size: usize) -> Self {
        Self {
            block_size,
            blocks: (0..n_blocks).map(|_| BlockState::default()).collect(),
            // Reversed so that blocks are handed out from id 0 upwards.
            free_uncached: (0..n_blocks as BlockId).rev().collect(),
            evictable: BTreeSet::new(),
            by_hash: HashMap::new(),
            clock: 0,
            n_free: n_blocks,
        }
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    pub fn n_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// Blocks no sequence holds (cached or not); all of them can be allocated.
    pub fn n_free(&self) -> usize {
        self.n_free
    }

    /// Blocks currently registered in the prefix cache.
    pub fn n_cached(&self) -> usize {
        self.by_hash.len()
    }

    /// Takes `n` fresh blocks, evicting cached ones if needed; `None` (and nothing taken)
    /// if fewer than `n` are free.
    pub fn allocate(&mut self, n: usize) -> Option<Vec<BlockId>> {
        if n > self.n_free {
            return None;
        }
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let id = match self.free_uncached.pop() {
                Some(id) => id,
                None => self.evict_one()?,
            };
            let state = &mut self.blocks[id as usize];
            state.ref_count = 1;
            self.n_free -= 1;
            out.push(id);
        }
        Some(out)
    }

    fn evict_one(&mut self) -> Option<BlockId> {
        let (_, id) = self.evictable.pop_first()?;
        let cached = self.blocks[id as usize].cached.take()?;
        self.by_hash.remove(&cached.hash);
        if let Some(parent) = cached.parent {
            let state = &mut self.blocks[parent as usize];
            state.n_cached_children -= 1;
            if state.ref_count == 0 && state.n_cached_children == 0 {
                self.evictable.insert((state.last_used, parent));
            }
        }
        Some(id)
    }

    /// Finds the longest cached prefix of `tokens` whose full blocks hash to `hashes`,
    /// takes a reference on each matched block and returns them in order.
    pub fn lookup(
        &mut self,
        salt: &TenantSalt,
        tokens: &[u32],
        hashes: &[BlockHash],
    ) -> Vec<BlockId> {
        let mut matched: Vec<BlockId> = Vec::new();
        for (i, hash) in hashes.iter().enumerate() {
            let Some(&id) = self.by_hash.get(hash) else {
                break;
            };
            let block_tokens = &tokens[i * self.block_size..(i + 1) * self.block_size];
            let verified = self.blocks[id as usize].cached.as_ref().is_some_and(|c| {
                c.parent == matched.last().copied() && c.salt == *salt && *c.tokens == *block_tokens
            });
            if !verified {
                break;
            }
            self.acquire(id);
            matched.push(id);
        }
        matched
    }

    fn acquire(&mut self, id: BlockId) {
        let state = &mut self.blocks[id as usize];
        if state.ref_count == 0 {
            self.evictable.remove(&(state.last_used, id));
            self.n_free -= 1;
        }
        state.ref_count += 1;
    }

    /// Registers a full block that a sequence holds, so that later lookups find it.
    /// Returns false if it stays private: its parent is not cached, or another block
    /// already holds the same hash.
    pub fn register(
        &mut self,
        id: BlockId,
        hash: BlockHash,
        parent: Option<BlockId>,
        salt: &TenantSalt,
        tokens: &[u32],
    ) -> bool {
        if self.blocks[id as usize].cached.is_some() {
            return true;
        }
        if self.by_hash.contains_key(&hash) {
            return false;
        }
        if let Some(parent) = parent {
            let state = &mut self.blocks[parent as usize];
            if state.cached.is_none() {
                return false;
            }
            state.n_cached_children += 1;
        }
        self.by_hash.insert(hash, id);
        self.blocks[id as usize].cached = Some(CachedBlock {
            hash,
            parent,
            salt: *salt,
            tokens: tokens.into(),
        });
        true
    }

    /// Drops one reference on each block. Blocks are released from the last to the first
    /// so that a sequence's tail counts as less recently used than its prefix.
    pub fn release(&mut self, blocks: &[BlockId]) {
        for &id in blocks.iter().rev() {
            self.clock += 1;
            let state = &mut self.blocks[id as usize];
            debug_assert!(state.ref_count > 0, "block {id} released too often");
            state.ref_count = state.ref_count.saturating_sub(1);
            if state.ref_count > 0 {
                continue;
            }
            self.n_free += 1;
            state.last_used = self.clock;
            if state.cached.is_none() {
                self.free_uncached.push(id);
            } else if state.n_cached_children == 0 {
                self.evictable.insert((state.last_used, id));
            }
        }
    }

    /// Checks every internal invariant; for tests and debug assertions.
    pub fn check_invariants(&self) -> Result<(), String> {
        let free = self.blocks.iter().filter(|b| b.ref_count == 0).count();
        if free != self.n_free {
            return Err(format!(
                "n_free {} but {free} blocks unreferenced",
                self.n_free
            ));
        }
        for (id, state) in self.blocks.iter().enumerate() {
            let id = id as BlockId;
            let children = self
                .blocks
                .iter()
                .filter(|b| b.cached.as_ref().is_some_and(|c| c.parent == Some(id)))
                .count() as u32;
            if children != state.n_cached_children {
                return Err(format!(
                    "block {id} counts {} children, has {children}",
                    state.n_cached_children
                ));
            }
            let in_free_list = self.free_uncached.contains(&id);
            let in_evictable = self.evictable.contains(&(state.last_used, id));
            let free = state.ref_count == 0;
            if in_free_list != (free && state.cached.is_none()) {
                return Err(format!("block {id} free-list membership is wrong"));
            }
            if in_evictable != (free && state.cached.is_some() && children == 0) {
                return Err(format!("block {id} evictable membership is wrong"));
            }
            if let Some(c) = &state.cached {
                if self.by_hash.get(&c.hash) != Some(&id) {
                    return Err(format!("block {id} is cached but not indexed"));
                }
                if let Some(p) = c.parent
                    && self.blocks[p as usize].cached.is_none()
                {
                    return Err(format!("block {id} is cached but its parent {p} is not"));
                }
                if children > 0
                    && free
                    && self.blocks.iter().any(|b| {
                        b.ref_count > 0 && b.cached.as_ref().is_some_and(|c| c.parent == Some(id))
                    })
                {
                    return Err(format!("block {id} is free but a held block continues it"));
                }
            }
        }
        if self.evictable.len() + self.free_uncached.len() > self.n_free {
            return Err("more blocks listed as free than are free".into());
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "pool_tests.rs"]
mod tests;
