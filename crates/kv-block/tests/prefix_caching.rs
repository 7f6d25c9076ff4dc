//! Prefix caching: the cases of vllm.md §7.1 item 11 and §7.3 that apply to our design
//! (no null block, so block ids start at 0; uncached blocks are reused before cached ones).

mod common;

use common::{check_invariants, paged, tokens};
use kv_block::{
    AllocStatus, AllocationRequest, BlockManager, PagedBlockManager, PrefixCaching, TokenId,
};

const BS: usize = 16;

/// Allocates `seq` over `prompt`, marks it fully computed and returns the cached token count.
fn admit_computed(m: &mut PagedBlockManager, seq: u64, prompt: &[TokenId]) -> usize {
    let computed = m
        .allocate(&AllocationRequest::new(&[seq], prompt))
        .unwrap()
        .num_computed_tokens;
    m.mark_computed(seq, prompt.len()).unwrap();
    computed
}

fn with_suffix(prefix: &[TokenId], suffix: &[TokenId]) -> Vec<TokenId> {
    [prefix, suffix].concat()
}

#[test]
fn prefill_hits_the_shared_prefix_and_frees_in_eviction_order() {
    let mut m = paged(BS, 10, 0, PrefixCaching::Enabled);
    let common = tokens(0, 3 * BS);
    let req0 = with_suffix(&common, &tokens(1000, 7));
    assert_eq!(admit_computed(&mut m, 0, &req0), 0);
    let t0 = m.block_table(0).unwrap().blocks().to_vec();
    assert_eq!(t0, vec![0, 1, 2, 3]);
    for (i, &b) in t0[..3].iter().enumerate() {
        assert_eq!(
            m.device_pool().cached_tokens(b).unwrap(),
            Some(&common[i * BS..(i + 1) * BS])
        );
    }
    assert_eq!(
        m.device_pool().cached_tokens(3).unwrap(),
        None,
        "a partial block is never cached"
    );

    let req1 = with_suffix(&common, &tokens(2000, 5));
    assert_eq!(admit_computed(&mut m, 1, &req1), 3 * BS);
    let t1 = m.block_table(1).unwrap().blocks().to_vec();
    assert_eq!(t1, vec![0, 1, 2, 4]);
    assert!(
        t1[..3]
            .iter()
            .all(|&b| m.device_pool().ref_count(b).unwrap() == 2)
    );
    assert_eq!(m.usage().device_free, 5);

    m.free(0).unwrap();
    m.free(1).unwrap();
    assert_eq!(m.usage().device_free, 10);
    // Uncached tails first (reused first), then the cached prefix, its last block evicted first.
    assert_eq!(
        m.device_pool().eviction_order().collect::<Vec<_>>(),
        vec![4, 3, 5, 6, 7, 8, 9, 2, 1, 0]
    );

    let req2 = with_suffix(&common, &tokens(3000, 1));
    assert_eq!(
        admit_computed(&mut m, 2, &req2),
        3 * BS,
        "hits come back from the free queue"
    );
    assert_eq!(m.block_table(2).unwrap().blocks(), &[0, 1, 2, 4]);
    m.free(2).unwrap();

    // A 10-block miss takes every block in eviction order and evicts every cache entry.
    let miss = tokens(5000, 10 * BS);
    let order: Vec<u32> = m.device_pool().eviction_order().collect();
    assert_eq!(admit_computed(&mut m, 3, &miss), 0);
    assert_eq!(m.block_table(3).unwrap().blocks(), &order[..]);
    assert_eq!(m.device_pool().eviction_order().count(), 0);
    m.free(3).unwrap();
    assert_eq!(
        m.cached_prefix_tokens(&req0, &[]),
        0,
        "the old prefix was evicted"
    );
    check_invariants(&m).unwrap();
}

#[test]
fn the_last_token_is_always_recomputed() {
    let mut m = paged(BS, 10, 0, PrefixCaching::Enabled);
    let prompt = tokens(0, 2 * BS);
    admit_computed(&mut m, 0, &prompt);
    // The same block-aligned prompt again: only the first block is served.
    assert_eq!(admit_computed(&mut m, 1, &prompt), BS);
    assert_eq!(m.cached_prefix_tokens(&prompt, &[]), BS);
    assert_eq!(
        m.cached_prefix_tokens(&with_suffix(&prompt, &[7]), &[]),
        2 * BS
    );
}

#[test]
fn only_computed_blocks_enter_the_cache() {
    let mut m = paged(BS, 10, 0, PrefixCaching::Enabled);
    let prompt = tokens(0, 8 * BS);
    m.allocate(&AllocationRequest::new(&[0], &prompt)).unwrap();
    assert_eq!(
        m.cached_prefix_tokens(&prompt, &[]),
        0,
        "nothing computed, nothing served"
    );
    // Chunked prefill: a 2.5-block chunk caches 2 blocks; a further 4.5 blocks give 7.
    m.mark_computed(0, 2 * BS + BS / 2).unwrap();
    assert_eq!(m.device_pool().num_cached(), 2);
    assert_eq!(m.cached_prefix_tokens(&prompt, &[]), 2 * BS);
    m.mark_computed(0, 7 * BS).unwrap();
    assert_eq!(m.device_pool().num_cached(), 7);
    assert_eq!(m.num_computed_tokens(0).unwrap(), 7 * BS);
    m.mark_computed(0, BS).unwrap();
    assert_eq!(
        m.num_computed_tokens(0).unwrap(),
        7 * BS,
        "computed counts never go back"
    );
}

#[test]
fn decode_fills_the_partial_block_and_caches_it_once_full() {
    let mut m = paged(BS, 10, 0, PrefixCaching::Enabled);
    let prompt = tokens(0, BS + 3);
    admit_computed(&mut m, 0, &prompt);
    let free = m.usage().device_free;
    m.append_slots(0, &tokens(100, 4)).unwrap();
    assert_eq!(m.usage().device_free, free, "the partial block had room");
    m.append_slots(0, &tokens(200, BS - 7 + 1)).unwrap();
    assert_eq!(m.usage().device_free, free - 1);
    m.mark_computed(0, 2 * BS + 1).unwrap();
    let blocks = m.block_table(0).unwrap().blocks().to_vec();
    assert!(
        m.device_pool().cached_tokens(blocks[1]).unwrap().is_some(),
        "the filled block is cached"
    );
    assert!(
        m.device_pool().cached_tokens(blocks[2]).unwrap().is_none(),
        "the new last block is not"
    );
}

#[test]
fn least_recently_freed_cached_blocks_are_evicted_first() {
    let mut m = paged(BS, 10, 0, PrefixCaching::Enabled);
    let a = tokens(0, 4 * BS + 1);
    let b = tokens(10_000, 4 * BS + 1);
    admit_computed(&mut m, 0, &a);
    admit_computed(&mut m, 1, &b);
    m.free(0).unwrap();
    m.free(1).unwrap();
    // A 3-block miss evicts the 2 free uncached blocks first, then a's last cached block.
    admit_computed(&mut m, 2, &tokens(50_000, 3 * BS));
    assert_eq!(m.cached_prefix_tokens(&a, &[]), 3 * BS);
    assert_eq!(m.cached_prefix_tokens(&b, &[]), 4 * BS);
    // A request touching a's first two blocks hits them.
    let c = with_suffix(&a[..2 * BS], &tokens(70_000, 5));
    assert_eq!(admit_computed(&mut m, 3, &c), 2 * BS);
    check_invariants(&m).unwrap();
}

#[test]
fn a_reused_block_loses_its_old_identity() {
    let mut m = paged(BS, 2, 0, PrefixCaching::Enabled);
    let a = tokens(0, BS + 1);
    admit_computed(&mut m, 0, &a);
    let cached = m.block_table(0).unwrap().blocks()[0];
    m.free(0).unwrap();
    admit_computed(&mut m, 1, &tokens(900, 2 * BS));
    assert!(m.block_table(1).unwrap().blocks().contains(&cached));
    assert_ne!(
        m.device_pool().cached_tokens(cached).unwrap(),
        Some(&a[..BS])
    );
    assert_eq!(m.cached_prefix_tokens(&a, &[]), 0);
}

#[test]
fn cached_blocks_survive_while_uncached_free_blocks_exist() {
    let mut m = paged(BS, 6, 0, PrefixCaching::Enabled);
    let a = tokens(0, 2 * BS + 1);
    admit_computed(&mut m, 0, &a);
    m.free(0).unwrap();
    for seq in 1..4 {
        m.allocate(&AllocationRequest::new(
            &[seq],
            &tokens(1000 * seq as u32, 1),
        ))
        .unwrap();
    }
    assert_eq!(m.cached_prefix_tokens(&a, &[]), 2 * BS);
}

#[test]
fn disabled_prefix_caching_never_hits() {
    let mut m = paged(BS, 10, 0, PrefixCaching::Disabled);
    let prompt = tokens(0, 3 * BS);
    assert_eq!(admit_computed(&mut m, 0, &prompt), 0);
    assert_eq!(admit_computed(&mut m, 1, &prompt), 0);
    assert_eq!(m.device_pool().num_cached(), 0);
    assert_ne!(
        m.block_table(0).unwrap().blocks(),
        m.block_table(1).unwrap().blocks()
    );
}

#[test]
fn extra_keys_isolate_tenants() {
    let mut m = paged(BS, 10, 0, PrefixCaching::Enabled);
    let prompt = tokens(0, 2 * BS + 1);
    m.allocate(&AllocationRequest::new(&[0], &prompt).with_extra_keys(b"tenant-a"))
        .unwrap();
    m.mark_computed(0, prompt.len()).unwrap();
    assert_eq!(m.cached_prefix_tokens(&prompt, b"tenant-a"), 2 * BS);
    assert_eq!(m.cached_prefix_tokens(&prompt, b"tenant-b"), 0);
    assert_eq!(m.cached_prefix_tokens(&prompt, &[]), 0);
    let hit = m
        .allocate(&AllocationRequest::new(&[1], &prompt).with_extra_keys(b"tenant-b"))
        .unwrap();
    assert_eq!(hit.num_computed_tokens, 0);
}

#[test]
fn admission_counts_evictable_hits_as_taken_from_the_free_queue() {
    let mut m = paged(BS, 4, 0, PrefixCaching::Enabled);
    let a = tokens(0, 2 * BS + 1);
    admit_computed(&mut m, 0, &a);
    // While a holds its blocks, a request sharing its 2-block prefix needs only 1 new block.
    let request = AllocationRequest::new(&[1], &a);
    m.allocate(&AllocationRequest::new(&[2], &tokens(500, 1)))
        .unwrap();
    assert_eq!(m.usage().device_free, 0);
    assert_eq!(m.can_allocate(&request), AllocStatus::Later);
    m.free(2).unwrap();
    assert_eq!(m.can_allocate(&request), AllocStatus::Ok);
    assert_eq!(m.allocate(&request).unwrap().num_computed_tokens, 2 * BS);
    m.free(0).unwrap();
    m.free(1).unwrap();
    // Now the hits sit in the free queue: taking them costs free blocks like any other block.
    assert_eq!(
        m.can_allocate(&AllocationRequest::new(&[3], &tokens(0, 4 * BS))),
        AllocStatus::Ok
    );
    check_invariants(&m).unwrap();
}

#[test]
fn forked_and_duplicate_computations_keep_the_chain_going() {
    let mut m = paged(BS, 16, 0, PrefixCaching::Enabled);
    let prompt = tokens(0, BS + 1);
    // Two identical prompts computed side by side: the second one's blocks are duplicates.
    m.allocate(&AllocationRequest::new(&[0], &prompt)).unwrap();
    m.allocate(&AllocationRequest::new(&[1], &prompt)).unwrap();
    m.mark_computed(0, prompt.len()).unwrap();
    m.mark_computed(1, prompt.len()).unwrap();
    m.fork(1, 2).unwrap();
    m.append_slots(2, &tokens(77, 2 * BS)).unwrap();
    m.mark_computed(2, 3 * BS).unwrap();
    // The child's new blocks chain after the block cached by sequence 0.
    let longer = with_suffix(&prompt, &tokens(77, 2 * BS));
    assert_eq!(m.cached_prefix_tokens(&longer, &[]), 3 * BS);
    check_invariants(&m).unwrap();
}

#[test]
fn swapped_in_sequences_serve_their_prefix_again() {
    let mut m = paged(BS, 8, 8, PrefixCaching::Enabled);
    let prompt = tokens(0, 3 * BS + 1);
    admit_computed(&mut m, 0, &prompt);
    m.swap_out(&[0]).unwrap();
    // Force eviction of the cached device copies.
    admit_computed(&mut m, 1, &tokens(9000, 8 * BS));
    assert_eq!(m.cached_prefix_tokens(&prompt, &[]), 0);
    m.free(1).unwrap();
    m.swap_in(&[0]).unwrap();
    assert_eq!(m.cached_prefix_tokens(&prompt, &[]), 3 * BS);
    check_invariants(&m).unwrap();
}
