//! Chained block hashes for prefix caching.
//!
//! The hash of block `i` covers the hash of block `i - 1`, the token ids of block `i` and the
//! extra keys (for example a per-tenant salt), so equal hashes stand for equal *prefixes*, not
//! just equal blocks. A hash is only a lookup key: the cache verifies every hit against the
//! stored token ids and parent link, so even a deliberately weak hasher cannot serve wrong KV.

use sha2::{Digest, Sha256};

use crate::TokenId;

/// A 256-bit block hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockHash(pub [u8; 32]);

/// Computes chained block hashes; pluggable so that tests can inject a weak hasher.
///
/// Implementations must be deterministic: the same arguments always give the same hash.
/// Collisions are allowed (they cost cache hits, never correctness).
pub trait BlockHasher {
    /// Hash of one full block: `parent` is the previous block's hash (`None` for the first
    /// block), `tokens` the block's token ids, `extra_keys` opaque bytes such as a cache salt.
    fn hash_block(
        &self,
        parent: Option<&BlockHash>,
        tokens: &[TokenId],
        extra_keys: &[u8],
    ) -> BlockHash;
}

/// SHA-256 over an unambiguous encoding of (parent, tokens, extra keys): the default hasher.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sha256BlockHasher;

impl BlockHasher for Sha256BlockHasher {
    fn hash_block(
        &self,
        parent: Option<&BlockHash>,
        tokens: &[TokenId],
        extra_keys: &[u8],
    ) -> BlockHash {
        let mut digest = Sha256::new();
        match parent {
            Some(parent) => {
                digest.update([1u8]);
                digest.update(parent.0);
            }
            None => digest.update([0u8]),
        }
        digest.update((tokens.len() as u64).to_le_bytes());
        for token in tokens {
            digest.update(token.to_le_bytes());
        }
        digest.update((extra_keys.len() as u64).to_le_bytes());
        digest.update(extra_keys);
        BlockHash(digest.finalize().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_is_deterministic_and_sensitive_to_every_input() {
        let h = Sha256BlockHasher;
        let base = h.hash_block(None, &[1, 2, 3], b"salt");
        assert_eq!(base, h.hash_block(None, &[1, 2, 3], b"salt"));
        assert_ne!(base, h.hash_block(None, &[1, 2, 4], b"salt"));
        assert_ne!(base, h.hash_block(None, &[1, 2, 3], b"other"));
        assert_ne!(base, h.hash_block(Some(&base), &[1, 2, 3], b"salt"));
        // Length prefixes keep token bytes and salt bytes apart.
        assert_ne!(
            h.hash_block(None, &[1], &[]),
            h.hash_block(None, &[], &1u32.to_le_bytes())
        );
    }

    #[test]
    fn chained_hash_depends_on_the_whole_prefix() {
        let h = Sha256BlockHasher;
        let a = h.hash_block(None, &[1, 2], &[]);
        let b = h.hash_block(None, &[2, 1], &[]);
        assert_ne!(
            h.hash_block(Some(&a), &[3, 4], &[]),
            h.hash_block(Some(&b), &[3, 4], &[])
        );
    }
}
