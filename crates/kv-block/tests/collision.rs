//! Hash collisions never share wrong KV: every hit is verified against the stored tokens,
//! extra keys and parent link, even with a deliberately weak hasher.

mod common;

use common::check_invariants;
use kv_block::{
    AllocationRequest, BlockHash, BlockHasher, BlockManager, BlockManagerConfig, PagedBlockManager,
    PrefixCaching, TokenId,
};
use proptest::prelude::*;

const BS: usize = 2;

/// Every block of every prefix hashes to the same value.
struct ConstantHasher;

impl BlockHasher for ConstantHasher {
    fn hash_block(&self, _: Option<&BlockHash>, _: &[TokenId], _: &[u8]) -> BlockHash {
        BlockHash([7; 32])
    }
}

/// Order-blind: permutations of a block (and of earlier blocks) collide.
struct SumHasher;

impl BlockHasher for SumHasher {
    fn hash_block(&self, parent: Option<&BlockHash>, tokens: &[TokenId], _: &[u8]) -> BlockHash {
        let mut sum = parent.map_or(0, |p| p.0[0] as u32) + tokens.iter().sum::<u32>();
        sum %= 251;
        BlockHash([sum as u8; 32])
    }
}

fn manager<H: BlockHasher>(hasher: H, device: usize) -> PagedBlockManager<H> {
    let config = BlockManagerConfig::new(device, 0)
        .with_block_size(BS)
        .with_watermark(0.0);
    PagedBlockManager::with_hasher(config, PrefixCaching::Enabled, hasher).unwrap()
}

fn admit<H: BlockHasher>(
    m: &mut PagedBlockManager<H>,
    seq: u64,
    prompt: &[TokenId],
    keys: &[u8],
) -> usize {
    let hit = m
        .allocate(&AllocationRequest::new(&[seq], prompt).with_extra_keys(keys))
        .unwrap();
    m.mark_computed(seq, prompt.len()).unwrap();
    hit.num_computed_tokens
}

#[test]
fn colliding_blocks_with_different_tokens_are_not_shared() {
    let mut m = manager(ConstantHasher, 16);
    assert_eq!(admit(&mut m, 0, &[1, 2, 3, 4, 5], &[]), 0);
    assert_eq!(admit(&mut m, 1, &[9, 9, 3, 4, 5], &[]), 0);
    assert_eq!(
        admit(&mut m, 2, &[1, 2, 3, 4, 5], b"salt"),
        0,
        "extra keys are verified too"
    );
    // All hashes are equal, so the index keeps one entry: only the first block is served.
    assert_eq!(admit(&mut m, 3, &[1, 2, 3, 4, 5], &[]), BS);
}

#[test]
fn a_matching_block_after_a_colliding_parent_is_not_shared() {
    let mut m = manager(SumHasher, 6);
    // p and q compute [2,1] side by side: p caches it as c0, q's block 1 ([3,4]) is cached
    // as c1 with c0 as its parent.
    m.allocate(&AllocationRequest::new(&[0], &[2, 1, 7]))
        .unwrap();
    m.allocate(&AllocationRequest::new(&[1], &[2, 1, 3, 4, 0]))
        .unwrap();
    m.mark_computed(0, 3).unwrap();
    m.mark_computed(1, 5).unwrap();
    // Evict c0 while q keeps c1 alive.
    m.free(0).unwrap();
    admit(&mut m, 2, &[9, 9, 9, 9, 9], &[]);
    m.free(2).unwrap();
    assert_eq!(
        m.cached_prefix_tokens(&[2, 1, 3, 4, 0], &[]),
        0,
        "c0 is gone"
    );
    // a0 = [1,2] collides with c0 and takes its hash slot.
    admit(&mut m, 3, &[1, 2, 5], &[]);
    m.free(3).unwrap();
    // d = [1,2][3,4]: block 1 matches c1's tokens and its parent's hash, but c1's KV was
    // computed after [2,1]; only the first block may be served.
    assert_eq!(admit(&mut m, 4, &[1, 2, 3, 4, 0], &[]), BS);
    check_invariants(&m).unwrap();
}

/// Prompts over a tiny alphabet so that prefixes repeat and sums collide often.
fn prompts() -> impl Strategy<Value = Vec<(Vec<TokenId>, u8)>> {
    prop::collection::vec((prop::collection::vec(0u32..3, 1..9), 0u8..2), 1..24)
}

fn check_hits<H: BlockHasher>(
    hasher: H,
    prompts: &[(Vec<TokenId>, u8)],
) -> Result<(), TestCaseError> {
    let mut m = manager(hasher, 12);
    let mut computed: Vec<(Vec<TokenId>, u8)> = Vec::new();
    for (seq, (prompt, salt)) in prompts.iter().enumerate() {
        let seq = seq as u64;
        let ids = [seq];
        let request =
            AllocationRequest::new(&ids, prompt).with_extra_keys(std::slice::from_ref(salt));
        let Ok(hit) = m.allocate(&request) else {
            // Out of blocks: free the oldest live sequence and move on.
            if let Some(oldest) = m.sequences().min() {
                m.free(oldest).unwrap();
            }
            continue;
        };
        let hit = hit.num_computed_tokens;
        prop_assert!(hit < prompt.len());
        // Sound: some earlier computation with the same salt had exactly this prefix.
        let known = computed
            .iter()
            .any(|(p, s)| s == salt && p.len() >= hit && p[..hit] == prompt[..hit]);
        prop_assert!(
            hit == 0 || known,
            "hit of {hit} tokens that were never computed"
        );
        let table = m.block_table(seq).unwrap().blocks().to_vec();
        for (i, &block) in table[..hit / BS].iter().enumerate() {
            let stored = m.device_pool().cached_tokens(block).unwrap();
            prop_assert_eq!(stored, Some(&prompt[i * BS..(i + 1) * BS]));
        }
        m.mark_computed(seq, prompt.len()).unwrap();
        computed.push((prompt.clone(), *salt));
        if seq % 3 == 2 {
            m.free(seq).unwrap();
        }
        check_invariants(&m).map_err(TestCaseError::fail)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn weak_hashers_never_serve_wrong_kv(prompts in prompts()) {
        check_hits(ConstantHasher, &prompts)?;
        check_hits(SumHasher, &prompts)?;
    }
}
