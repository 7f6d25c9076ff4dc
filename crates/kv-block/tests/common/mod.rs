//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test binary uses its own subset

use kv_block::{
    BlockHasher, BlockManager, BlockManagerConfig, Location, PagedBlockManager, PrefixCaching,
    TokenId, blocks_for_tokens,
};

/// A paged manager with a watermark of 0, as in vLLM's unit tests.
pub fn paged(
    block_size: usize,
    device: usize,
    cpu: usize,
    caching: PrefixCaching,
) -> PagedBlockManager {
    let config = BlockManagerConfig::new(device, cpu)
        .with_block_size(block_size)
        .with_watermark(0.0);
    PagedBlockManager::new(config, caching).unwrap()
}

/// Prompt tokens `start..start + len`.
pub fn tokens(start: u32, len: usize) -> Vec<TokenId> {
    (start..start + len as u32).collect()
}

/// The structural invariants of a paged manager, checked pool by pool.
pub fn check_invariants<H: BlockHasher>(m: &PagedBlockManager<H>) -> Result<(), String> {
    for (location, pool) in [
        (Location::Device, m.device_pool()),
        (Location::Cpu, m.cpu_pool()),
    ] {
        let mut references = vec![0u32; pool.num_blocks()];
        for seq in m.sequences() {
            if m.location(seq).map_err(|e| e.to_string())? != location {
                continue;
            }
            let table = m.block_table(seq).map_err(|e| e.to_string())?;
            if table.blocks().len() != blocks_for_tokens(table.num_tokens(), m.block_size()) {
                return Err(format!(
                    "seq {seq}: {} blocks for {} tokens",
                    table.blocks().len(),
                    table.num_tokens()
                ));
            }
            for &b in table.blocks() {
                references[b as usize] += 1;
            }
        }
        let mut free = 0;
        for (block, &expected) in references.iter().enumerate() {
            let block = block as u32;
            let rc = pool.ref_count(block).map_err(|e| e.to_string())?;
            if rc != expected {
                return Err(format!(
                    "{location:?} block {block}: refcount {rc}, {expected} table entries"
                ));
            }
            let is_free = pool.is_free(block).map_err(|e| e.to_string())?;
            if is_free != (rc == 0) {
                return Err(format!(
                    "{location:?} block {block}: free {is_free} with refcount {rc}"
                ));
            }
            free += usize::from(is_free);
        }
        if free != pool.num_free() || pool.eviction_order().count() != free {
            return Err(format!(
                "{location:?}: free count {} but {free} free blocks",
                pool.num_free()
            ));
        }
        if pool.num_free() + pool.num_used() != pool.num_blocks() {
            return Err(format!("{location:?}: free + used != total"));
        }
    }
    let usage = m.usage();
    if usage.device_free != m.device_pool().num_free() || usage.cpu_free != m.cpu_pool().num_free()
    {
        return Err("usage disagrees with the pools".into());
    }
    Ok(())
}
