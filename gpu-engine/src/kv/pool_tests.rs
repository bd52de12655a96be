//! Unit tests and property tests of the block pool.

use proptest::prelude::*;

use super::*;
use crate::kv::hash::block_hashes;

const BS: usize = 2;

fn hashes(salt: &TenantSalt, tokens: &[u32]) -> Vec<BlockHash> {
    let mut out = Vec::new();
    block_hashes(salt, tokens, BS, &mut out);
    out
}

/// Allocates and registers a sequence of full blocks the way the scheduler does.
fn fill(pool: &mut BlockPool, salt: &TenantSalt, tokens: &[u32]) -> Vec<BlockId> {
    let hs = hashes(salt, tokens);
    let mut blocks = pool.lookup(salt, tokens, &hs);
    let fresh = pool.allocate(hs.len() - blocks.len()).unwrap();
    for id in fresh {
        let i = blocks.len();
        let parent = blocks.last().copied();
        pool.register(id, hs[i], parent, salt, &tokens[i * BS..(i + 1) * BS]);
        blocks.push(id);
    }
    blocks
}

#[test]
fn allocation_and_release_balance() {
    let mut pool = BlockPool::new(4, BS);
    let a = pool.allocate(3).unwrap();
    assert_eq!(pool.n_free(), 1);
    assert!(pool.allocate(2).is_none());
    assert_eq!(pool.n_free(), 1, "a failed allocation takes nothing");
    pool.release(&a);
    assert_eq!(pool.n_free(), 4);
    pool.check_invariants().unwrap();
}

#[test]
fn released_blocks_are_found_again_and_shared() {
    let salt = TenantSalt::derive(b"t");
    let mut pool = BlockPool::new(8, BS);
    let tokens = [1, 2, 3, 4, 5, 6];
    let first = fill(&mut pool, &salt, &tokens);
    pool.release(&first);
    let again = pool.lookup(&salt, &tokens, &hashes(&salt, &tokens));
    assert_eq!(again, first);
    // A second sequence sharing two blocks gets the same ids while the first holds them.
    let other = [1, 2, 3, 4, 9, 9];
    let shared = pool.lookup(&salt, &other, &hashes(&salt, &other));
    assert_eq!(shared, first[..2]);
    pool.release(&again);
    pool.release(&shared);
    assert_eq!(pool.n_free(), 8);
    pool.check_invariants().unwrap();
}

#[test]
fn other_tenant_never_matches() {
    let (a, b) = (TenantSalt::derive(b"a"), TenantSalt::derive(b"b"));
    let mut pool = BlockPool::new(8, BS);
    let tokens = [1, 2, 3, 4];
    let blocks = fill(&mut pool, &a, &tokens);
    assert!(pool.lookup(&b, &tokens, &hashes(&b, &tokens)).is_empty());
    // Even a hash that matches (as a collision would) is refused on the salt.
    assert!(pool.lookup(&b, &tokens, &hashes(&a, &tokens)).is_empty());
    pool.release(&blocks);
}

#[test]
fn hash_collision_is_caught_by_token_comparison() {
    let salt = TenantSalt::default();
    let mut pool = BlockPool::new(4, BS);
    let id = pool.allocate(1).unwrap()[0];
    let real = [7, 8];
    let claimed = [1, 2];
    // Register the block under the hash of other tokens, as a collision would.
    pool.register(id, hashes(&salt, &claimed)[0], None, &salt, &real);
    assert!(
        pool.lookup(&salt, &claimed, &hashes(&salt, &claimed))
            .is_empty()
    );
    pool.release(&[id]);
    pool.check_invariants().unwrap();
}

#[test]
fn child_of_another_parent_is_not_matched() {
    let salt = TenantSalt::default();
    let mut pool = BlockPool::new(6, BS);
    let a = fill(&mut pool, &salt, &[1, 2, 3, 4]);
    let b = fill(&mut pool, &salt, &[5, 6]);
    // A block holding [3, 4] whose parent is b[0], registered under a hash chain of a.
    let stray = pool.allocate(1).unwrap()[0];
    let wanted = [5, 6, 3, 4];
    let hs = hashes(&salt, &wanted);
    pool.release(&a);
    assert!(pool.register(stray, hs[1], Some(a[0]), &salt, &[3, 4]));
    let found = pool.lookup(&salt, &wanted, &hs);
    assert_eq!(found, b, "the second block's parent is a[0], not b[0]");
    pool.release(&found);
    pool.release(&b);
    pool.release(&[stray]);
    pool.check_invariants().unwrap();
}

#[test]
fn eviction_takes_tails_before_shared_prefixes() {
    let salt = TenantSalt::default();
    let mut pool = BlockPool::new(4, BS);
    let one = fill(&mut pool, &salt, &[1, 1, 2, 2]);
    pool.release(&one);
    let two = fill(&mut pool, &salt, &[1, 1, 3, 3]);
    pool.release(&two);
    assert_eq!(pool.n_cached(), 3);
    // Three blocks in use: the free uncached one, then the oldest leaf ([2, 2]), then [3, 3].
    let taken = pool.allocate(3).unwrap();
    assert_eq!(pool.n_cached(), 1);
    let prefix = pool.lookup(&salt, &[1, 1], &hashes(&salt, &[1, 1]));
    assert_eq!(prefix, one[..1], "the shared prefix outlived both tails");
    pool.release(&taken);
    pool.release(&prefix);
    pool.check_invariants().unwrap();
}

#[derive(Debug, Clone)]
enum Op {
    Start { tenant: u8, tokens: Vec<u32> },
    Finish(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..2, prop::collection::vec(0u32..3, 0..10))
            .prop_map(|(tenant, tokens)| Op::Start { tenant, tokens }),
        (0usize..8).prop_map(Op::Finish),
    ]
}

proptest! {
    /// Random sequences start and finish; the pool's invariants hold throughout, every
    /// lookup returns blocks with exactly the requested tokens and tenant, and nothing
    /// leaks once all sequences are gone.
    #[test]
    fn pool_never_leaks_or_serves_wrong_blocks(ops in prop::collection::vec(op(), 1..60)) {
        let mut pool = BlockPool::new(12, BS);
        let mut live: Vec<Vec<BlockId>> = Vec::new();
        // What each block holds, as the backend would see it: (tenant, all tokens up to it).
        let mut content: std::collections::HashMap<BlockId, (u8, Vec<u32>)> = Default::default();
        for op in ops {
            match op {
                Op::Start { tenant, tokens } => {
                    let salt = TenantSalt::derive(&[tenant]);
                    let hs = hashes(&salt, &tokens);
                    let mut blocks = pool.lookup(&salt, &tokens, &hs);
                    for (i, id) in blocks.iter().enumerate() {
                        let expected = (tenant, tokens[..(i + 1) * BS].to_vec());
                        prop_assert_eq!(content.get(id), Some(&expected));
                    }
                    match pool.allocate(hs.len() - blocks.len()) {
                        Some(fresh) => {
                            for id in fresh {
                                let i = blocks.len();
                                content.insert(id, (tenant, tokens[..(i + 1) * BS].to_vec()));
                                let parent = blocks.last().copied();
                                pool.register(id, hs[i], parent, &salt, &tokens[i * BS..(i + 1) * BS]);
                                blocks.push(id);
                            }
                            live.push(blocks);
                        }
                        None => pool.release(&blocks),
                    }
                }
                Op::Finish(i) => {
                    if !live.is_empty() {
                        let blocks = live.remove(i % live.len());
                        pool.release(&blocks);
                    }
                }
            }
            pool.check_invariants().map_err(TestCaseError::fail)?;
        }
        for blocks in live {
            pool.release(&blocks);
        }
        prop_assert_eq!(pool.n_free(), pool.n_blocks());
        pool.check_invariants().map_err(TestCaseError::fail)?;
    }
}
