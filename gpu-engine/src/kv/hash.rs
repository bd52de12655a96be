//! Block keys of the prefix cache: a hash of a block's tokens chained with its parent's and salted per tenant.

use sha2::{Digest, Sha256};

/// Identifies a full block by its tokens, everything before it, and its tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockHash([u8; 32]);

/// A per-tenant secret mixed into the first block's hash, so that tenants never share blocks.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TenantSalt([u8; 32]);

impl std::fmt::Debug for TenantSalt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The salt is derived from a credential: never print it.
        f.write_str("TenantSalt(***)")
    }
}

impl TenantSalt {
    /// Derives a salt from a tenant identity (an API key, or a header a trusted gateway set).
    pub fn derive(identity: &[u8]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"cachet-engine tenant salt v1\0");
        hasher.update(identity);
        Self(hasher.finalize().into())
    }
}

/// The hash of one full block given its parent's hash (`None` for a sequence's first block).
pub fn block_hash(salt: &TenantSalt, parent: Option<&BlockHash>, tokens: &[u32]) -> BlockHash {
    let mut hasher = Sha256::new();
    match parent {
        Some(parent) => hasher.update(parent.0),
        None => hasher.update(salt.0),
    }
    for token in tokens {
        hasher.update(token.to_le_bytes());
    }
    BlockHash(hasher.finalize().into())
}

/// Extends `hashes` with the hashes of every full block of `tokens` not hashed yet.
pub fn block_hashes(
    salt: &TenantSalt,
    tokens: &[u32],
    block_size: usize,
    hashes: &mut Vec<BlockHash>,
) {
    let n_full = tokens.len() / block_size;
    for i in hashes.len()..n_full {
        let parent = i.checked_sub(1).map(|p| hashes[p]);
        let hash = block_hash(
            salt,
            parent.as_ref(),
            &tokens[i * block_size..(i + 1) * block_size],
        );
        hashes.push(hash);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_depends_on_prefix_and_salt() {
        let a = TenantSalt::derive(b"a");
        let b = TenantSalt::derive(b"b");
        let mut h1 = Vec::new();
        block_hashes(&a, &[1, 2, 3, 4, 5], 2, &mut h1);
        assert_eq!(h1.len(), 2);
        let mut h2 = Vec::new();
        block_hashes(&a, &[9, 9, 3, 4], 2, &mut h2);
        // Same tokens in block 1, different prefix: different hash.
        assert_ne!(h1[1], h2[1]);
        let mut h3 = Vec::new();
        block_hashes(&b, &[1, 2, 3, 4], 2, &mut h3);
        assert_ne!(h1[0], h3[0]);
        let mut again = vec![h1[0]];
        block_hashes(&a, &[1, 2, 3, 4], 2, &mut again);
        assert_eq!(again, h1);
    }

    #[test]
    fn salt_debug_hides_the_secret() {
        assert_eq!(
            format!("{:?}", TenantSalt::derive(b"key")),
            "TenantSalt(***)"
        );
    }
}
