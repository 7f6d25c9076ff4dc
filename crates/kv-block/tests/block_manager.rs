//! The block-manager cases of vllm.md §7.1 (tests/core/test_block_manager.py), restated for
//! our API: allocation with a watermark, append, copy-on-write, fork, swap, free and reset.

mod common;

use common::{check_invariants, paged, tokens};
use kv_block::{
    AllocStatus, AllocationRequest, BlockCopy, BlockManager, BlockManagerConfig, KvError, Location,
    PagedBlockManager, PrefixCaching,
};

const BS: usize = 4;

#[test]
fn allocate_respects_the_watermark() {
    for (watermark, admitted) in [(0.0, 4), (0.25, 3)] {
        let config = BlockManagerConfig::new(4, 4)
            .with_block_size(BS)
            .with_watermark(watermark);
        let mut m = PagedBlockManager::new(config, PrefixCaching::Disabled).unwrap();
        let prompt = tokens(0, BS);
        for seq in 0..admitted {
            let ids = [seq];
            let request = AllocationRequest::new(&ids, &prompt);
            assert_eq!(
                m.can_allocate(&request),
                AllocStatus::Ok,
                "watermark {watermark}, seq {seq}"
            );
            m.allocate(&request).unwrap();
        }
        assert_ne!(
            m.can_allocate(&AllocationRequest::new(&[99], &prompt)),
            AllocStatus::Ok
        );
        check_invariants(&m).unwrap();
    }
}

#[test]
fn can_allocate_says_never_for_prompts_larger_than_the_pool() {
    let config = BlockManagerConfig::new(4, 0)
        .with_block_size(BS)
        .with_watermark(0.25);
    let m = PagedBlockManager::new(config, PrefixCaching::Disabled).unwrap();
    assert_eq!(
        m.can_allocate(&AllocationRequest::new(&[0], &tokens(0, 3 * BS))),
        AllocStatus::Ok
    );
    assert_eq!(
        m.can_allocate(&AllocationRequest::new(&[0], &tokens(0, 3 * BS + 1))),
        AllocStatus::Never
    );
    assert_eq!(
        m.can_allocate(&AllocationRequest::new(&[0], &[])),
        AllocStatus::Never
    );
}

#[test]
fn allocate_later_once_blocks_are_taken() {
    let mut m = paged(BS, 4, 0, PrefixCaching::Disabled);
    m.allocate(&AllocationRequest::new(&[0], &tokens(0, 3 * BS)))
        .unwrap();
    let prompt = tokens(0, 2 * BS);
    let request = AllocationRequest::new(&[1], &prompt);
    assert_eq!(m.can_allocate(&request), AllocStatus::Later);
    assert_eq!(
        m.allocate(&request),
        Err(KvError::OutOfBlocks { needed: 2, free: 1 })
    );
    m.free(0).unwrap();
    assert_eq!(m.can_allocate(&request), AllocStatus::Ok);
}

#[test]
fn append_slots_single_sequence() {
    let mut m = paged(BS, 8, 0, PrefixCaching::Disabled);
    m.allocate(&AllocationRequest::new(&[0], &tokens(0, BS)))
        .unwrap();
    let before = m.usage().device_free;
    assert!(m.can_append_slots(&[0], 1).unwrap());
    // The prompt filled its block: the first generated token needs exactly one new block.
    assert_eq!(m.append_slots(0, &[100]).unwrap(), None);
    assert_eq!(m.usage().device_free, before - 1);
    // The next BS - 1 tokens fit the new block.
    for t in 0..BS as u32 - 1 {
        assert_eq!(m.append_slots(0, &[101 + t]).unwrap(), None);
    }
    assert_eq!(m.usage().device_free, before - 1);
    assert_eq!(m.block_table(0).unwrap().last_block_filled(), BS);
    check_invariants(&m).unwrap();
}

#[test]
fn append_slots_copy_on_write_after_fork() {
    let mut m = paged(BS, 8, 0, PrefixCaching::Disabled);
    m.allocate(&AllocationRequest::new(&[0], &tokens(0, BS - 1)))
        .unwrap();
    assert_eq!(m.fork(0, 1).unwrap(), vec![]);
    let shared = m.block_table(0).unwrap().blocks()[0];
    assert_eq!(m.device_pool().ref_count(shared).unwrap(), 2);
    let before = m.usage().device_free;
    let copy = m
        .append_slots(1, &[100])
        .unwrap()
        .expect("the shared partial block is copied");
    assert_eq!(copy.src, shared);
    assert_ne!(copy.dst, copy.src);
    assert_eq!(m.usage().device_free, before - 1);
    assert_eq!(m.device_pool().ref_count(shared).unwrap(), 1);
    // The parent is now the only holder and writes in place.
    assert_eq!(m.append_slots(0, &[200]).unwrap(), None);
    assert_eq!(m.usage().device_free, before - 1);
    check_invariants(&m).unwrap();
}

#[test]
fn group_allocation_shares_prompt_blocks_and_copies_only_the_last() {
    let mut m = paged(BS, 16, 0, PrefixCaching::Disabled);
    m.allocate(&AllocationRequest::new(&[0, 1, 2], &tokens(0, 2 * BS + 1)))
        .unwrap();
    assert_eq!(m.usage().device_used(), 3);
    for seq in 0..3 {
        assert_eq!(m.block_table(seq).unwrap(), m.block_table(0).unwrap());
    }
    assert!(
        m.block_table(0)
            .unwrap()
            .blocks()
            .iter()
            .all(|&b| m.device_pool().ref_count(b).unwrap() == 3)
    );
    // Worst case: every sequence copies its last block.
    assert!(m.can_append_slots(&[0, 1, 2], 1).unwrap());
    let copies: Vec<Option<BlockCopy>> = (0..3)
        .map(|s| m.append_slots(s, &[100 + s as u32]).unwrap())
        .collect();
    assert!(copies[0].is_some() && copies[1].is_some());
    assert_eq!(copies[2], None, "the last holder writes in place");
    let full_prompt_blocks = &m.block_table(0).unwrap().blocks()[..2];
    assert!(
        full_prompt_blocks
            .iter()
            .all(|&b| m.device_pool().ref_count(b).unwrap() == 3)
    );
    check_invariants(&m).unwrap();
}

#[test]
fn fork_shares_tables_until_the_child_writes() {
    let mut m = paged(BS, 8, 0, PrefixCaching::Disabled);
    m.allocate(&AllocationRequest::new(&[0], &tokens(0, BS + 1)))
        .unwrap();
    let free = m.usage().device_free;
    m.fork(0, 1).unwrap();
    assert_eq!(m.usage().device_free, free, "fork allocates nothing");
    assert_eq!(m.block_table(0).unwrap(), m.block_table(1).unwrap());
    m.append_slots(1, &[7]).unwrap();
    assert_ne!(m.block_table(0).unwrap(), m.block_table(1).unwrap());
    assert_eq!(m.fork(0, 1), Err(KvError::SequenceExists(1)));
    assert_eq!(m.fork(5, 6), Err(KvError::UnknownSequence(5)));
    check_invariants(&m).unwrap();
}

#[test]
fn swap_out_and_in_move_the_blocks_and_the_accounting() {
    let mut m = paged(BS, 8, 8, PrefixCaching::Disabled);
    m.allocate(&AllocationRequest::new(&[0], &tokens(0, BS + 1)))
        .unwrap();
    m.fork(0, 1).unwrap();
    m.append_slots(1, &[9]).unwrap();
    let group = [0, 1];
    let device_blocks: Vec<u32> = group
        .iter()
        .flat_map(|&s| m.block_table(s).unwrap().blocks().to_vec())
        .collect();
    let (dev_free, cpu_free) = (m.usage().device_free, m.usage().cpu_free);
    assert!(m.can_swap_out(&group).unwrap());
    let out = m.swap_out(&group).unwrap();
    let mut sources: Vec<u32> = out.iter().map(|c| c.src).collect();
    let mut expected = device_blocks.clone();
    expected.sort_unstable();
    expected.dedup();
    sources.sort_unstable();
    assert_eq!(
        sources, expected,
        "every distinct device block is copied once"
    );
    assert_eq!(m.usage().device_free, dev_free + expected.len());
    assert_eq!(m.usage().cpu_free, cpu_free - expected.len());
    assert_eq!(m.location(0).unwrap(), Location::Cpu);
    assert_eq!(m.append_slots(0, &[1]), Err(KvError::SequenceSwappedOut(0)));
    assert_eq!(m.can_swap_in(&group).unwrap(), AllocStatus::Ok);
    let back = m.swap_in(&group).unwrap();
    let cpu_blocks: Vec<u32> = out.iter().map(|c| c.dst).collect();
    assert_eq!(back.iter().map(|c| c.src).collect::<Vec<_>>(), cpu_blocks);
    assert_eq!(m.usage().device_free, dev_free);
    assert_eq!(m.usage().cpu_free, cpu_free);
    assert_eq!(m.swap_in(&group), Err(KvError::SequenceNotSwappedOut(0)));
    check_invariants(&m).unwrap();
}

#[test]
fn swap_out_fails_cleanly_without_cpu_space() {
    let mut m = paged(BS, 8, 1, PrefixCaching::Disabled);
    m.allocate(&AllocationRequest::new(&[0], &tokens(0, 2 * BS)))
        .unwrap();
    assert!(!m.can_swap_out(&[0]).unwrap());
    assert_eq!(
        m.swap_out(&[0]),
        Err(KvError::OutOfBlocks { needed: 2, free: 1 })
    );
    assert_eq!(m.location(0).unwrap(), Location::Device);
    assert_eq!(m.swap_out(&[0, 0]), Err(KvError::DuplicateSequence(0)));
    check_invariants(&m).unwrap();
}

#[test]
fn can_swap_in_keeps_a_block_per_sequence_and_says_never_when_too_big() {
    let mut m = paged(BS, 4, 8, PrefixCaching::Disabled);
    m.allocate(&AllocationRequest::new(&[0], &tokens(0, 3 * BS)))
        .unwrap();
    m.swap_out(&[0]).unwrap();
    assert_eq!(m.can_swap_in(&[0]).unwrap(), AllocStatus::Ok);
    m.allocate(&AllocationRequest::new(&[1], &tokens(0, 1)))
        .unwrap();
    assert_eq!(m.can_swap_in(&[0]).unwrap(), AllocStatus::Later);
    m.swap_in(&[0]).unwrap();
    m.append_slots(0, &tokens(0, BS)).unwrap_err();
    m.free(1).unwrap();
    m.append_slots(0, &tokens(0, BS)).unwrap();
    m.swap_out(&[0]).unwrap();
    assert_eq!(m.can_swap_in(&[0]).unwrap(), AllocStatus::Never);
}

#[test]
fn free_returns_the_blocks_and_forgets_the_sequence() {
    let mut m = paged(BS, 8, 0, PrefixCaching::Disabled);
    m.allocate(&AllocationRequest::new(&[0], &tokens(0, 2 * BS + 1)))
        .unwrap();
    let before = m.usage().device_free;
    let len = m.block_table(0).unwrap().blocks().len();
    m.free(0).unwrap();
    assert_eq!(m.usage().device_free, before + len);
    assert_eq!(m.block_table(0), Err(KvError::UnknownSequence(0)));
    assert_eq!(m.free(0), Err(KvError::UnknownSequence(0)));
    check_invariants(&m).unwrap();
}

#[test]
fn reset_restores_every_block() {
    let mut m = paged(BS, 16, 4, PrefixCaching::Enabled);
    for group in 0..4u64 {
        m.allocate(&AllocationRequest::new(
            &[group * 10, group * 10 + 1],
            &tokens(0, 4 * BS),
        ))
        .unwrap();
    }
    m.swap_out(&[0, 1]).unwrap();
    assert_eq!(m.usage().cpu_free, 0);
    m.reset();
    assert_eq!(m.usage().device_free, 16);
    assert_eq!(m.usage().cpu_free, 4);
    assert_eq!(m.sequences().count(), 0);
    assert_eq!(m.device_pool().num_cached(), 0);
}

#[test]
fn misuse_is_reported_not_panicked() {
    let mut m = paged(BS, 4, 0, PrefixCaching::Enabled);
    let prompt = tokens(0, 2);
    assert_eq!(
        m.allocate(&AllocationRequest::new(&[], &prompt)),
        Err(KvError::EmptyAllocation)
    );
    assert_eq!(
        m.allocate(&AllocationRequest::new(&[1], &[])),
        Err(KvError::EmptyAllocation)
    );
    assert_eq!(
        m.allocate(&AllocationRequest::new(&[1, 1], &prompt)),
        Err(KvError::DuplicateSequence(1))
    );
    m.allocate(&AllocationRequest::new(&[1], &prompt)).unwrap();
    assert_eq!(
        m.allocate(&AllocationRequest::new(&[1], &prompt)),
        Err(KvError::SequenceExists(1))
    );
    assert_eq!(
        m.mark_computed(1, 3),
        Err(KvError::ComputedBeyondLength {
            seq: 1,
            computed: 3,
            len: 2
        })
    );
    assert_eq!(m.append_slots(2, &[1]), Err(KvError::UnknownSequence(2)));
    assert_eq!(
        m.can_append_slots(&[2], 1),
        Err(KvError::UnknownSequence(2))
    );
    assert_eq!(m.swap_in(&[1]), Err(KvError::SequenceNotSwappedOut(1)));
    assert_eq!(
        m.append_slots(1, &tokens(0, 4 * BS)),
        Err(KvError::OutOfBlocks { needed: 4, free: 3 })
    );
    assert_eq!(
        m.block_table(1).unwrap().num_tokens(),
        2,
        "a failed append changes nothing"
    );
    assert!(PagedBlockManager::new(BlockManagerConfig::new(0, 0), PrefixCaching::Enabled).is_err());
    check_invariants(&m).unwrap();
}

#[test]
fn slot_mapping_of_an_allocated_sequence() {
    let mut m = paged(BS, 8, 0, PrefixCaching::Disabled);
    m.allocate(&AllocationRequest::new(&[0], &tokens(0, BS + 2)))
        .unwrap();
    let table = m.block_table(0).unwrap();
    let [b0, b1] = table.blocks() else {
        panic!("two blocks expected")
    };
    let expected: Vec<usize> = (0..BS)
        .map(|o| *b0 as usize * BS + o)
        .chain((0..2).map(|o| *b1 as usize * BS + o))
        .collect();
    assert_eq!(table.slots(0..BS + 2).unwrap(), expected);
    assert_eq!(table.last_block_filled(), 2);
}

#[test]
fn memory_usage_counts_only_the_last_block_as_waste() {
    let mut m = paged(BS, 16, 0, PrefixCaching::Disabled);
    m.allocate(&AllocationRequest::new(&[0], &tokens(0, 2 * BS + 1)))
        .unwrap();
    m.fork(0, 1).unwrap();
    let usage = m.memory_usage();
    assert_eq!(usage.allocated_slots, 3 * BS);
    assert_eq!(usage.token_slots, 2 * BS + 1);
    assert_eq!(usage.internal_waste_slots, BS - 1);
    assert_eq!(usage.reserved_waste_slots, 0);
}
