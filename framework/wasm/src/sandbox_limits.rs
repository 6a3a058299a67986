//! What one instance of a job module may use.

use std::time::Duration;

use crate::epoch_ticker::EPOCH_TICK;

/// Limits every guest instance runs under, the planning call included.
///
/// CPU is bounded by wall-clock time per call (epoch interruption, cheap enough to be always on)
/// rather than by fuel, because the right number of instructions depends on the batch; CPU time
/// is only metered, see [`OpInstance::cpu_time`](crate::OpInstance::cpu_time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SandboxLimits {
    /// Largest linear memory one instance may grow to, in bytes. Default 1 GiB. Linear memory
    /// never shrinks, so this caps an instance for its whole life, not per batch.
    pub memory_bytes: usize,
    /// Longest one call into the guest (`plan`, `start`, one `push`, `finish`) may run before it
    /// is interrupted. Default 10 minutes. Checked every 10 ms, so a call may overrun by a tick.
    pub deadline: Duration,
    /// Deepest wasm stack, in bytes. Default 512 KiB (wasmtime's). The host thread that calls into
    /// the guest needs native stack beyond this (Rust's spawned threads have 2 MiB).
    pub max_wasm_stack: usize,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        SandboxLimits {
            memory_bytes: 1 << 30,
            deadline: Duration::from_secs(10 * 60),
            max_wasm_stack: 512 * 1024,
        }
    }
}

impl SandboxLimits {
    /// The deadline in epoch ticks, for `Store::set_epoch_deadline`. The next tick may come at
    /// once, so one more than the deadline's length in ticks guarantees at least `deadline`.
    pub(crate) fn epoch_ticks(&self) -> u64 {
        let ticks = self.deadline.as_nanos().div_ceil(EPOCH_TICK.as_nanos()) + 1;
        u64::try_from(ticks).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_is_never_cut_short_by_tick_rounding() {
        let ticks = |ms| {
            SandboxLimits {
                deadline: Duration::from_millis(ms),
                ..SandboxLimits::default()
            }
            .epoch_ticks()
        };
        assert_eq!(ticks(0), 1);
        assert_eq!(ticks(200), 21);
        assert_eq!(ticks(205), 22);
        assert_eq!(SandboxLimits::default().epoch_ticks(), 60_001);
    }
}
