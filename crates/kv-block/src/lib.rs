//! Device-agnostic KV block bookkeeping for PagedAttention: which physical block holds which
//! tokens of which sequence. It owns no bytes of K/V; it tells the kernels which blocks to
//! write, copy (copy-on-write, fork) and swap, and it tells the scheduler whether a request
//! fits now, later or never.
//!
//! Modules:
//! - [`api`]: the [`BlockManager`] trait the scheduler programs against, and its value types.
//! - [`manager`]: [`PagedBlockManager`], the paged design over a device and a CPU swap pool,
//!   with reference counts, copy-on-write, fork, swap and automatic prefix caching.
//! - [`baseline`]: [`StaticReservationManager`], Orca-style contiguous reservations
//!   (Max / Pow2 / Oracle) behind the same trait.
//! - [`pool`]: [`BlockPool`], reference counts plus an O(1) free queue that is also the LRU
//!   eviction order of cached blocks.
//! - [`table`]: [`BlockTable`], logical → physical blocks and slot mapping.
//! - [`hash`]: chained 256-bit block hashes behind the pluggable [`BlockHasher`] trait.
//! - [`accounting`]: slot accounting for the memory-waste figure.
//! - [`error`]: the one error type, [`KvError`].
#![deny(missing_docs)]

pub mod accounting;
pub mod api;
mod arena;
pub mod baseline;
pub mod error;
mod free_queue;
pub mod hash;
pub mod manager;
pub mod pool;
mod prefix_cache;
pub mod table;

/// A token id of the model's vocabulary.
pub type TokenId = u32;
/// A physical block number inside one pool.
pub type BlockId = u32;
/// A sequence id, unique for the engine's lifetime.
pub type SeqId = u64;

pub use accounting::{MemoryUsage, memory_usage};
pub use api::{
    AllocStatus, Allocation, AllocationRequest, BlockCopy, BlockManager, BlockManagerConfig,
    Location, Usage,
};
pub use baseline::{ReservationPolicy, StaticReservationManager};
pub use error::KvError;
pub use hash::{BlockHash, BlockHasher, Sha256BlockHasher};
pub use manager::{PagedBlockManager, PrefixCaching};
pub use pool::BlockPool;
pub use table::{BlockTable, blocks_for_tokens};
