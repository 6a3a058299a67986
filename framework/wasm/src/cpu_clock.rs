//! The calling thread's CPU time: what a call into a guest cost, however busy the machine was.
//!
//! A task's CPU cost is the sum, over its calls into the guest, of the thread's CPU time across
//! each call. Calls are synchronous, so the thread that starts one finishes it. Wasmtime's fuel
//! would count instructions instead, but metering it costs the guest a third of its speed on
//! the merge of a keyed fold; reading this clock costs a system call per call, a batch at a time.

use std::time::Duration;

/// CPU time the calling thread has used since it started.
#[cfg(unix)]
#[allow(
    unsafe_code,
    reason = "the thread's CPU clock is read through libc::clock_gettime"
)]
pub(crate) fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only the timespec it is given, which outlives the call, and
    // reports failure (an unsupported clock) through its result.
    let failed = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) } != 0;
    if failed {
        return Duration::ZERO;
    }
    Duration::new(
        now.tv_sec.max(0) as u64,
        now.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// Elsewhere, the wall-clock time since the first call: an upper bound of the CPU time.
#[cfg(not(unix))]
pub(crate) fn thread_cpu_time() -> Duration {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed()
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn a_busy_thread_uses_cpu_time_and_never_more_than_the_wall_clock() {
        // The wall-clock window encloses the CPU clock's readings.
        let wall = Instant::now();
        let cpu = thread_cpu_time();
        let mut x = 1u64;
        while wall.elapsed() < Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        let used = thread_cpu_time() - cpu;
        let elapsed = wall.elapsed();
        assert!(used > Duration::ZERO, "{used:?}");
        // The kernel accounts CPU time on its scheduler clock, not the monotonic one: allow the
        // two to disagree by a millisecond (seen: 5 µs).
        assert!(
            used <= elapsed + Duration::from_millis(1),
            "{used:?} of CPU in {elapsed:?}"
        );
    }

    #[test]
    fn a_sleeping_thread_uses_almost_none() {
        let cpu = thread_cpu_time();
        std::thread::sleep(Duration::from_millis(100));
        let used = thread_cpu_time() - cpu;
        assert!(used < Duration::from_millis(50), "{used:?}");
    }
}
