//! Calls into job modules: planning, batches round-tripping, and every way a guest can fail.

mod fixtures;

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use fixtures::{Guest, Push, dag, result};
use quarry_sdk::dag::{ABI_VERSION, JobArgs};
use quarry_wasm::{Error, JobModule, OpInstance, Runtime, RuntimeConfig, SandboxLimits};

const OP: &str = "map at src/lib.rs:12:10";

fn load_with(guest: &Guest, limits: SandboxLimits) -> Arc<JobModule> {
    let runtime = Runtime::new(RuntimeConfig {
        limits,
        cache_dir: None,
    })
    .unwrap();
    runtime.load(&guest.wasm()).unwrap()
}

fn start_with(guest: &Guest, limits: SandboxLimits) -> OpInstance {
    load_with(guest, limits)
        .start(0, OP, &JobArgs::default())
        .unwrap()
}

fn start(guest: &Guest) -> OpInstance {
    start_with(guest, SandboxLimits::default())
}

fn batch() -> RecordBatch {
    RecordBatch::try_from_iter([
        ("id", Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef),
        (
            "name",
            Arc::new(StringArray::from(vec![Some("a"), None, Some("ccc")])) as ArrayRef,
        ),
    ])
    .unwrap()
}

#[test]
fn a_batch_round_trips_through_an_echo_operator_and_cpu_time_is_metered() {
    let mut op = start(&Guest::echo());
    assert_eq!(op.op_name(), OP);
    let after_start = op.cpu_time();
    assert!(after_start > Duration::ZERO);

    assert_eq!(op.push(&batch()).unwrap(), vec![batch()]);
    let after_push = op.cpu_time();
    assert!(after_push > after_start);

    // The instance keeps working: a second batch, then the end of input (no output).
    assert_eq!(op.push(&batch()).unwrap(), vec![batch()]);
    assert!(op.cpu_time() > after_push);
    assert!(op.finish().unwrap().is_empty());
}

#[test]
fn an_empty_payload_means_no_output() {
    let mut op = start(&Guest::new(Push::Returns(result(0, &[]))));
    assert!(op.push(&batch()).unwrap().is_empty());
}

#[test]
fn plan_returns_the_modules_dag() {
    let module = load_with(&Guest::echo(), SandboxLimits::default());
    let args = JobArgs::new([("days".to_string(), "7".to_string())]);
    assert_eq!(module.plan(&args).unwrap(), dag());
}

#[test]
fn a_plan_of_another_abi_version_is_refused() {
    let mut plan = dag();
    plan.abi_version = ABI_VERSION + 7;
    let mut guest = Guest::echo();
    guest.plan_result = result(0, &plan.to_bytes());
    let err = load_with(&guest, SandboxLimits::default())
        .plan(&JobArgs::default())
        .unwrap_err();
    assert!(
        matches!(err, Error::AbiMismatch { module, host } if module == ABI_VERSION + 7 && host == ABI_VERSION),
        "{err:?}"
    );
}

#[test]
fn a_plan_that_is_not_a_dag_archive_is_the_modules_fault() {
    let mut guest = Guest::echo();
    guest.plan_result = result(0, &[0xff; 40]);
    let err = load_with(&guest, SandboxLimits::default())
        .plan(&JobArgs::default())
        .unwrap_err();
    assert!(matches!(err, Error::BadResult { .. }), "{err:?}");
    assert!(err.is_user_error());
}

#[test]
fn a_plan_error_reports_the_jobs_message() {
    let mut guest = Guest::echo();
    guest.plan_result = result(1, b"missing argument: --arg days=N");
    let err = load_with(&guest, SandboxLimits::default())
        .plan(&JobArgs::default())
        .unwrap_err();
    assert!(
        matches!(&err, Error::JobError { message, .. } if message == "missing argument: --arg days=N"),
        "{err:?}"
    );
    assert!(err.is_user_error());
}

#[test]
fn status_one_is_the_jobs_own_error_with_its_message() {
    let mut op = start(&Guest::new(Push::Returns(result(
        1,
        b"row 7: bad timestamp",
    ))));
    let err = op.push(&batch()).unwrap_err();
    match &err {
        Error::JobError { op: name, message } => {
            assert_eq!(name, OP);
            assert_eq!(message, "row 7: bad timestamp");
        }
        other => panic!("expected JobError, got {other:?}"),
    }
    assert!(err.is_user_error());
    assert!(err.to_string().contains("row 7: bad timestamp"));
}

#[test]
fn an_endless_loop_is_interrupted_at_the_deadline() {
    let limits = SandboxLimits {
        deadline: Duration::from_millis(200),
        ..SandboxLimits::default()
    };
    let module = load_with(&Guest::new(Push::Loop), limits);
    let mut op = module.start(0, OP, &JobArgs::default()).unwrap();
    let started = Instant::now();
    let err = op.push(&batch()).unwrap_err();
    let elapsed = started.elapsed();
    match &err {
        Error::Timeout { op: name, limit } => {
            assert_eq!(name, OP);
            assert_eq!(*limit, Duration::from_millis(200));
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(err.is_user_error());
    assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
    // The interrupted call's CPU time counts, and is never more than the time it took (at
    // least a twentieth of it, however loaded the machine; the kernel's CPU clock and the
    // monotonic one may disagree by microseconds).
    let cpu = op.cpu_time();
    assert!(cpu >= Duration::from_millis(10), "{cpu:?} in {elapsed:?}");
    assert!(
        cpu <= elapsed + Duration::from_millis(1),
        "{cpu:?} in {elapsed:?}"
    );

    // The trapped instance refuses further calls; the module itself is fine.
    let again = op.push(&batch()).unwrap_err();
    assert!(matches!(again, Error::InstanceFailed { .. }), "{again:?}");
    assert!(!again.is_user_error());
    assert!(module.start(0, OP, &JobArgs::default()).is_ok());
}

#[test]
fn growing_memory_past_the_limit_is_reported_as_the_memory_limit() {
    let limits = SandboxLimits {
        memory_bytes: 4 << 20,
        ..SandboxLimits::default()
    };
    // 64 pages (4 MiB) on top of the initial two is past the limit; the guest then traps with no
    // panic message, as a Rust guest's out-of-memory abort does.
    let mut op = start_with(&Guest::new(Push::Grow { pages: 64 }), limits);
    let err = op.push(&batch()).unwrap_err();
    match &err {
        Error::MemoryLimit {
            op: name,
            limit_bytes,
        } => {
            assert_eq!(name, OP);
            assert_eq!(*limit_bytes, 4 << 20);
        }
        other => panic!("expected MemoryLimit, got {other:?}"),
    }
    assert!(err.is_user_error());

    // Growth within the limit is fine.
    let mut op = start_with(&Guest::new(Push::Grow { pages: 16 }), limits);
    assert!(op.push(&batch()).unwrap().is_empty());
}

#[test]
fn a_batch_too_large_for_the_memory_limit_fails_at_allocation_as_the_memory_limit() {
    let limits = SandboxLimits {
        memory_bytes: 256 << 10,
        ..SandboxLimits::default()
    };
    let mut op = start_with(&Guest::echo(), limits);
    let big = RecordBatch::try_from_iter([(
        "n",
        Arc::new(Int64Array::from_iter_values(0..100_000)) as ArrayRef,
    )])
    .unwrap();
    let err = op.push(&big).unwrap_err();
    assert!(
        matches!(err, Error::MemoryLimit { limit_bytes, .. } if limit_bytes == 256 << 10),
        "{err:?}"
    );
}

#[test]
fn a_module_whose_initial_memory_exceeds_the_limit_is_refused_at_load() {
    let runtime = Runtime::new(RuntimeConfig {
        limits: SandboxLimits {
            memory_bytes: 64 << 10,
            ..SandboxLimits::default()
        },
        cache_dir: None,
    })
    .unwrap();
    let err = runtime.load(&Guest::echo().wasm()).unwrap_err();
    assert!(matches!(err, Error::MemoryLimit { .. }), "{err:?}");
}

#[test]
fn a_panic_is_reported_with_the_message_from_the_panic_buffer() {
    let message = "map at src/lib.rs:12:10 panicked: boom";
    let mut op = start(&Guest::new(Push::Panic(message.into())));
    let err = op.push(&batch()).unwrap_err();
    match &err {
        Error::UserCode {
            op: name,
            message: got,
        } => {
            assert_eq!(name, OP);
            assert_eq!(got, message);
        }
        other => panic!("expected UserCode, got {other:?}"),
    }
    assert!(err.is_user_error());
}

#[test]
fn a_trap_without_a_panic_message_reports_the_trap() {
    let mut op = start(&Guest::new(Push::Recurse));
    let err = op.push(&batch()).unwrap_err();
    match &err {
        Error::UserCode { message, .. } => {
            assert!(message.contains("call stack exhausted"), "{message}");
        }
        other => panic!("expected UserCode, got {other:?}"),
    }
    assert!(err.is_user_error());
}

/// Asserts that the guest's result is refused as its own fault, without a panic in the host.
fn assert_bad_result(push: Push, expect: &str) {
    let mut op = start(&Guest::new(push));
    let err = op.push(&batch()).unwrap_err();
    match &err {
        Error::BadResult { op: name, problem } => {
            assert_eq!(name, OP);
            assert!(problem.contains(expect), "{problem}");
        }
        other => panic!("expected BadResult, got {other:?}"),
    }
    assert!(err.is_user_error());
    assert!(matches!(
        op.push(&batch()).unwrap_err(),
        Error::InstanceFailed { .. }
    ));
}

#[test]
fn a_result_pointer_outside_guest_memory_is_the_guests_fault() {
    assert_bad_result(Push::Raw((0xffff_0000 << 32) | 0x100), "outside its");
    assert_bad_result(Push::Raw(u64::MAX), "outside its");
    // In bounds at the start, past the end of memory at the end.
    assert_bad_result(Push::Raw((0x1_0000 << 32) | 0xffff_ffff), "outside its");
}

#[test]
fn a_result_without_a_known_status_is_the_guests_fault() {
    assert_bad_result(Push::Raw(0x400 << 32), "no status byte");
    assert_bad_result(Push::Returns(result(7, b"?")), "status 7");
}

#[test]
fn output_that_is_not_arrow_ipc_is_the_guests_fault() {
    assert_bad_result(
        Push::Returns(result(0, b"definitely not arrow")),
        "not a valid Arrow IPC stream",
    );
}

#[test]
fn op_instances_can_move_to_another_thread() {
    fn assert_send<T: Send>() {}
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send::<OpInstance>();
    assert_send_sync::<JobModule>();
    assert_send_sync::<Runtime>();
}
