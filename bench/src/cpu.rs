//! Where a benchmark's CPU time went: this process's threads, by name, from `/proc/self/task`
//! (Linux only). Latencies on a shared two-core machine are noisy; the CPU seconds each kind of
//! background work took for the same rows are much less so, and they are what a change to the
//! store's own work moves.

use std::collections::{BTreeMap, HashMap};

/// CPU seconds (user and system) so far: per live thread, with its name, and of the whole process
/// (threads that exited included).
#[derive(Debug, Clone, Default)]
pub struct CpuSample {
    threads: HashMap<u32, (String, f64)>,
    process: f64,
}

impl CpuSample {
    /// The process's threads now; an empty sample where `/proc` cannot be read.
    pub fn now() -> CpuSample {
        let mut sample = CpuSample {
            process: std::fs::read_to_string("/proc/self/stat")
                .ok()
                .and_then(|stat| cpu_seconds(&stat))
                .unwrap_or(0.0),
            ..CpuSample::default()
        };
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return sample;
        };
        for task in tasks.flatten() {
            let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
                continue;
            };
            let stat = std::fs::read_to_string(task.path().join("stat")).ok();
            let name = std::fs::read_to_string(task.path().join("comm")).ok();
            if let (Some(seconds), Some(name)) = (stat.as_deref().and_then(cpu_seconds), name) {
                sample
                    .threads
                    .insert(tid, (name.trim().to_string(), seconds));
            }
        }
        sample
    }

    /// CPU seconds spent since `earlier`, by kind of thread (see [`kind`]); threads that exited
    /// in between (short-lived helpers) count under "exited threads".
    pub fn since(&self, earlier: &CpuSample) -> BTreeMap<&'static str, f64> {
        let mut by_kind: BTreeMap<&'static str, f64> = BTreeMap::new();
        let mut counted = 0.0;
        for (tid, (name, seconds)) in &self.threads {
            let before = earlier
                .threads
                .get(tid)
                .filter(|(earlier_name, _)| earlier_name == name)
                .map_or(0.0, |(_, s)| *s);
            let spent = (seconds - before).max(0.0);
            *by_kind.entry(kind(name)).or_default() += spent;
            counted += spent;
        }
        let exited = (self.process - earlier.process - counted).max(0.0);
        *by_kind.entry("exited threads").or_default() += exited;
        by_kind
    }
}

/// What a thread of the process does, from its name (truncated by Linux to 15 bytes).
fn kind(name: &str) -> &'static str {
    match name {
        n if n.starts_with("tokio-rt") => "queries (tokio)",
        n if n.starts_with("quarry-store-fl") => "flush",
        n if n.starts_with("quarry-store-co") => "compaction",
        n if n.starts_with("quarry-cover") => "cover",
        n if n.starts_with("quarry-store-wr") => "store writes",
        _ => "other",
    }
}

/// As [`kind`], for a thread in the idle scheduling class.
fn idle_kind(name: &str) -> &'static str {
    match kind(name) {
        "compaction" => "compaction-idle",
        "flush" => "flush-idle",
        "cover" => "cover",
        "queries (tokio)" => "queries-idle",
        _ => "other-idle",
    }
}

/// Field `n` (numbered from 1, as in proc(5); 3 or later) of a `/proc/.../stat` line.
fn stat_field(stat: &str, n: usize) -> Option<&str> {
    // The name (second field) is in parentheses and may hold spaces: fields are counted after it.
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(n.checked_sub(3)?)
}

/// User plus system CPU seconds from a `/proc/.../stat` line.
fn cpu_seconds(stat: &str) -> Option<f64> {
    // `utime` and `stime` are fields 14 and 15.
    let ticks =
        stat_field(stat, 14)?.parse::<f64>().ok()? + stat_field(stat, 15)?.parse::<f64>().ok()?;
    Some(ticks / ticks_per_second()?)
}

/// The clock ticks `/proc` counts CPU time in, per second.
#[allow(unsafe_code, reason = "the tick rate is read through libc::sysconf")]
fn ticks_per_second() -> Option<f64> {
    // SAFETY: `sysconf` only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (per_second > 0).then_some(per_second as f64)
}

/// Nanoseconds each kind of thread (see [`kind`]; those in the idle scheduling class apart)
/// spent so far on a core and waiting for one (runnable, not running), from
/// `/proc/self/task/*/schedstat`: finer than the clock ticks of `stat`, enough to tell a query
/// that waited for the cores from one that worked longer, and who had them meanwhile.
#[derive(Debug, Clone, Default)]
pub struct SchedSample(BTreeMap<&'static str, (u64, u64)>);

impl SchedSample {
    /// The process's live threads now; an empty sample where `/proc` cannot be read.
    pub fn now() -> SchedSample {
        let mut by_kind: BTreeMap<&'static str, (u64, u64)> = BTreeMap::new();
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return SchedSample(by_kind);
        };
        for task in tasks.flatten() {
            let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            let schedstat =
                std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
            let mut fields = schedstat
                .split_whitespace()
                .map(|f| f.parse::<u64>().unwrap_or(0));
            // The scheduling policy is field 41 of `stat`; 5 is the idle class.
            let idle = std::fs::read_to_string(task.path().join("stat"))
                .ok()
                .is_some_and(|stat| stat_field(&stat, 41) == Some("5"));
            let kind = if idle {
                idle_kind(name.trim())
            } else {
                kind(name.trim())
            };
            let entry = by_kind.entry(kind).or_default();
            entry.0 += fields.next().unwrap_or(0);
            entry.1 += fields.next().unwrap_or(0);
        }
        SchedSample(by_kind)
    }

    /// The milliseconds each kind of thread spent on a core / waiting for one since `earlier`,
    /// as `kind:on/waiting` for the kinds that did either (threads that exited in between are
    /// not counted).
    pub fn describe_since(&self, earlier: &SchedSample) -> String {
        let ms = |now: u64, then: u64| now.saturating_sub(then) as f64 / 1e6;
        self.0
            .iter()
            .filter_map(|(kind, (on, waiting))| {
                let (on_then, waiting_then) = earlier.0.get(kind).copied().unwrap_or_default();
                let (on, waiting) = (ms(*on, on_then), ms(*waiting, waiting_then));
                let short = kind.split_whitespace().next().unwrap_or(kind);
                (on >= 0.5 || waiting >= 0.5).then(|| format!("{short}:{on:.0}/{waiting:.0}"))
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CPU seconds the calling thread has used.
    fn thread_cpu() -> f64 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        cpu_seconds(&stat).unwrap()
    }

    #[test]
    fn a_busy_thread_is_counted_under_its_kind() {
        let before = CpuSample::now();
        let (busy_tx, busy_rx) = std::sync::mpsc::channel();
        let (sampled_tx, sampled_rx) = std::sync::mpsc::channel::<()>();
        let spinner = std::thread::Builder::new()
            .name("quarry-cover".into())
            .spawn(move || {
                let mut x = 0u64;
                while thread_cpu() < 0.3 {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
                busy_tx.send(()).unwrap();
                // Alive until sampled: an exited thread counts under "exited threads".
                sampled_rx.recv().ok();
            })
            .unwrap();
        busy_rx.recv().unwrap();
        let after = CpuSample::now();
        sampled_tx.send(()).unwrap();
        spinner.join().unwrap();
        let spent = after.since(&before);
        let cover = spent.get("cover").copied().unwrap_or(0.0);
        assert!((0.25..1.0).contains(&cover), "{spent:?}");
    }

    #[test]
    fn stat_lines_with_spaces_in_the_name_parse() {
        let line = "42 (a b) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 0 0 0";
        assert_eq!(cpu_seconds(line), Some(300.0 / ticks_per_second().unwrap()));
    }
}
