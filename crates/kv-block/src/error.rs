//! The one error type of the crate: every misuse by a caller is reported here, never by a panic.

use crate::{BlockId, SeqId};

/// Everything that can go wrong in block bookkeeping.
///
/// Each variant describes a caller mistake or a capacity limit; none of them leaves the pool
/// or the manager in a half-updated state (operations check first, then mutate).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// Not enough free blocks in the pool the operation needed.
    #[error("out of blocks: {needed} needed, {free} free")]
    OutOfBlocks {
        /// Blocks the operation needed.
        needed: usize,
        /// Blocks that were free.
        free: usize,
    },
    /// A block was released while its reference count was already zero.
    #[error("double free of block {0}")]
    DoubleFree(BlockId),
    /// A block was shared while it was free (nobody held it).
    #[error("use after free of block {0}")]
    UseAfterFree(BlockId),
    /// A block id outside the pool.
    #[error("block {block} is outside the pool of {num_blocks} blocks")]
    InvalidBlock {
        /// The offending id.
        block: BlockId,
        /// Size of the pool.
        num_blocks: usize,
    },
    /// The sequence is not known to the manager (never allocated, or already freed).
    #[error("unknown sequence {0}")]
    UnknownSequence(SeqId),
    /// The sequence id is already in use.
    #[error("sequence {0} already exists")]
    SequenceExists(SeqId),
    /// The same sequence id appears twice in one request.
    #[error("sequence {0} appears twice in one request")]
    DuplicateSequence(SeqId),
    /// An allocation named no sequence or carried no token.
    #[error("an allocation needs at least one sequence and one token")]
    EmptyAllocation,
    /// The operation needs the sequence on the device, but it is swapped out.
    #[error("sequence {0} is swapped out")]
    SequenceSwappedOut(SeqId),
    /// The operation needs the sequence swapped out, but it is on the device.
    #[error("sequence {0} is not swapped out")]
    SequenceNotSwappedOut(SeqId),
    /// `mark_computed` claimed more computed tokens than the sequence holds.
    #[error("sequence {seq} has {len} tokens, {computed} cannot be computed")]
    ComputedBeyondLength {
        /// The sequence.
        seq: SeqId,
        /// Tokens the caller claimed are computed.
        computed: usize,
        /// Tokens the sequence holds.
        len: usize,
    },
    /// A static reservation is too small for the tokens being appended.
    #[error("sequence {seq} reserved {capacity} slots, {needed} needed")]
    ReservationExceeded {
        /// The sequence.
        seq: SeqId,
        /// Slots reserved for it.
        capacity: usize,
        /// Slots the append needed.
        needed: usize,
    },
    /// A token position outside the sequence.
    #[error("position {position} is outside the {len} tokens of the table")]
    PositionOutOfRange {
        /// The position asked for.
        position: usize,
        /// Tokens in the table.
        len: usize,
    },
    /// A configuration value out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(&'static str),
}
