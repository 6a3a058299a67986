//! The store's own threads and their CPU priorities.
//!
//! Queries run at the process's priority. The work that keeps up with arriving data runs below
//! it, as ScyllaDB's scheduler gives statements more shares than memtable flushes and
//! compaction: writes (sorting, hashing, appending to the log) and flushes a little below,
//! compaction further below, in the idle scheduling class. On an idle machine this changes
//! nothing; on a busy one a query gets the cores first, and ingestion catches up in the gaps
//! between queries. A write is still acknowledged only once it is durable and readable, so
//! nothing is lost or reordered, only delayed while a query runs.
//!
//! A thread in the idle class gets almost no CPU while any other thread wants it, so it must
//! never hold what other threads wait for: a lock it holds is held until the cores are otherwise
//! idle (priority inversion; the store's locks do not pass priority on). Compactions therefore
//! choose and install their runs, under the store's locks, on threads at the level of writes,
//! and hand only their heavy steps (reading and rewriting windows of shards, comparing runs) to
//! the idle class ([`IdlePool`]); and an idle-class thread that works out a set of keys a query
//! may also want builds it aside, not under the lock queries wait on.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;

use super::lock;

/// The cores the process may use, asked once: `available_parallelism` reads the cgroup's files
/// on every call, which every write's sort would otherwise pay.
pub(crate) fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |t| t.get()))
}

/// How much nicer than the process (Unix nice values) a store thread runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Niceness {
    /// Writes and memtable flushes.
    Ingestion = 5,
    /// The heavy steps of compactions (rewriting runs that are already readable) and working out
    /// ahead of scans which rows of the runs the memtable hides: the lowest level, so that a
    /// query meets almost nothing of it (measured for compaction: medians during ingestion 0-10%
    /// lower than at 10, with no more runs left unmerged). On Linux these threads are also in the
    /// idle scheduling class (`SCHED_IDLE`): a waking query thread preempts them at once and the
    /// kernel places it on a core running only them as on an idle one, where a nice-19 thread
    /// still kept its slice. Over three 60 s runs against four, the median of (a) during
    /// ingestion went from 1.48-1.65 to 1.41-1.44 of the same rows compacted, (b) from 1.53-1.63
    /// to 1.44-1.53, and (b)'s p99 from 269-399 to 191-230 ms, with compaction keeping up as
    /// before. Such a thread holds none of the locks other threads wait for (module docs).
    Compaction = 19,
}

/// Lowers the calling thread's CPU priority by `by`; threads it starts inherit it. Best effort:
/// a failure costs only priority.
#[cfg(target_os = "linux")]
#[allow(
    unsafe_code,
    reason = "a thread's nice value is set through libc::setpriority"
)]
pub(super) fn lower_thread_priority(by: Niceness) {
    // SAFETY: gettid has no preconditions; setpriority with PRIO_PROCESS and a thread id
    // changes only that thread's nice value on Linux, and reports failure through its result.
    let failed = unsafe {
        let thread = libc::gettid() as libc::id_t;
        let current = libc::getpriority(libc::PRIO_PROCESS, thread);
        libc::setpriority(libc::PRIO_PROCESS, thread, (current + by as i32).min(19)) != 0
    };
    if failed {
        tracing::debug!(?by, "could not lower a store thread's priority");
    }
    if by == Niceness::Compaction {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: pid 0 is the calling thread; `param` outlives the call, which reports failure
        // through its result.
        let failed = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } != 0;
        if failed {
            tracing::debug!("could not move a store thread to the idle scheduling class");
        }
    }
}

#[cfg(not(target_os = "linux"))]
pub(super) fn lower_thread_priority(_by: Niceness) {}

/// Whether the calling thread is in the idle scheduling class: it asked for
/// [`Niceness::Compaction`], or a thread that did started it.
#[cfg(target_os = "linux")]
#[allow(
    unsafe_code,
    reason = "a thread's scheduling policy is read through libc"
)]
pub(super) fn in_idle_class() -> bool {
    // SAFETY: pid 0 is the calling thread; sched_getscheduler has no other preconditions.
    unsafe { libc::sched_getscheduler(0) == libc::SCHED_IDLE }
}

#[cfg(not(target_os = "linux"))]
pub(super) fn in_idle_class() -> bool {
    false
}

/// Threads at [`Niceness::Compaction`] that run the heavy steps of the compactions the store
/// starts itself, one per compaction that may run at once, started on first use. The thread
/// that hands a step over waits for it, holding no lock meanwhile.
#[derive(Debug)]
pub(super) struct IdlePool {
    threads: usize,
    pool: OnceLock<Option<rayon_core::ThreadPool>>,
}

impl IdlePool {
    pub(super) fn new(threads: usize) -> IdlePool {
        IdlePool {
            threads: threads.max(1),
            pool: OnceLock::new(),
        }
    }

    /// Runs `step` on one of the pool's threads and returns what it returned; on the calling
    /// thread if the pool could not be started. A panic in `step` is the caller's.
    pub(super) fn run<R: Send>(&self, step: impl FnOnce() -> R + Send) -> R {
        let pool = self.pool.get_or_init(|| {
            rayon_core::ThreadPoolBuilder::new()
                .num_threads(self.threads)
                .thread_name(|i| format!("quarry-store-compact-step-{i}"))
                .start_handler(|_| lower_thread_priority(Niceness::Compaction))
                .build()
                .inspect_err(|e| {
                    tracing::warn!(error = %e, "could not start the threads of compactions' heavy steps; compaction threads run them");
                })
                .ok()
        });
        match pool {
            Some(pool) => pool.install(step),
            None => step(),
        }
    }
}

type Task = Box<dyn FnOnce() + Send>;

/// Threads that run writes at [`Niceness::Ingestion`]. Concurrent writes still share one log
/// sync (group commit): while one thread syncs, the others sort and queue theirs.
#[derive(Debug)]
pub(super) struct WritePool {
    tasks: Mutex<Option<Sender<Task>>>,
    threads: Vec<JoinHandle<()>>,
}

impl WritePool {
    /// Starts `threads` write threads.
    pub(super) fn start(threads: usize) -> std::io::Result<WritePool> {
        let (tasks, queue) = channel::<Task>();
        let queue = Arc::new(Mutex::new(queue));
        let threads = (0..threads.max(1))
            .map(|i| {
                let queue = queue.clone();
                std::thread::Builder::new()
                    .name(format!("quarry-store-write-{i}"))
                    .spawn(move || {
                        lower_thread_priority(Niceness::Ingestion);
                        while let Some(task) = next(&queue) {
                            // A panic fails its write (its caller gets no answer), not the
                            // thread: the pool keeps its size.
                            if std::panic::catch_unwind(AssertUnwindSafe(task)).is_err() {
                                tracing::error!("a write panicked");
                            }
                        }
                    })
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(WritePool {
            tasks: Mutex::new(Some(tasks)),
            threads,
        })
    }

    /// Runs `f` on a write thread and returns what it returned; `None` if it panicked or the pool
    /// was stopped.
    pub(super) async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let task: Task = Box::new(move || {
            let _ = reply.send(f());
        });
        lock(&self.tasks).as_ref()?.send(task).ok()?;
        answer.await.ok()
    }

    /// Lets the queued writes finish, then stops the threads.
    pub(super) fn stop(&mut self) {
        lock(&self.tasks).take();
        for handle in self.threads.drain(..) {
            if handle.join().is_err() {
                tracing::error!("a write thread of the store panicked");
            }
        }
    }
}

/// The next task of a shared queue; `None` once the queue is closed and empty.
fn next(queue: &Mutex<Receiver<Task>>) -> Option<Task> {
    lock(queue).recv().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The calling thread's nice value and scheduling policy, from `/proc/thread-self/stat`.
    #[cfg(target_os = "linux")]
    fn nice_and_policy() -> (i32, u32) {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        // Fields after the parenthesised name start at the third (the state).
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 1..]
            .split_whitespace()
            .collect();
        (fields[16].parse().unwrap(), fields[38].parse().unwrap())
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn compaction_threads_and_their_helpers_run_only_when_the_cores_are_otherwise_idle() {
        let (nice, policy, helper) = std::thread::spawn(|| {
            let (before, _) = nice_and_policy();
            lower_thread_priority(Niceness::Compaction);
            let (nice, policy) = nice_and_policy();
            // A parallel sort's or a file writer's thread, started by the compaction thread.
            let helper = std::thread::spawn(nice_and_policy).join().unwrap();
            ((before, nice), policy, helper)
        })
        .join()
        .unwrap();
        assert_eq!(nice.1, (nice.0 + 19).min(19));
        assert_eq!(policy, libc::SCHED_IDLE as u32);
        assert_eq!(helper, (nice.1, policy));
        let (_, writer_policy) = std::thread::spawn(|| {
            lower_thread_priority(Niceness::Ingestion);
            nice_and_policy()
        })
        .join()
        .unwrap();
        assert_eq!(
            writer_policy,
            libc::SCHED_OTHER as u32,
            "writes keep the normal class"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn heavy_steps_run_in_the_idle_class_while_their_caller_keeps_its_level() {
        let pool = IdlePool::new(1);
        let (caller, step, caller_after) = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    lower_thread_priority(Niceness::Ingestion);
                    let caller = (nice_and_policy(), in_idle_class());
                    let step = pool.run(|| {
                        let helper = std::thread::spawn(|| (nice_and_policy(), in_idle_class()));
                        ((nice_and_policy(), in_idle_class()), helper.join().unwrap())
                    });
                    (caller, step, (nice_and_policy(), in_idle_class()))
                })
                .join()
                .unwrap()
        });
        assert_eq!(caller, caller_after, "the caller stays where it was");
        assert_eq!(caller.0.1, libc::SCHED_OTHER as u32);
        assert!(!caller.1);
        let ((step, step_idle), (helper, helper_idle)) = step;
        assert_eq!(step.1, libc::SCHED_IDLE as u32);
        assert!(step_idle && helper_idle, "in_idle_class sees the class");
        assert_eq!(helper, step, "the step's helpers inherit it");
    }

    #[tokio::test]
    async fn a_write_that_panics_fails_alone_and_its_thread_keeps_serving() {
        let mut pool = WritePool::start(1).expect("starting a write thread");
        let panicked = pool.run(|| -> u32 { panic!("a bug in a write") }).await;
        assert_eq!(panicked, None);
        // The one thread is still there: the next write runs.
        assert_eq!(pool.run(|| 7).await, Some(7));
        pool.stop();
        assert_eq!(pool.run(|| 8).await, None, "a stopped pool runs nothing");
    }
}
