//! The store's own threads and their CPU priorities.
//!
//! Queries run at the process's priority. The work that keeps up with arriving data runs below
//! it, as ScyllaDB's scheduler gives statements more shares than memtable flushes and
//! compaction: writes (sorting, hashing, appending to the log) and flushes a little below,
//! compaction in the idle scheduling class while it keeps up, and higher as its backlog grows,
//! as ScyllaDB's compaction controller raises compaction's shares with its backlog. On an idle
//! machine this changes nothing; on a busy one a query gets the cores first, and ingestion
//! catches up in the gaps between queries. A write is still acknowledged only once it is
//! durable and readable, so nothing is lost or reordered, only delayed while a query runs.

use std::collections::HashMap;
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

/// Where a store thread runs, below the process's CPU priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Priority {
    /// This many Unix nice levels below the process, in the normal scheduling class.
    Nicer(u8),
    /// Nice 19 and, on Linux, the idle scheduling class (`SCHED_IDLE`): a waking query thread
    /// preempts it at once and the kernel places it on a core running only such threads as on
    /// an idle one, where a nice-19 thread still kept its slice. Over three 60 s runs against
    /// four, the median of (a) during ingestion went from 1.48-1.65 to 1.41-1.44 of the same rows
    /// compacted, (b) from 1.53-1.63 to 1.44-1.53, and (b)'s p99 from 269-399 to 191-230 ms,
    /// with compaction run there keeping up as before. It has no floor, though: once queries
    /// and writes fill the cores, nothing here runs at all.
    Idle,
}

impl Priority {
    /// Writes, memtable flushes, and the short steps of a compaction (choosing its runs,
    /// installing them).
    pub(super) const INGESTION: Priority = Priority::Nicer(5);
    /// Working out ahead of scans which rows of the runs the memtable hides, and the heavy
    /// steps of a compaction that is not behind: the work that only saves later work.
    pub(super) const IDLE: Priority = Priority::Idle;
}

/// Moves the calling thread to `priority`, counted from the process's nice value; threads it
/// starts inherit it. Best effort: a failure costs only priority. Going back up needs a
/// privilege (CAP_SYS_NICE or an RLIMIT_NICE allowance) that the store does not assume, so a
/// thread only ever moves below the thread that started it: work whose priority changes runs on
/// [`Lanes`] instead.
#[cfg(target_os = "linux")]
#[allow(
    unsafe_code,
    reason = "a thread's nice value and scheduling class are set through libc"
)]
pub(super) fn set_thread_priority(priority: Priority) {
    let below = match priority {
        Priority::Nicer(n) => i32::from(n),
        Priority::Idle => 19,
    };
    // SAFETY: getpid and gettid have no preconditions; getpriority and setpriority with
    // PRIO_PROCESS read the main thread's and change the calling thread's nice value on Linux,
    // and report failure through their results.
    let failed = unsafe {
        let process = libc::getpriority(libc::PRIO_PROCESS, libc::getpid() as libc::id_t);
        let thread = libc::gettid() as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, thread, (process + below).min(19)) != 0
    };
    if failed {
        tracing::debug!(?priority, "could not lower a store thread's priority");
    }
    if priority == Priority::Idle {
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
pub(super) fn set_thread_priority(_priority: Priority) {}

/// Threads at each priority a compaction's heavy steps may need, started on first use, so that
/// each step runs at the priority its table's backlog calls for when it starts, however the
/// last one ran (a thread cannot raise its own priority again). `threads` at each, one for
/// each compaction that may run at once.
#[derive(Debug)]
pub(super) struct Lanes {
    threads: usize,
    pools: Mutex<HashMap<Priority, Arc<rayon_core::ThreadPool>>>,
}

impl Lanes {
    pub(super) fn new(threads: usize) -> Lanes {
        Lanes {
            threads: threads.max(1),
            pools: Mutex::new(HashMap::new()),
        }
    }

    /// Runs `step` on a thread at `priority` and returns what it returned, or on the calling
    /// thread if no thread could be started there. A panic in `step` is the caller's.
    pub(super) fn run<R: Send>(&self, priority: Priority, step: impl FnOnce() -> R + Send) -> R {
        match self.pool(priority) {
            Ok(pool) => pool.install(step),
            Err(e) => {
                tracing::warn!(?priority, error = %e, "could not start compaction threads at a priority; running the step where it is");
                step()
            }
        }
    }

    fn pool(
        &self,
        priority: Priority,
    ) -> Result<Arc<rayon_core::ThreadPool>, rayon_core::ThreadPoolBuildError> {
        let mut pools = lock(&self.pools);
        if let Some(pool) = pools.get(&priority) {
            return Ok(pool.clone());
        }
        let level = match priority {
            Priority::Nicer(n) => format!("n{n}"),
            Priority::Idle => "idle".to_string(),
        };
        let pool = Arc::new(
            rayon_core::ThreadPoolBuilder::new()
                .num_threads(self.threads)
                .thread_name(move |i| format!("quarry-store-compact-{level}-{i}"))
                .start_handler(move |_| set_thread_priority(priority))
                .build()?,
        );
        pools.insert(priority, pool.clone());
        Ok(pool)
    }
}

type Task = Box<dyn FnOnce() + Send>;

/// Threads that run writes at [`Priority::INGESTION`]. Concurrent writes still share one log
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
                        set_thread_priority(Priority::INGESTION);
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

    /// The calling thread's id, nice value and scheduling policy.
    #[cfg(target_os = "linux")]
    fn thread_priority() -> (i32, i32, u32) {
        #[allow(unsafe_code, reason = "gettid has no preconditions")]
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        let (nice, policy) = nice_and_policy();
        (tid, nice, policy)
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn each_compaction_step_runs_at_the_priority_asked_for_whatever_ran_before_it() {
        let caller = std::thread::spawn(|| {
            set_thread_priority(Priority::INGESTION);
            let lanes = Lanes::new(1);
            let before = thread_priority();
            let steps: Vec<_> = [
                Priority::Idle,
                Priority::Nicer(10),
                Priority::Idle,
                Priority::Nicer(5),
            ]
            .into_iter()
            .map(|priority| {
                lanes.run(priority, || {
                    // A parallel sort's or a file writer's thread, started by the step.
                    let helper = std::thread::spawn(thread_priority).join().unwrap();
                    (thread_priority(), helper)
                })
            })
            .collect();
            (before, thread_priority(), steps)
        });
        let (before, after, steps) = caller.join().unwrap();
        assert_eq!(before, after, "the calling thread stays where it was");
        // SAFETY: getpid and getpriority have no preconditions.
        #[allow(unsafe_code, reason = "the process's nice value, through libc")]
        let process =
            unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::getpid() as libc::id_t) };
        let expected = [
            ((process + 19).min(19), libc::SCHED_IDLE),
            ((process + 10).min(19), libc::SCHED_OTHER),
            ((process + 19).min(19), libc::SCHED_IDLE),
            ((process + 5).min(19), libc::SCHED_OTHER),
        ];
        for (((step, helper), (nice, policy)), n) in steps.iter().zip(expected).zip(0..) {
            assert_eq!((step.1, step.2), (nice, policy as u32), "step {n}");
            assert_ne!(step.0, before.0, "step {n} ran on the calling thread");
            assert_eq!((helper.1, helper.2), (step.1, step.2), "helper of step {n}");
        }
        assert_eq!(
            steps[0].0.0, steps[2].0.0,
            "a level's thread is kept for its next step"
        );
        let (_, writer_policy) = std::thread::spawn(|| {
            set_thread_priority(Priority::INGESTION);
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
