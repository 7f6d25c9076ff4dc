//! Static contiguous reservation (Orca Max / Pow2 / Oracle) behind the same trait.

mod common;

use common::{paged, tokens};
use kv_block::{
    AllocStatus, AllocationRequest, BlockCopy, BlockManager, BlockManagerConfig, KvError, Location,
    PrefixCaching, ReservationPolicy, StaticReservationManager,
};

const BS: usize = 4;

fn baseline(policy: ReservationPolicy, device: usize, cpu: usize) -> StaticReservationManager {
    let config = BlockManagerConfig::new(device, cpu)
        .with_block_size(BS)
        .with_watermark(0.0);
    StaticReservationManager::new(config, policy).unwrap()
}

#[test]
fn policies_reserve_max_pow2_or_the_true_length() {
    assert_eq!(
        ReservationPolicy::Max { max_len: 64 }.reserved_tokens(10, 5),
        64
    );
    assert_eq!(
        ReservationPolicy::Max { max_len: 8 }.reserved_tokens(10, 5),
        10
    );
    assert_eq!(ReservationPolicy::Pow2.reserved_tokens(10, 5), 18);
    assert_eq!(ReservationPolicy::Oracle.reserved_tokens(10, 5), 15);
    let mut m = baseline(ReservationPolicy::Pow2, 16, 0);
    m.allocate(&AllocationRequest::new(&[0], &tokens(0, 10)).with_max_new_tokens(5))
        .unwrap();
    assert_eq!(m.block_table(0).unwrap().blocks(), &[0, 1, 2, 3, 4]);
    assert_eq!(m.usage().device_used(), 5);
}

#[test]
fn appends_stay_inside_the_reservation() {
    let mut m = baseline(ReservationPolicy::Oracle, 16, 0);
    m.allocate(&AllocationRequest::new(&[0], &tokens(0, 3)).with_max_new_tokens(2))
        .unwrap();
    assert!(m.can_append_slots(&[0], 2).unwrap());
    assert!(!m.can_append_slots(&[0], 6).unwrap());
    assert_eq!(m.append_slots(0, &[1, 2]).unwrap(), None);
    // The reservation is rounded up to whole blocks: 8 slots.
    assert_eq!(
        m.append_slots(0, &[3, 4, 5, 6]),
        Err(KvError::ReservationExceeded {
            seq: 0,
            capacity: 8,
            needed: 9
        })
    );
    assert_eq!(
        m.mark_computed(0, 6),
        Err(KvError::ComputedBeyondLength {
            seq: 0,
            computed: 6,
            len: 5
        })
    );
    m.mark_computed(0, 5).unwrap();
    assert_eq!(
        m.block_table(0).unwrap().slots(0..5).unwrap(),
        vec![0, 1, 2, 3, 4]
    );
}

#[test]
fn external_fragmentation_defers_admission() {
    let mut m = baseline(ReservationPolicy::Oracle, 6, 0);
    for seq in 0..3 {
        m.allocate(&AllocationRequest::new(&[seq], &tokens(0, 2 * BS)))
            .unwrap();
    }
    m.free(0).unwrap();
    m.free(2).unwrap();
    // 4 blocks are free, but not 3 in a row.
    let prompt = tokens(0, 3 * BS);
    let request = AllocationRequest::new(&[9], &prompt);
    assert_eq!(m.usage().device_free, 4);
    assert_eq!(m.can_allocate(&request), AllocStatus::Later);
    assert!(matches!(
        m.allocate(&request),
        Err(KvError::OutOfBlocks { .. })
    ));
    assert_eq!(
        m.can_allocate(&AllocationRequest::new(&[9], &tokens(0, 7 * BS))),
        AllocStatus::Never
    );
    m.free(1).unwrap();
    assert_eq!(m.can_allocate(&request), AllocStatus::Ok);
}

#[test]
fn fork_and_swap_copy_the_filled_blocks() {
    let mut m = baseline(ReservationPolicy::Max { max_len: 4 * BS }, 16, 8);
    m.allocate(&AllocationRequest::new(&[0], &tokens(0, BS + 1)))
        .unwrap();
    let copies = m.fork(0, 1).unwrap();
    assert_eq!(
        copies,
        vec![BlockCopy { src: 0, dst: 4 }, BlockCopy { src: 1, dst: 5 }]
    );
    assert_eq!(
        m.usage().device_used(),
        8,
        "no sharing: the child reserves its own range"
    );
    assert!(m.can_swap_out(&[0, 1]).unwrap());
    let out = m.swap_out(&[0, 1]).unwrap();
    assert_eq!(out.len(), 4);
    assert_eq!(m.location(1).unwrap(), Location::Cpu);
    assert_eq!(m.usage().cpu_free, 0);
    assert_eq!(m.can_swap_in(&[0, 1]).unwrap(), AllocStatus::Ok);
    let back = m.swap_in(&[0, 1]).unwrap();
    assert_eq!(
        back.iter().map(|c| c.src).collect::<Vec<_>>(),
        out.iter().map(|c| c.dst).collect::<Vec<_>>()
    );
    assert_eq!(m.block_table(1).unwrap().num_tokens(), BS + 1);
    m.reset();
    assert_eq!(m.usage().device_free, 16);
}

#[test]
fn reservations_waste_what_paging_does_not() {
    let prompt = tokens(0, 10);
    let mut waste = Vec::new();
    let mut managers: Vec<Box<dyn BlockManager>> = vec![
        Box::new(baseline(ReservationPolicy::Max { max_len: 64 }, 64, 0)),
        Box::new(baseline(ReservationPolicy::Pow2, 64, 0)),
        Box::new(baseline(ReservationPolicy::Oracle, 64, 0)),
        Box::new(paged(BS, 64, 0, PrefixCaching::Disabled)),
    ];
    for m in &mut managers {
        m.allocate(&AllocationRequest::new(&[0], &prompt).with_max_new_tokens(5))
            .unwrap();
        m.append_slots(0, &[1, 2]).unwrap();
        let usage = m.memory_usage();
        assert_eq!(usage.token_slots, 12);
        assert_eq!(
            usage.allocated_slots,
            usage.token_slots + usage.waste_slots()
        );
        waste.push(usage.waste_slots());
    }
    // Max 64 slots, Pow2 10 + 8 -> 20 slots, Oracle 15 -> 16 slots, paged 12 slots.
    assert_eq!(waste, vec![52, 8, 4, 0]);
}
