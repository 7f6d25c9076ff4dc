//! Storage of live groups: a slab addressed by small keys (what the queues hold), with
//! indices from request ids and sequence ids to the owning group.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use kv_block::SeqId;

use crate::group::SequenceGroup;
use crate::request::RequestId;

/// Slot of a live group in the [`Registry`]. Keys are reused after a group leaves, so only
/// the queues (which drop a key when its group leaves) may hold them.
pub(crate) type GroupKey = usize;

/// Invariant: `by_request` and `by_seq` point exactly at the live groups and their live
/// sequences.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    slots: Vec<Option<SequenceGroup>>,
    vacant: Vec<GroupKey>,
    by_request: HashMap<RequestId, GroupKey>,
    by_seq: HashMap<SeqId, GroupKey, BuildHasherDefault<SeqIdHasher>>,
}

/// A multiplicative hash for sequence ids: they are small counters chosen by the scheduler
/// (never by a client), so a DoS-resistant hash buys nothing and costs a third of a step.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct SeqIdHasher(u64);

impl Hasher for SeqIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = (self.0.rotate_left(5) ^ value).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

impl Registry {
    pub(crate) fn insert(&mut self, group: SequenceGroup) -> GroupKey {
        let key = self.vacant.pop().unwrap_or(self.slots.len());
        self.by_request.insert(group.request_id().clone(), key);
        for seq in group.seqs() {
            self.by_seq.insert(seq.id(), key);
        }
        if key == self.slots.len() {
            self.slots.push(Some(group));
        } else {
            self.slots[key] = Some(group);
        }
        key
    }

    pub(crate) fn remove(&mut self, key: GroupKey) -> Option<SequenceGroup> {
        let group = self.slots.get_mut(key)?.take()?;
        self.by_request.remove(group.request_id());
        for seq in group.seqs() {
            self.by_seq.remove(&seq.id());
        }
        self.vacant.push(key);
        Some(group)
    }

    pub(crate) fn contains_request(&self, request_id: &str) -> bool {
        self.by_request.contains_key(request_id)
    }

    pub(crate) fn key_of_request(&self, request_id: &str) -> Option<GroupKey> {
        self.by_request.get(request_id).copied()
    }

    pub(crate) fn key_of_seq(&self, seq: SeqId) -> Option<GroupKey> {
        self.by_seq.get(&seq).copied()
    }

    pub(crate) fn link_seq(&mut self, seq: SeqId, key: GroupKey) {
        self.by_seq.insert(seq, key);
    }

    pub(crate) fn unlink_seq(&mut self, seq: SeqId) {
        self.by_seq.remove(&seq);
    }

    /// The live group at `key`. Keys come from the queues, which hold live keys only.
    pub(crate) fn group(&self, key: GroupKey) -> &SequenceGroup {
        self.slots[key]
            .as_ref()
            .expect("queues hold the keys of live groups only")
    }

    /// Mutable access to the live group at `key` (same contract as [`Registry::group`]).
    pub(crate) fn group_mut(&mut self, key: GroupKey) -> &mut SequenceGroup {
        self.slots[key]
            .as_mut()
            .expect("queues hold the keys of live groups only")
    }

    pub(crate) fn len(&self) -> usize {
        self.by_request.len()
    }

    pub(crate) fn groups(&self) -> impl Iterator<Item = (GroupKey, &SequenceGroup)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(key, slot)| slot.as_ref().map(|g| (key, g)))
    }

    pub(crate) fn num_indexed_seqs(&self) -> usize {
        self.by_seq.len()
    }
}
