//! The memory pool of a process with a memory limit: fair shares for operators that can spill,
//! and a part of the pool they can never take, kept for the ones that cannot.
//!
//! DataFusion's `FairSpillPool` lets spilling operators (sorts, aggregates) together fill the
//! whole pool. A sort that spills first frees the workspace it reserved for merging, then asks
//! for it again as a non-spilling merge; between the two, the other partitions' sorts take the
//! freed bytes as their fair share grows, and the merge fails with "Resources exhausted" although
//! it only wanted back what it had (apache/datafusion#24739, fixed upstream after the version
//! this workspace builds on). Keeping [`HeadroomPool::HEADROOM_DIVISOR`]'s share of the pool out
//! of the spillers' reach makes that race harmless: a merge finds room while the spillers are at
//! their limit, and the spillers spill a little earlier instead.

use std::fmt;
use std::sync::Mutex;

use datafusion::error::{DataFusionError, Result};
use datafusion::execution::memory_pool::{
    MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation, human_readable_size,
};

/// Fair shares for spilling operators within all but a headroom of the pool (or all but what
/// the non-spilling operators hold, when that is more); operators that cannot spill may use
/// whatever is free, the headroom included.
#[derive(Debug)]
pub struct HeadroomPool {
    size: usize,
    headroom: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Registered consumers that can spill.
    spillers: usize,
    /// Bytes held by consumers that can spill.
    spillable: usize,
    /// Bytes held by consumers that cannot.
    unspillable: usize,
}

impl HeadroomPool {
    /// The pool keeps `size / HEADROOM_DIVISOR` out of the spillers' reach: with DataFusion's
    /// sort keeping a sixteenth for its merge ([`crate::RuntimeLimits::fit`]), room for the
    /// merges of five sorts spilling at once.
    pub const HEADROOM_DIVISOR: usize = 3;

    /// A pool of `size` bytes.
    pub fn new(size: usize) -> Self {
        Self {
            size,
            headroom: size / Self::HEADROOM_DIVISOR,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is three counters updated in one statement each: a panic elsewhere while
        // the lock was held cannot have left them half-written.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn refuse(
        &self,
        reservation: &MemoryReservation,
        additional: usize,
        available: usize,
    ) -> DataFusionError {
        DataFusionError::ResourcesExhausted(format!(
            "Failed to allocate additional {} for {} with {} already allocated for this \
             reservation - {} remain available for it in the memory pool: {self}",
            human_readable_size(additional),
            reservation.consumer().name(),
            human_readable_size(reservation.size()),
            human_readable_size(available),
        ))
    }
}

impl MemoryPool for HeadroomPool {
    fn name(&self) -> &str {
        "fair with headroom"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        if consumer.can_spill() {
            self.state().spillers += 1;
        }
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        if consumer.can_spill() {
            let mut state = self.state();
            state.spillers = state.spillers.saturating_sub(1);
        }
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        let mut state = self.state();
        if reservation.consumer().can_spill() {
            state.spillable += additional;
        } else {
            state.unspillable += additional;
        }
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        let mut state = self.state();
        if reservation.consumer().can_spill() {
            state.spillable = state.spillable.saturating_sub(shrink);
        } else {
            state.unspillable = state.unspillable.saturating_sub(shrink);
        }
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        let mut state = self.state();
        let free = self
            .size
            .saturating_sub(state.spillable + state.unspillable);
        if reservation.consumer().can_spill() {
            // Each spiller's share of what is neither the headroom nor held by the unspillable
            // beyond it. (Keeping the headroom free beside what they hold instead starves the
            // spillers while a merge of spill files, which grows as far as it can, is running.)
            let for_spillers = self
                .size
                .saturating_sub(self.headroom.max(state.unspillable));
            let share = for_spillers / state.spillers.max(1);
            let available = share.saturating_sub(reservation.size()).min(free);
            if additional > available {
                return Err(self.refuse(reservation, additional, available));
            }
            state.spillable += additional;
        } else {
            if additional > free {
                return Err(self.refuse(reservation, additional, free));
            }
            state.unspillable += additional;
        }
        Ok(())
    }

    fn reserved(&self) -> usize {
        let state = self.state();
        state.spillable + state.unspillable
    }

    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.size)
    }
}

impl fmt::Display for HeadroomPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}(pool_size: {}, headroom: {})",
            self.name(),
            human_readable_size(self.size),
            human_readable_size(self.headroom)
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    const MIB: usize = 1 << 20;

    /// 9 MiB: a headroom of 3.
    fn pool() -> Arc<dyn MemoryPool> {
        Arc::new(HeadroomPool::new(9 * MIB))
    }

    fn spiller(pool: &Arc<dyn MemoryPool>, name: &str) -> MemoryReservation {
        MemoryConsumer::new(name)
            .with_can_spill(true)
            .register(pool)
    }

    #[test]
    fn spillers_share_all_but_the_headroom_and_a_merge_still_finds_room() {
        let pool = pool();
        let sorters: Vec<MemoryReservation> = (0..3)
            .map(|i| spiller(&pool, &format!("sorter{i}")))
            .collect();
        // Three spillers share 6 MiB: 2 MiB each, and not a byte more.
        for sorter in &sorters {
            sorter.try_grow(2 * MIB).unwrap();
        }
        let error = sorters[0].try_grow(1).unwrap_err().to_string();
        assert!(
            error.contains("sorter0") && error.contains("Resources exhausted"),
            "{error}"
        );

        // A merge that cannot spill gets the headroom the spillers could not take.
        let merge = MemoryConsumer::new("merge").register(&pool);
        merge.try_grow(3 * MIB).unwrap();
        assert_eq!(pool.reserved(), 9 * MIB);
        // Past the pool, it fails too.
        assert!(merge.try_grow(1).is_err());
    }

    #[test]
    fn past_the_headroom_what_cannot_spill_shrinks_the_spillers_part() {
        let pool = pool();
        let sorter = spiller(&pool, "sorter");
        // Alone, a spiller may have everything but the headroom.
        sorter.try_grow(6 * MIB).unwrap();
        assert!(sorter.try_grow(1).is_err());
        let merge = MemoryConsumer::new("merge of spill files").register(&pool);
        merge.try_grow(3 * MIB).unwrap();
        sorter.shrink(5 * MIB);
        // 5 MiB held by what cannot spill leave the spiller 9 - 5 = 4 MiB.
        merge.try_grow(2 * MIB).unwrap();
        assert!(sorter.try_grow(3 * MIB + 1).is_err());
        sorter.try_grow(3 * MIB).unwrap();
        assert_eq!(pool.reserved(), 9 * MIB);
        drop(merge);
        assert_eq!(pool.reserved(), 4 * MIB);
        drop(sorter);
        assert_eq!(pool.reserved(), 0);
    }
}
