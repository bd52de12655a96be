//! The paged KV pool's bookkeeping: block ids, reference counts and the prefix cache.
//!
//! The KV memory itself belongs to the backend; this module only decides which block
//! holds what, so the same logic serves the CPU and any device backend.

mod hash;
mod pool;

pub use hash::{BlockHash, TenantSalt, block_hashes};
pub use pool::{BlockId, BlockPool};
