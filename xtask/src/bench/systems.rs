//! The KV managers under test: vellum's paged manager at a block size, and the paper's Orca
//! baselines (static contiguous reservations, Max / Pow2 / Oracle). A suite writes its
//! measurement once, generic over the block manager ([`WithManager`]), and runs it on each.

use kv_block::{
    BlockManager, BlockManagerConfig, PagedBlockManager, PrefixCaching, ReservationPolicy,
    StaticReservationManager,
};
use serde::Serialize;

use super::BenchError;

/// Slots of the Orca baselines' allocation unit: reservations are contiguous runs of
/// 16-slot pages, so each reservation rounds up by at most 15 slots (an allocator's page;
/// the reservation itself dominates their waste).
pub const ORCA_PAGE_SLOTS: usize = 16;

/// How much an Orca variant reserves per request (the paper's §6.1 baselines).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OrcaVariant {
    /// The model's maximum sequence length.
    Max,
    /// Prompt plus the output length rounded up to a power of two.
    Pow2,
    /// Prompt plus the true output length.
    Oracle,
}

/// A KV manager under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum System {
    /// vellum's paged block manager (prefix caching off: synthetic prompts share nothing).
    Vellum {
        /// Token slots per block (≥ 1).
        block_size: usize,
    },
    /// An Orca baseline.
    Orca {
        /// Its reservation policy.
        variant: OrcaVariant,
    },
}

impl System {
    /// The three Orca baselines, worst first.
    pub const ORCA: [System; 3] = [
        System::Orca {
            variant: OrcaVariant::Max,
        },
        System::Orca {
            variant: OrcaVariant::Pow2,
        },
        System::Orca {
            variant: OrcaVariant::Oracle,
        },
    ];

    /// Stable machine-readable name: `vellum_b16`, `orca_max`, `orca_pow2`, `orca_oracle`.
    pub fn key(&self) -> String {
        match self {
            System::Vellum { block_size } => format!("vellum_b{block_size}"),
            System::Orca { variant } => format!("orca_{}", variant.name().to_lowercase()),
        }
    }

    /// Human-readable name: `vellum (block 16)`, `Orca (Max)`.
    pub fn label(&self) -> String {
        match self {
            System::Vellum { block_size } => format!("vellum (block {block_size})"),
            System::Orca { variant } => format!("Orca ({})", variant.name()),
        }
    }

    /// Token slots per allocation unit of this system.
    pub fn block_size(&self) -> usize {
        match self {
            System::Vellum { block_size } => *block_size,
            System::Orca { .. } => ORCA_PAGE_SLOTS,
        }
    }

    /// Builds this system's manager over `capacity` (rounded down to whole blocks) and hands
    /// it to `job`. `max_len` is the model's maximum sequence length (what Max reserves).
    pub fn run_with<W: WithManager>(
        &self,
        capacity: KvCapacity,
        max_len: usize,
        job: W,
    ) -> Result<W::Output, BenchError> {
        let block_size = self.block_size();
        if block_size == 0 {
            return Err(BenchError::InvalidConfig("block size 0".into()));
        }
        let config = BlockManagerConfig::new(
            capacity.device_slots / block_size,
            capacity.cpu_slots / block_size,
        )
        .with_block_size(block_size);
        match *self {
            System::Vellum { .. } => {
                job.run(PagedBlockManager::new(config, PrefixCaching::Disabled)?)
            }
            System::Orca { variant } => job.run(StaticReservationManager::new(
                config,
                variant.policy(max_len),
            )?),
        }
    }
}

impl OrcaVariant {
    /// The paper's name of the variant.
    pub fn name(self) -> &'static str {
        match self {
            OrcaVariant::Max => "Max",
            OrcaVariant::Pow2 => "Pow2",
            OrcaVariant::Oracle => "Oracle",
        }
    }

    /// The `kv-block` reservation policy, for a model of maximum length `max_len`.
    pub fn policy(self, max_len: usize) -> ReservationPolicy {
        match self {
            OrcaVariant::Max => ReservationPolicy::Max { max_len },
            OrcaVariant::Pow2 => ReservationPolicy::Pow2,
            OrcaVariant::Oracle => ReservationPolicy::Oracle,
        }
    }
}

/// KV capacity of a simulated device, in token slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct KvCapacity {
    /// Slots of the device pool.
    pub device_slots: usize,
    /// Slots of the CPU swap pool (0 disables swapping).
    pub cpu_slots: usize,
}

/// A measurement generic over the block manager: [`System::run_with`] calls `run` with the
/// system's freshly built, empty manager.
pub trait WithManager {
    /// What the measurement produces.
    type Output;
    /// Runs the measurement on `manager`.
    fn run<M: BlockManager>(self, manager: M) -> Result<Self::Output, BenchError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reports the manager's block size and device pool size.
    struct Shape;

    impl WithManager for Shape {
        type Output = (usize, usize);
        fn run<M: BlockManager>(self, manager: M) -> Result<(usize, usize), BenchError> {
            Ok((manager.block_size(), manager.usage().device_total))
        }
    }

    #[test]
    fn keys_labels_and_managers_match_the_system() {
        let capacity = KvCapacity {
            device_slots: 1000,
            cpu_slots: 0,
        };
        let vellum = System::Vellum { block_size: 32 };
        assert_eq!(vellum.key(), "vellum_b32");
        assert_eq!(vellum.label(), "vellum (block 32)");
        assert_eq!(vellum.run_with(capacity, 2048, Shape).unwrap(), (32, 31));
        let keys: Vec<String> = System::ORCA.iter().map(System::key).collect();
        assert_eq!(keys, ["orca_max", "orca_pow2", "orca_oracle"]);
        assert_eq!(System::ORCA[1].label(), "Orca (Pow2)");
        assert_eq!(
            System::ORCA[0].run_with(capacity, 2048, Shape).unwrap(),
            (16, 62)
        );
    }

    #[test]
    fn degenerate_capacities_are_errors_not_panics() {
        let none = KvCapacity {
            device_slots: 8,
            cpu_slots: 0,
        };
        assert!(
            System::Vellum { block_size: 16 }
                .run_with(none, 2048, Shape)
                .is_err()
        );
        assert!(
            System::Vellum { block_size: 0 }
                .run_with(none, 2048, Shape)
                .is_err()
        );
    }
}
