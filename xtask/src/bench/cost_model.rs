//! A calibrated cost model of one GPU engine step, standing in for a real GPU in the `paper`
//! suite: OPT-13B in FP16 on one A100-40GB, the paper's smallest setup (§6.1, Table 1).
//!
//! `step = overhead + per_token × batch tokens + per_context_token × Σ context + swap`, where
//!
//! - **overhead = 20 ms**: every step streams the 26 GB of weights (13 B parameters × 2 bytes)
//!   from HBM at an achieved ≈ 1.3 TB/s (≈ 85 % of the A100-40GB's 1.555 TB/s). Decode is
//!   bandwidth-bound: one step costs at least `W / BW` (`kv_designs.md` §5.1).
//! - **per token = 0.17 ms**: the linear layers cost 2 × 13 G = 26 GFLOP per token; at ≈ 50 % of
//!   the 312 TFLOP/s FP16 tensor-core peak that is 0.167 ms. This dominates prefill (a
//!   1024-token prompt ≈ 190 ms) and adds ≈ 5 ms to a 30-sequence decode step.
//! - **per context token = 0.63 µs**: attention reads the whole cached context each step,
//!   800 KB of K/V per token for OPT-13B (2 × 5120 × 40 layers × 2 bytes, `vllm.md` §1.1) at
//!   1.3 TB/s.
//! - **swap**: vLLM v0 moves each block with one `cudaMemcpyAsync` per layer for K and for V
//!   (80 copies per block), each paying ≈ 10 µs of fixed cost plus `block_size × 10 KiB` at
//!   ≈ 25 GB/s over PCIe 4.0 ×16. Small blocks make many small transfers, which is why the
//!   paper finds swapping slow at small block sizes (§7.3, Fig. 19).
//!
//! Summing the weight-streaming and compute terms (instead of taking their maximum) overstates
//! large batches slightly; the model is for the *shape* of the paper's curves, not its exact
//! figures. KV capacity: ≈ 15.7 K token slots (≈ 12 GB at 800 KB/token; Table 1 via `vllm.md`
//! §1.5); swap space: vLLM's default 4 GiB, ≈ 5.2 K slots.

use serde::Serialize;

/// KV token slots of OPT-13B on one A100-40GB (paper Table 1).
pub const OPT_13B_A100_KV_SLOTS: usize = 15_700;
/// CPU swap slots of vLLM's default 4 GiB swap space at 800 KB per token.
pub const OPT_13B_SWAP_SLOTS: usize = 5_242;

/// Constants of the step-time model; see the module documentation for their derivation.
/// Invariant: every field is finite and non-negative.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct GpuCostModel {
    /// Model and hardware, in words.
    pub name: &'static str,
    /// Fixed seconds per step (weight streaming, launch overhead).
    pub step_overhead_s: f64,
    /// Seconds per token computed in the step (prefill or decode).
    pub per_token_s: f64,
    /// Seconds per context token attended to by the step's sequences.
    pub per_context_token_s: f64,
    /// Host↔device copies per swapped block (one per layer for K and for V).
    pub copies_per_block: f64,
    /// Fixed seconds per host↔device copy.
    pub per_copy_s: f64,
    /// Bytes per copy per token slot of the block (one layer's K or V of one token).
    pub copy_bytes_per_slot: f64,
    /// Host↔device bandwidth in bytes per second.
    pub pcie_bytes_per_s: f64,
}

impl GpuCostModel {
    /// OPT-13B (FP16) on one A100-40GB.
    pub const OPT_13B_A100: Self = Self {
        name: "OPT-13B (FP16) on one A100-40GB, calibrated cost model",
        step_overhead_s: 20e-3,
        per_token_s: 0.17e-3,
        per_context_token_s: 0.63e-6,
        copies_per_block: 80.0,
        per_copy_s: 10e-6,
        copy_bytes_per_slot: 10_240.0,
        pcie_bytes_per_s: 25e9,
    };

    /// Seconds of a step computing `batch_tokens` tokens over `context_tokens` cached and new
    /// context tokens in all, after moving `swapped_blocks` blocks of `block_size` slots
    /// between host and device. An empty step (nothing computed, nothing moved) costs nothing.
    pub fn step_s(
        &self,
        batch_tokens: usize,
        context_tokens: usize,
        swapped_blocks: usize,
        block_size: usize,
    ) -> f64 {
        let swap = self.swap_s(swapped_blocks, block_size);
        if batch_tokens == 0 {
            return swap;
        }
        self.step_overhead_s
            + self.per_token_s * batch_tokens as f64
            + self.per_context_token_s * context_tokens as f64
            + swap
    }

    /// Seconds to move `blocks` blocks of `block_size` slots one way between host and device.
    pub fn swap_s(&self, blocks: usize, block_size: usize) -> f64 {
        let per_copy =
            self.per_copy_s + self.copy_bytes_per_slot * block_size as f64 / self.pcie_bytes_per_s;
        blocks as f64 * self.copies_per_block * per_copy
    }

    /// Seconds to recompute the KV of `tokens` tokens (their share of a prefill step; the
    /// fixed step overhead is paid by the step anyway).
    pub fn recompute_s(&self, tokens: usize) -> f64 {
        self.per_token_s * tokens as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODEL: GpuCostModel = GpuCostModel::OPT_13B_A100;

    #[test]
    fn steps_cost_what_the_paper_setup_implies() {
        // A 1024-token prefill: ≈ 0.19 s; a 30-sequence decode step at 300 tokens of context.
        let prefill = MODEL.step_s(1024, 1024, 0, 16);
        assert!((0.18..0.22).contains(&prefill), "{prefill}");
        let decode = MODEL.step_s(30, 9000, 0, 16);
        assert!((0.025..0.035).contains(&decode), "{decode}");
        assert_eq!(MODEL.step_s(0, 0, 0, 16), 0.0);
        // Bigger batches cost more in total and less per token.
        let big = MODEL.step_s(60, 18_000, 0, 16);
        assert!(big > decode && big / 60.0 < decode / 30.0);
    }

    #[test]
    fn swapping_small_blocks_is_slow_recompute_does_not_care() {
        let tokens = 1024;
        let per_size: Vec<f64> = [1, 8, 16, 64, 256]
            .map(|b| MODEL.swap_s(tokens / b, b))
            .to_vec();
        assert!(per_size.windows(2).all(|w| w[0] > w[1]), "{per_size:?}");
        // At block 1 swapping is far slower than recomputing; at 256 it is cheaper.
        assert!(per_size[0] > 4.0 * MODEL.recompute_s(tokens));
        assert!(per_size[4] < MODEL.recompute_s(tokens));
        assert!(MODEL.step_s(1, 10, 4, 16) > MODEL.step_s(1, 10, 0, 16));
    }
}
