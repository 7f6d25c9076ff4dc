//! Scheduling policies: the order of the queues and the victim of preemption.

use std::cmp::Ordering;

use crate::group::SequenceGroup;

/// Decides which group is served first and which is preempted first.
///
/// The scheduler sorts the waiting, running and swapped queues with [`Policy::compare`]
/// (stably) at every step, serves each queue from its front, and, when a running group needs
/// blocks, evicts [`Policy::select_victim`] among the running groups not yet served this step.
/// Implementations must be a total order (consistent across calls) for FCFS-like guarantees.
pub trait Policy: Send {
    /// A short name for logs and metrics.
    fn name(&self) -> &'static str;

    /// `Less` if `a` should be served before `b`.
    fn compare(&self, a: &SequenceGroup, b: &SequenceGroup) -> Ordering;

    /// Index in `candidates` (in serving order, never empty) of the group to preempt. The
    /// default picks the last one, the group this policy serves last.
    fn select_victim(&self, candidates: &[&SequenceGroup]) -> usize {
        candidates.len().saturating_sub(1)
    }
}

/// First come, first served (the paper's policy): earliest arrival first, so the latest
/// arrival is preempted first. Ties break on insertion order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fcfs;

impl Policy for Fcfs {
    fn name(&self) -> &'static str {
        "fcfs"
    }

    fn compare(&self, a: &SequenceGroup, b: &SequenceGroup) -> Ordering {
        by_arrival(a, b)
    }
}

/// Lower priority value first, then FCFS (vLLM's `priority` policy).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Priority;

impl Policy for Priority {
    fn name(&self) -> &'static str {
        "priority"
    }

    fn compare(&self, a: &SequenceGroup, b: &SequenceGroup) -> Ordering {
        a.priority()
            .cmp(&b.priority())
            .then_with(|| by_arrival(a, b))
    }
}

/// Earliest `arrival_time` first, insertion order on ties.
pub fn by_arrival(a: &SequenceGroup, b: &SequenceGroup) -> Ordering {
    a.arrival_time()
        .total_cmp(&b.arrival_time())
        .then(a.arrival_order().cmp(&b.arrival_order()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Request;

    fn group(order: u64, arrival: f64, priority: i64) -> SequenceGroup {
        let request = Request::new(format!("r{order}"), vec![1], arrival).with_priority(priority);
        SequenceGroup::new(request, order, order)
    }

    #[test]
    fn fcfs_orders_by_arrival_then_insertion() {
        let (a, b, c) = (group(0, 2.0, 0), group(1, 1.0, 5), group(2, 1.0, -5));
        assert_eq!(Fcfs.compare(&b, &a), Ordering::Less);
        assert_eq!(Fcfs.compare(&b, &c), Ordering::Less);
        assert_eq!(Fcfs.compare(&c, &b), Ordering::Greater);
        assert_eq!(Fcfs.select_victim(&[&b, &c, &a]), 2);
    }

    #[test]
    fn priority_orders_by_value_then_arrival() {
        let (a, b, c) = (group(0, 2.0, 0), group(1, 1.0, 5), group(2, 3.0, -5));
        assert_eq!(Priority.compare(&c, &a), Ordering::Less);
        assert_eq!(Priority.compare(&a, &b), Ordering::Less);
        assert_eq!(Priority.compare(&b, &group(3, 0.5, 5)), Ordering::Greater);
    }
}
