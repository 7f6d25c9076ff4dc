//! proptest state machine: random allocate / append / mark computed / fork / swap out / swap in
//! / free sequences against a naive model of shared blocks, with every invariant checked after
//! every step.

mod common;

use std::collections::{BTreeMap, HashMap};

use common::check_invariants;
use kv_block::{
    AllocStatus, AllocationRequest, BlockCopy, BlockId, BlockManager, BlockManagerConfig, KvError,
    Location, PagedBlockManager, PrefixCaching, SeqId, TokenId, blocks_for_tokens,
};
use proptest::prelude::*;

const BS: usize = 4;
const DEVICE_BLOCKS: usize = 24;
const CPU_BLOCKS: usize = 12;

#[derive(Debug, Clone)]
enum Op {
    /// A group of `n` sequences over `base`'s shared prefix (cut to `common`) plus `suffix`.
    Allocate {
        base: u32,
        common: usize,
        suffix: Vec<TokenId>,
        n: usize,
        salt: u8,
    },
    Append {
        pick: usize,
        tokens: Vec<TokenId>,
    },
    MarkComputed {
        pick: usize,
        fraction: u8,
    },
    Fork {
        pick: usize,
    },
    SwapOut {
        pick: usize,
    },
    SwapIn {
        pick: usize,
    },
    SwapRoundTrip {
        pick: usize,
    },
    Free {
        pick: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let tokens = |max| prop::collection::vec(0u32..3, 1..max);
    prop_oneof![
        3 => (0u32..3, 0usize..14, prop::collection::vec(0u32..3, 0..6), 1usize..4, 0u8..2)
            .prop_map(|(base, common, suffix, n, salt)| Op::Allocate { base, common, suffix, n, salt }),
        4 => (any::<usize>(), tokens(7)).prop_map(|(pick, tokens)| Op::Append { pick, tokens }),
        3 => (any::<usize>(), 0u8..=4).prop_map(|(pick, fraction)| Op::MarkComputed { pick, fraction }),
        2 => any::<usize>().prop_map(|pick| Op::Fork { pick }),
        1 => any::<usize>().prop_map(|pick| Op::SwapOut { pick }),
        1 => any::<usize>().prop_map(|pick| Op::SwapIn { pick }),
        1 => any::<usize>().prop_map(|pick| Op::SwapRoundTrip { pick }),
        2 => any::<usize>().prop_map(|pick| Op::Free { pick }),
    ]
}

/// A sequence as the naive model sees it: its tokens, its group and abstract shared blocks.
#[derive(Debug, Clone)]
struct ModelSeq {
    tokens: Vec<TokenId>,
    salt: u8,
    group: u64,
    swapped: bool,
    /// Abstract block ids: equal ids must be the same physical block.
    blocks: Vec<u64>,
    computed: usize,
}

#[derive(Default)]
struct Model {
    seqs: BTreeMap<SeqId, ModelSeq>,
    next_seq: SeqId,
    next_block: u64,
    next_group: u64,
    /// Every (tokens, salt) prefix whose KV was computed at some point.
    computed: Vec<(Vec<TokenId>, u8)>,
}

impl Model {
    fn pick(&self, pick: usize) -> Option<SeqId> {
        let live: Vec<SeqId> = self.seqs.keys().copied().collect();
        (!live.is_empty()).then(|| live[pick % live.len()])
    }

    fn group(&self, group: u64) -> Vec<SeqId> {
        self.seqs
            .iter()
            .filter(|(_, s)| s.group == group)
            .map(|(&id, _)| id)
            .collect()
    }

    fn fresh_block(&mut self) -> u64 {
        self.next_block += 1;
        self.next_block
    }

    fn references(&self, block: u64) -> usize {
        self.seqs
            .values()
            .flat_map(|s| &s.blocks)
            .filter(|&&b| b == block)
            .count()
    }

    /// Appends to the model sequence exactly as PagedAttention prescribes.
    fn append(&mut self, seq: SeqId, tokens: &[TokenId]) -> bool {
        let state = &self.seqs[&seq];
        let len = state.tokens.len();
        let copies = !len.is_multiple_of(BS) && self.references(*state.blocks.last().unwrap()) > 1;
        let new_blocks = blocks_for_tokens(len + tokens.len(), BS) - state.blocks.len();
        let fresh: Vec<u64> = (0..usize::from(copies) + new_blocks)
            .map(|_| self.fresh_block())
            .collect();
        let state = self.seqs.get_mut(&seq).unwrap();
        let mut fresh = fresh.into_iter();
        if copies {
            *state.blocks.last_mut().unwrap() = fresh.next().unwrap();
        }
        state.blocks.extend(fresh);
        state.tokens.extend_from_slice(tokens);
        copies
    }
}

fn prompt(base: u32, common: usize, suffix: &[TokenId]) -> Vec<TokenId> {
    let mut tokens: Vec<TokenId> = (0..common as u32).map(|i| base * 100 + i).collect();
    tokens.extend_from_slice(suffix);
    if tokens.is_empty() {
        tokens.push(base);
    }
    tokens
}

/// Which positions of `seqs` share a physical block, as first-appearance indices.
fn sharing(m: &PagedBlockManager, seqs: &[SeqId]) -> Vec<Vec<usize>> {
    let mut first: HashMap<BlockId, usize> = HashMap::new();
    seqs.iter()
        .map(|&s| {
            m.block_table(s)
                .unwrap()
                .blocks()
                .iter()
                .map(|&b| {
                    let next = first.len();
                    *first.entry(b).or_insert(next)
                })
                .collect()
        })
        .collect()
}

/// Model sharing implies physical sharing; without prefix caching the converse holds too.
fn check_model(m: &PagedBlockManager, model: &Model, exact: bool) -> Result<(), TestCaseError> {
    prop_assert_eq!(m.sequences().count(), model.seqs.len());
    let mut physical: HashMap<u64, (Location, BlockId)> = HashMap::new();
    let mut abstract_of: HashMap<(Location, BlockId), u64> = HashMap::new();
    for (&seq, state) in &model.seqs {
        let table = m.block_table(seq).unwrap();
        let location = m.location(seq).unwrap();
        prop_assert_eq!(table.num_tokens(), state.tokens.len());
        prop_assert_eq!(location == Location::Cpu, state.swapped);
        prop_assert_eq!(table.blocks().len(), state.blocks.len());
        for (&abstract_block, &block) in state.blocks.iter().zip(table.blocks()) {
            let seen = *physical.entry(abstract_block).or_insert((location, block));
            prop_assert_eq!(seen, (location, block), "shared block split");
            let owner = *abstract_of
                .entry((location, block))
                .or_insert(abstract_block);
            prop_assert!(
                !exact || owner == abstract_block,
                "unrelated blocks merged without caching"
            );
        }
    }
    Ok(())
}

/// Runs one op; returns an error on any broken property.
fn step(
    m: &mut PagedBlockManager,
    model: &mut Model,
    op: &Op,
    caching: bool,
) -> Result<(), TestCaseError> {
    let free_before = m.usage().device_free;
    match op {
        Op::Allocate {
            base,
            common,
            suffix,
            n,
            salt,
        } => {
            let tokens = prompt(*base, *common, suffix);
            let ids: Vec<SeqId> = (0..*n as u64).map(|i| model.next_seq + i).collect();
            let keys = [*salt];
            let request = AllocationRequest::new(&ids, &tokens).with_extra_keys(&keys);
            let status = m.can_allocate(&request);
            let result = m.allocate(&request);
            if !caching {
                let fits = blocks_for_tokens(tokens.len(), BS) <= free_before;
                prop_assert_eq!(result.is_ok(), fits);
            }
            match result {
                Ok(hit) => {
                    let hit = hit.num_computed_tokens;
                    prop_assert!(hit < tokens.len() && hit % BS == 0);
                    prop_assert!(caching || hit == 0);
                    let known = model
                        .computed
                        .iter()
                        .any(|(p, s)| s == salt && p.len() >= hit && p[..hit] == tokens[..hit]);
                    prop_assert!(hit == 0 || known, "served KV that was never computed");
                    let table = m.block_table(ids[0]).unwrap().blocks().to_vec();
                    for (i, &b) in table[..hit / BS].iter().enumerate() {
                        prop_assert_eq!(
                            m.device_pool().cached_tokens(b).unwrap(),
                            Some(&tokens[i * BS..(i + 1) * BS])
                        );
                    }
                    let blocks: Vec<u64> = (0..table.len()).map(|_| model.fresh_block()).collect();
                    model.next_group += 1;
                    for &id in &ids {
                        let state = ModelSeq {
                            tokens: tokens.clone(),
                            salt: *salt,
                            group: model.next_group,
                            swapped: false,
                            blocks: blocks.clone(),
                            computed: hit,
                        };
                        model.seqs.insert(id, state);
                    }
                    model.next_seq += *n as u64;
                }
                Err(e) => {
                    prop_assert!(
                        status != AllocStatus::Ok,
                        "can_allocate said Ok but allocate failed"
                    );
                    prop_assert!(matches!(e, KvError::OutOfBlocks { .. }), "unexpected {e:?}");
                }
            }
        }
        Op::Append { pick, tokens } => {
            let Some(seq) = model.pick(*pick) else {
                return Ok(());
            };
            if model.seqs[&seq].swapped {
                prop_assert_eq!(
                    m.append_slots(seq, tokens),
                    Err(KvError::SequenceSwappedOut(seq))
                );
                return Ok(());
            }
            let can = m.can_append_slots(&[seq], tokens.len()).unwrap();
            let last = m.block_table(seq).unwrap().blocks().last().copied();
            let rc_before = last.map(|b| m.device_pool().ref_count(b).unwrap());
            match m.append_slots(seq, tokens) {
                Ok(copy) => {
                    let model_copies = model.append(seq, tokens);
                    prop_assert_eq!(copy.is_some(), model_copies);
                    if let Some(BlockCopy { src, dst }) = copy {
                        prop_assert_ne!(src, dst);
                        prop_assert_eq!(Some(src), last);
                        prop_assert_eq!(
                            m.device_pool().ref_count(src).unwrap() + 1,
                            rc_before.unwrap()
                        );
                        prop_assert_eq!(m.device_pool().ref_count(dst).unwrap(), 1);
                    }
                }
                Err(e) => {
                    prop_assert!(!can, "can_append_slots said yes but append failed: {e:?}");
                    prop_assert!(
                        matches!(e, KvError::OutOfBlocks { .. }),
                        "unexpected {:?}",
                        e
                    );
                }
            }
        }
        Op::MarkComputed { pick, fraction } => {
            let Some(seq) = model.pick(*pick) else {
                return Ok(());
            };
            let state = model.seqs.get_mut(&seq).unwrap();
            let n = state.tokens.len() * *fraction as usize / 4;
            m.mark_computed(seq, n).unwrap();
            state.computed = state.computed.max(n);
            let entry = (state.tokens[..state.computed].to_vec(), state.salt);
            model.computed.push(entry);
            prop_assert_eq!(m.num_computed_tokens(seq).unwrap(), state.computed);
        }
        Op::Fork { pick } => {
            let Some(parent) = model.pick(*pick) else {
                return Ok(());
            };
            let child = model.next_seq;
            if model.seqs[&parent].swapped {
                prop_assert_eq!(
                    m.fork(parent, child),
                    Err(KvError::SequenceSwappedOut(parent))
                );
                return Ok(());
            }
            prop_assert_eq!(m.fork(parent, child).unwrap(), vec![]);
            prop_assert_eq!(m.usage().device_free, free_before, "fork allocates nothing");
            prop_assert_eq!(
                m.block_table(parent).unwrap(),
                m.block_table(child).unwrap()
            );
            let state = model.seqs[&parent].clone();
            model.seqs.insert(child, state);
            model.next_seq += 1;
        }
        Op::SwapOut { pick } | Op::SwapIn { pick } | Op::SwapRoundTrip { pick } => {
            let Some(seq) = model.pick(*pick) else {
                return Ok(());
            };
            let group = model.group(model.seqs[&seq].group);
            let swapped = model.seqs[&seq].swapped;
            if group.iter().any(|s| model.seqs[s].swapped != swapped) {
                return Ok(()); // a fork of a swapped-in group member is still on the device
            }
            let before = sharing(m, &group);
            let tables_before: Vec<_> = group
                .iter()
                .map(|&s| m.block_table(s).unwrap().clone())
                .collect();
            let round_trip = matches!(op, Op::SwapRoundTrip { .. });
            let result = if swapped {
                m.swap_in(&group)
            } else {
                m.swap_out(&group)
            };
            match result {
                Ok(copies) => {
                    let distinct = before.iter().flatten().max().map_or(0, |&m| m + 1);
                    prop_assert_eq!(copies.len(), distinct, "each shared block is copied once");
                    prop_assert_eq!(sharing(m, &group), before.clone());
                    for &s in &group {
                        model.seqs.get_mut(&s).unwrap().swapped = !swapped;
                    }
                    if round_trip {
                        let back = if swapped {
                            m.swap_out(&group)
                        } else {
                            m.swap_in(&group)
                        };
                        if back.is_ok() {
                            for &s in &group {
                                model.seqs.get_mut(&s).unwrap().swapped = swapped;
                            }
                            prop_assert_eq!(sharing(m, &group), before);
                            for (&s, table) in group.iter().zip(&tables_before) {
                                prop_assert_eq!(
                                    m.block_table(s).unwrap().num_tokens(),
                                    table.num_tokens()
                                );
                            }
                        }
                    }
                }
                Err(e) => {
                    prop_assert!(matches!(e, KvError::OutOfBlocks { .. }), "unexpected {e:?}");
                    for (&s, table) in group.iter().zip(&tables_before) {
                        prop_assert_eq!(
                            m.block_table(s).unwrap(),
                            table,
                            "a failed swap changes nothing"
                        );
                    }
                }
            }
        }
        Op::Free { pick } => {
            let Some(seq) = model.pick(*pick) else {
                return Ok(());
            };
            m.free(seq).unwrap();
            prop_assert_eq!(m.free(seq), Err(KvError::UnknownSequence(seq)));
            model.seqs.remove(&seq);
        }
    }
    Ok(())
}

fn run(ops: &[Op], caching: PrefixCaching) -> Result<(), TestCaseError> {
    let config = BlockManagerConfig::new(DEVICE_BLOCKS, CPU_BLOCKS)
        .with_block_size(BS)
        .with_watermark(0.0);
    let mut m = PagedBlockManager::new(config, caching).unwrap();
    let mut model = Model::default();
    let caching = caching == PrefixCaching::Enabled;
    for op in ops {
        step(&mut m, &mut model, op, caching)?;
        check_invariants(&m).map_err(|e| TestCaseError::fail(format!("after {op:?}: {e}")))?;
        check_model(&m, &model, !caching)?;
    }
    let live: Vec<SeqId> = model.seqs.keys().copied().collect();
    for seq in live {
        m.free(seq).unwrap();
    }
    prop_assert_eq!(m.usage().device_free, DEVICE_BLOCKS);
    prop_assert_eq!(m.usage().cpu_free, CPU_BLOCKS);
    check_invariants(&m).map_err(TestCaseError::fail)?;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    #[test]
    fn paged_manager_matches_the_model_without_prefix_caching(ops in prop::collection::vec(op(), 1..40)) {
        run(&ops, PrefixCaching::Disabled)?;
    }

    #[test]
    fn paged_manager_keeps_its_invariants_with_prefix_caching(ops in prop::collection::vec(op(), 1..40)) {
        run(&ops, PrefixCaching::Enabled)?;
    }
}
