//! The store's own threads and their CPU priorities.
//!
//! Queries run at the process's priority. The work that keeps up with arriving data runs below
//! it, as ScyllaDB's scheduler gives statements more shares than memtable flushes and
//! compaction: writes (sorting, hashing, appending to the log) and flushes' commits a little
//! below; flushes' and compactions' heavy steps and the work that only saves scans work further
//! below, in the idle scheduling class. On an idle machine this changes nothing; on a busy one
//! a query gets the cores first, and ingestion catches up in the gaps between queries. A write
//! is still acknowledged only once it is durable and readable, so nothing is lost or reordered,
//! only delayed while a query runs.
//!
//! The idle class alone did not keep that work out of a query's way: while one of its threads
//! ran, the query's threads waited for the cores about as long. So idle-class work also stops at
//! checkpoints between short pieces of it (a batch read or encoded, a slice sorted, a row group
//! compared) for as long as a query is reading ([`yield_to_queries`]).
//!
//! A thread in the idle class gets almost no CPU while other threads want it, so it must never
//! hold what they wait for: a lock it holds stays held until the cores are otherwise idle
//! (priority inversion; the store's locks do not pass priority on). Compactions therefore
//! choose and install their runs, under the store's locks, on threads at the level of writes,
//! and hand only their heavy steps (reading and rewriting windows of shards, comparing runs) to
//! [`StepPool`]; and an idle-class thread that works out something a scan may also want (a set
//! of keys, a deletion vector split by row group) builds it aside, not under the lock the scan
//! waits on ([`in_background`]).
//!
//! Nor does the idle class have a floor: beside processes that keep the cores busy it gets
//! almost no CPU, and a table that no compaction merges grows deeper, and its scans slower, for
//! as long as they run. So a compaction waiting for a step in the idle class gives up on it and
//! runs it itself, at the writers' level, once its table is deeper than
//! `EmbeddedOptions::raise_compaction_depth`, a compaction asked for or the store's closing
//! waits for it, or it waited out `EmbeddedOptions::idle_step_patience`; and steps are handed
//! to the idle class only while none of that holds ([`StepPool::run`]).

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel, sync_channel};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::lock;

/// The cores the process may use, asked once: `available_parallelism` reads the cgroup's files
/// on every call, which every write's sort would otherwise pay.
pub(crate) fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |t| t.get()))
}

/// How far below the process's CPU priority a store thread runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Niceness {
    /// Writes, and the flush and compaction threads as they choose and install runs: five nice
    /// levels below the process.
    Ingestion,
    /// The heavy steps of flushes and compactions (sorting and writing rows that are already
    /// readable, from the frozen memtable or the runs being merged) and working out ahead of
    /// scans which rows of the runs the memtable hides (the cover thread): nice 19 and, on
    /// Linux, the idle scheduling class (`SCHED_IDLE`). A waking query thread preempts such a
    /// thread at once and the kernel places it on a core running only them as on an idle one,
    /// where a nice-19 thread still kept its slice. Over three 60 s
    /// runs against four, the median of (a) during ingestion went from 1.48-1.65 to 1.41-1.44 of
    /// the same rows compacted, (b) from 1.53-1.63 to 1.44-1.53, and (b)'s p99 from 269-399 to
    /// 191-230 ms, with compaction keeping up as before; with the heavy steps alone at nice 19
    /// in the normal class, medians beside a busy process were 7-17% higher. The idle class has
    /// no floor, though: once other processes fill the cores, steps there stop, and
    /// compactions run them at the writers' level instead once their table is too deep.
    Idle,
}

impl Niceness {
    /// Nice levels below the process.
    fn below(self) -> i32 {
        match self {
            Niceness::Ingestion => 5,
            Niceness::Idle => 19,
        }
    }
}

/// Lowers the calling thread's CPU priority to `to`; threads it starts inherit it. Best effort:
/// a failure costs only priority.
#[cfg(target_os = "linux")]
#[allow(
    unsafe_code,
    reason = "a thread's nice value and scheduling class are set through libc"
)]
pub(super) fn lower_thread_priority(to: Niceness) {
    // SAFETY: gettid has no preconditions; setpriority with PRIO_PROCESS and a thread id
    // changes only that thread's nice value on Linux, and reports failure through its result.
    let failed = unsafe {
        let thread = libc::gettid() as libc::id_t;
        let current = libc::getpriority(libc::PRIO_PROCESS, thread);
        libc::setpriority(libc::PRIO_PROCESS, thread, (current + to.below()).min(19)) != 0
    };
    if failed {
        tracing::debug!(?to, "could not lower a store thread's priority");
    }
    if to == Niceness::Idle {
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
pub(super) fn lower_thread_priority(_to: Niceness) {}

/// Whether the calling thread is in the idle scheduling class: it asked for [`Niceness::Idle`],
/// or a thread that did started it.
#[cfg(target_os = "linux")]
#[allow(
    unsafe_code,
    reason = "a thread's scheduling policy is read through libc"
)]
pub(super) fn in_background() -> bool {
    // SAFETY: pid 0 is the calling thread; sched_getscheduler has no other preconditions.
    unsafe { libc::sched_getscheduler(0) == libc::SCHED_IDLE }
}

#[cfg(not(target_os = "linux"))]
pub(super) fn in_background() -> bool {
    false
}

/// When a query last read a batch from a store of this process, in microseconds since
/// [`clock`] began (0: never).
static QUERY_READ_AT: AtomicU64 = AtomicU64::new(0);

/// How long after a query's last batch work in the idle class waits before it goes on: longer
/// than the gaps between a query's batches, short enough that the next piece of background work
/// starts soon after the query's scan ends.
const QUERY_QUIET: Duration = Duration::from_millis(2);

/// Microseconds since the first call, never 0.
fn clock() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_micros() as u64 + 1
}

/// Marks that a query just read a batch: work in the idle class pauses at its next
/// [`yield_to_queries`] until queries have read nothing for [`QUERY_QUIET`].
pub(crate) fn query_reading() {
    QUERY_READ_AT.store(clock(), Ordering::Relaxed);
}

/// A checkpoint of work in the idle class, between two pieces of it (a batch read or written, a
/// row group compared): waits while queries are reading. Does nothing on any other thread.
///
/// The idle class alone did not keep such work out of queries' way. With the ingestion
/// benchmark's per-query view of where the process's cores went (`--timeline`), the compaction
/// steps' threads ran 20-68 ms during single 50-100 ms queries, and the query's threads waited
/// on the run queue for 40-100 ms meanwhile: (a)'s slowest seconds were those. ScyllaDB's compaction likewise checks at
/// short intervals whether a statement is waiting and yields to it. Nothing waits here that
/// holds a lock: idle-class work takes none of the store's locks across a checkpoint.
#[track_caller]
pub(super) fn yield_to_queries() {
    if !in_background() {
        return;
    }
    report_long_piece(std::panic::Location::caller());
    let quiet = QUERY_QUIET.as_micros() as u64;
    loop {
        let last = QUERY_READ_AT.load(Ordering::Relaxed);
        if last == 0 || clock().saturating_sub(last) >= quiet {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Pieces of idle-class work that kept a core longer than this between two checkpoints are
/// reported (at debug level): a query that starts during one waits up to that long.
const LONG_PIECE: Duration = Duration::from_millis(5);

thread_local! {
    /// The calling thread's CPU time at its last checkpoint, and where that was.
    static LAST_CHECKPOINT: std::cell::Cell<Option<(Duration, &'static std::panic::Location<'static>)>> =
        const { std::cell::Cell::new(None) };
}

/// Reports the piece of work since the calling thread's last checkpoint if it kept a core for
/// longer than [`LONG_PIECE`] (CPU time, so time spent waiting for a core does not count), to
/// show which pieces still need a checkpoint inside them (`RUST_LOG=quarry_store=debug`).
fn report_long_piece(at: &'static std::panic::Location<'static>) {
    let Some(now) = thread_cpu_time() else {
        return;
    };
    if let Some((then, from)) = LAST_CHECKPOINT.replace(Some((now, at))) {
        let piece = now.saturating_sub(then);
        if piece > LONG_PIECE {
            tracing::debug!(
                cpu_ms = piece.as_millis() as u64,
                from = %from,
                to = %at,
                "idle-class work kept a core long between two checkpoints"
            );
        }
    }
}

/// CPU time the calling thread has used.
#[cfg(target_os = "linux")]
#[allow(unsafe_code, reason = "a thread's CPU clock is read through libc")]
fn thread_cpu_time() -> Option<Duration> {
    let mut time = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `time` is a valid, writable timespec for the call's duration.
    let failed = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut time) } != 0;
    (!failed).then(|| Duration::new(time.tv_sec as u64, time.tv_nsec as u32))
}

#[cfg(not(target_os = "linux"))]
fn thread_cpu_time() -> Option<Duration> {
    None
}

/// Threads at [`Niceness::Idle`] that run the heavy steps of the compactions (one thread per
/// compaction that may run at once) or of the flushes (one) the store starts itself, started on
/// first use. The thread that hands a step over waits for it, holding no lock meanwhile, and may
/// stop waiting: a step in the idle class may not run for as long as other processes keep the
/// cores busy.
#[derive(Debug)]
pub(super) struct StepPool {
    /// What its threads are called, before their number.
    name: &'static str,
    threads: usize,
    pool: OnceLock<Option<rayon_core::ThreadPool>>,
}

/// How often a thread waiting for a step asks whether to give up on it.
const GIVE_UP_POLL: Duration = Duration::from_millis(250);

/// A step's answer, and who owns it: the caller once the step is [`ANSWERED`], the step's own
/// thread once it is [`GIVEN_UP`] on. Neither side touches `answer` while the other may.
struct Handoff<R> {
    state: AtomicU8,
    answer: Mutex<Option<std::thread::Result<R>>>,
}

const WAITING: u8 = 0;
const ANSWERED: u8 = 1;
const GIVEN_UP: u8 = 2;

impl StepPool {
    pub(super) fn new(name: &'static str, threads: usize) -> StepPool {
        StepPool {
            name,
            threads: threads.max(1),
            pool: OnceLock::new(),
        }
    }

    /// Runs `step` on one of the pool's threads and returns what it returned, or `None` once
    /// `give_up` (asked every [`GIVE_UP_POLL`] while the step has not answered) says to stop
    /// waiting. A step given up on before it starts never starts; one already running goes on
    /// unseen, and `discard` gets what it returns (a step given up on has no other owner: files
    /// it wrote are deleted there). Runs `step` on the calling thread if the pool could not be
    /// started. A panic in `step` is the caller's, unless it gave up on it.
    ///
    /// Which side owns the answer is settled by one atomic exchange, never by waiting for the
    /// other side: a step in the idle class preempted while holding something its caller waits
    /// for would keep it waiting as long.
    pub(super) fn run<R: Send + 'static>(
        &self,
        step: impl FnOnce() -> R + Send + 'static,
        discard: impl FnOnce(R) + Send + 'static,
        mut give_up: impl FnMut() -> bool,
    ) -> Option<R> {
        let Some(pool) = self.pool() else {
            return Some(step());
        };
        let handoff = Arc::new(Handoff {
            state: AtomicU8::new(WAITING),
            answer: Mutex::new(None),
        });
        let (wake, woken) = sync_channel::<()>(1);
        let theirs = handoff.clone();
        pool.spawn(move || {
            if theirs.state.load(Ordering::SeqCst) == GIVEN_UP {
                return;
            }
            let answer = std::panic::catch_unwind(AssertUnwindSafe(step));
            // Stored before it is claimed: the caller reads it only once it was.
            *lock(&theirs.answer) = Some(answer);
            let claimed = theirs.state.compare_exchange(
                WAITING,
                ANSWERED,
                Ordering::SeqCst,
                Ordering::SeqCst,
            );
            if claimed.is_ok() {
                let _ = wake.send(());
                return;
            }
            match lock(&theirs.answer).take() {
                Some(Ok(answer)) => discard(answer),
                _ => tracing::error!("a compaction step given up on panicked"),
            }
        });
        loop {
            let timed_out = match woken.recv_timeout(GIVE_UP_POLL) {
                Ok(()) => false,
                Err(RecvTimeoutError::Timeout) if give_up() => true,
                Err(RecvTimeoutError::Timeout) => continue,
                // Dropped without running (the pool is going away): the caller runs it.
                Err(RecvTimeoutError::Disconnected) => return None,
            };
            let given_up = timed_out
                && handoff
                    .state
                    .compare_exchange(WAITING, GIVEN_UP, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok();
            if given_up {
                return None;
            }
            // Answered, perhaps just as it was given up on.
            return match lock(&handoff.answer).take() {
                Some(Ok(answer)) => Some(answer),
                Some(Err(panic)) => std::panic::resume_unwind(panic),
                None => None,
            };
        }
    }

    fn pool(&self) -> Option<&rayon_core::ThreadPool> {
        let name = self.name;
        self.pool
            .get_or_init(|| {
                rayon_core::ThreadPoolBuilder::new()
                    .num_threads(self.threads)
                    .thread_name(move |i| format!("{name}-{i}"))
                    .start_handler(|_| lower_thread_priority(Niceness::Idle))
                    .build()
                    .inspect_err(|e| {
                        tracing::warn!(error = %e, pool = self.name, "could not start the threads of background steps; their callers run them");
                    })
                    .ok()
            })
            .as_ref()
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
    fn each_level_sets_its_nice_value_and_class_and_helpers_inherit_it() {
        let at = |to: Niceness| {
            std::thread::spawn(move || {
                let (before, _) = nice_and_policy();
                lower_thread_priority(to);
                let (nice, policy) = nice_and_policy();
                // A parallel sort's or a file writer's thread.
                let helper = std::thread::spawn(|| (nice_and_policy(), in_background()))
                    .join()
                    .unwrap();
                (before, (nice, policy), in_background(), helper)
            })
            .join()
            .unwrap()
        };
        let (before, ingestion, background, _) = at(Niceness::Ingestion);
        assert_eq!(ingestion, ((before + 5).min(19), libc::SCHED_OTHER as u32));
        assert!(!background, "writes keep the normal class");
        let (_, level, background, helper) = at(Niceness::Idle);
        assert_eq!(level, (19, libc::SCHED_IDLE as u32));
        assert_eq!(helper, (level, background), "helpers inherit it");
        assert!(background, "the idle class is below the writers");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn idle_class_work_waits_while_queries_read_and_other_work_does_not() {
        // Idle-class work that meets a query's read waits until queries have read nothing for
        // the quiet time (other tests' scans may read too, which only makes it wait longer).
        let (idle, waited) = std::thread::spawn(|| {
            lower_thread_priority(Niceness::Idle);
            let before_read = Instant::now();
            query_reading();
            yield_to_queries();
            (in_background(), before_read.elapsed())
        })
        .join()
        .unwrap();
        // Work at the writers' level goes on while queries keep reading (for two seconds at
        // most, so that a wrong wait fails rather than hangs).
        let reading = std::sync::atomic::AtomicBool::new(true);
        let writer_waited = std::thread::scope(|scope| {
            scope.spawn(|| {
                let until = Instant::now() + Duration::from_secs(2);
                while reading.load(Ordering::SeqCst) && Instant::now() < until {
                    query_reading();
                    std::thread::sleep(Duration::from_micros(100));
                }
            });
            let waited = scope
                .spawn(|| {
                    lower_thread_priority(Niceness::Ingestion);
                    std::thread::sleep(Duration::from_millis(5));
                    let started = Instant::now();
                    yield_to_queries();
                    started.elapsed()
                })
                .join()
                .unwrap();
            reading.store(false, Ordering::SeqCst);
            waited
        });
        assert!(
            writer_waited < Duration::from_secs(1),
            "work at the writers' level waited {writer_waited:?} for queries"
        );
        if !idle {
            eprintln!("skipped the idle-class half: this machine kept the thread out of the class");
            return;
        }
        assert!(
            waited >= QUERY_QUIET,
            "idle-class work went on {waited:?} after a query's read"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn heavy_steps_run_in_the_idle_class_while_their_caller_keeps_its_level() {
        let pool = StepPool::new("quarry-test-step", 1);
        let (caller, step, caller_after) = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    lower_thread_priority(Niceness::Ingestion);
                    let caller = (nice_and_policy(), std::thread::current().id());
                    let step = pool
                        .run(
                            || (nice_and_policy(), std::thread::current().id()),
                            drop,
                            || false,
                        )
                        .expect("never given up on");
                    (
                        caller,
                        step,
                        (nice_and_policy(), std::thread::current().id()),
                    )
                })
                .join()
                .unwrap()
        });
        assert_eq!(caller, caller_after, "the caller stays where it was");
        assert_ne!(step.1, caller.1, "the step ran on a thread of the pool");
        assert_eq!(step.0, (19, libc::SCHED_IDLE as u32));
    }

    #[test]
    fn a_step_given_up_on_is_discarded_where_it_ran_or_never_starts() {
        let pool = StepPool::new("quarry-test-step", 1);
        let (discarded, discards) = channel();
        // The one thread is held by a step that waits for `release`...
        let (release, held) = channel::<()>();
        let (started, running) = channel();
        let first = {
            let discarded = discarded.clone();
            pool.run(
                move || {
                    started.send(()).unwrap();
                    held.recv().unwrap();
                    "written"
                },
                move |r| discarded.send(r).unwrap(),
                || running.try_recv().is_ok(),
            )
        };
        assert_eq!(first, None, "given up on once it started");
        // ...so this one waits behind it, and is given up on before it starts.
        let second = pool.run(
            || panic!("a step given up on before it started ran"),
            |()| unreachable!(),
            || true,
        );
        assert_eq!(second, None);
        release.send(()).unwrap();
        assert_eq!(
            discards.recv_timeout(Duration::from_secs(30)),
            Ok("written"),
            "the first step's result goes to `discard` once it finishes"
        );
        // The thread is free again, and a step waited for answers.
        assert_eq!(pool.run(|| 7, drop, || false), Some(7));
        drop(discarded);
        assert!(discards.recv().is_err(), "nothing else was discarded");
    }

    #[test]
    fn a_panic_in_a_step_is_the_callers() {
        let pool = StepPool::new("quarry-test-step", 1);
        let caught = std::panic::catch_unwind(AssertUnwindSafe(|| {
            pool.run(|| -> u32 { panic!("a bug in a step") }, drop, || false)
        }));
        assert!(caught.is_err());
        assert_eq!(
            pool.run(|| 8, drop, || false),
            Some(8),
            "the pool still runs"
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
