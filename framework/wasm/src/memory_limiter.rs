//! The store's resource limiter, which caps linear memory and remembers when it said no.

use wasmtime::ResourceLimiter;

/// Most table elements an instance may have (8 bytes each in wasmtime). Rust modules have one
/// small table of function pointers; this only stops a hostile `table.grow`.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

/// Refuses memory growth past the limit and records that it did.
///
/// A Rust guest that runs out of memory aborts without calling its panic hook, so the trap that
/// follows carries no message; the recorded refusal is how the host tells it was the memory
/// limit, not a bug in the job.
#[derive(Debug)]
pub(crate) struct MemoryLimiter {
    limit_bytes: usize,
    refused: bool,
}

impl MemoryLimiter {
    pub(crate) fn new(limit_bytes: usize) -> MemoryLimiter {
        MemoryLimiter {
            limit_bytes,
            refused: false,
        }
    }

    /// Whether growth was refused since the last [`MemoryLimiter::reset`].
    pub(crate) fn refused(&self) -> bool {
        self.refused
    }

    /// Forgets earlier refusals: a guest may survive one (a failed `try_reserve`), and a later
    /// trap in another call should not be blamed on it.
    pub(crate) fn reset(&mut self) {
        self.refused = false;
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // `Ok(false)` makes `memory.grow` return -1: the guest's allocator sees an ordinary
        // allocation failure and aborts (or recovers) on its own.
        if desired > self.limit_bytes {
            self.refused = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        // Allowed by us but refused by the OS: just as much the memory limit from the guest's
        // point of view.
        tracing::debug!("a job module's memory could not grow: {error:#}");
        self.refused = true;
        Ok(())
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }

    fn instances(&self) -> usize {
        1
    }

    fn memories(&self) -> usize {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_past_the_limit_is_refused_and_remembered_until_reset() {
        let mut limiter = MemoryLimiter::new(1 << 20);
        assert!(limiter.memory_growing(0, 1 << 20, None).unwrap());
        assert!(!limiter.refused());
        assert!(
            !limiter
                .memory_growing(1 << 20, (1 << 20) + 65536, None)
                .unwrap()
        );
        assert!(limiter.refused());
        limiter.reset();
        assert!(!limiter.refused());
    }
}
