//! Loading job modules: what is refused and why, memoization, and the disk cache.

mod fixtures;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch};
use fixtures::{Guest, Push};
use quarry_sdk::dag::{ABI_VERSION, JobArgs};
use quarry_wasm::{Error, ModuleHash, Runtime, RuntimeConfig};

fn runtime() -> Runtime {
    Runtime::new(RuntimeConfig::default()).expect("runtime starts")
}

/// The `InvalidModule` problem text of loading `wasm`, failing the test on anything else.
fn refusal(wasm: &[u8]) -> String {
    match runtime().load(wasm) {
        Err(err @ Error::InvalidModule { .. }) => {
            assert!(err.is_user_error());
            err.to_string()
        }
        other => panic!("expected InvalidModule, got {other:?}"),
    }
}

#[test]
fn bytes_that_are_not_wasm_are_refused_before_compiling() {
    let message = refusal(b"#!/bin/sh\necho hi\n");
    assert!(message.contains("not a WebAssembly module"), "{message}");
    let message = refusal(b"");
    assert!(message.contains("not a WebAssembly module"), "{message}");
}

#[test]
fn a_component_is_refused_as_not_a_core_module() {
    let message = refusal(b"\0asm\x0d\x00\x01\x00");
    assert!(message.contains("component"), "{message}");
}

#[test]
fn a_module_that_does_not_compile_is_refused() {
    let message = refusal(b"\0asm\x01\x00\x00\x00\xff\xff\xff");
    assert!(message.contains("does not compile"), "{message}");
}

#[test]
fn imports_are_refused_naming_the_import_and_the_likely_cause() {
    let with_import = |module, name| {
        let mut guest = Guest::echo();
        guest.import = Some((module, name));
        refusal(&guest.wasm())
    };

    let message = with_import("wasi_snapshot_preview1", "fd_write");
    assert!(
        message.contains("`wasi_snapshot_preview1::fd_write`"),
        "{message}"
    );
    assert!(
        message.contains("built for WASI; build for wasm32-unknown-unknown"),
        "{message}"
    );

    let message = with_import("__wbindgen_placeholder__", "__wbindgen_describe");
    assert!(message.contains("__wbindgen_describe"), "{message}");
    assert!(
        message.contains("built for the web (wasm-bindgen)"),
        "{message}"
    );

    let message = with_import("env", "host_secret");
    assert!(message.contains("`env::host_secret`"), "{message}");
    assert!(message.contains("may import nothing"), "{message}");
}

#[test]
fn a_missing_export_is_refused_naming_it_and_its_type() {
    let mut guest = Guest::echo();
    guest.omit_export = Some("quarry_finish");
    let message = refusal(&guest.wasm());
    assert!(
        message.contains("does not export `quarry_finish`, of type () -> (i64)"),
        "{message}"
    );

    let mut guest = Guest::echo();
    guest.omit_export = Some("memory");
    let message = refusal(&guest.wasm());
    assert!(message.contains("linear memory as `memory`"), "{message}");
}

#[test]
fn an_export_of_the_wrong_type_is_refused() {
    let mut guest = Guest::echo();
    guest.alloc_takes_i64 = true;
    let message = refusal(&guest.wasm());
    assert!(
        message.contains("`quarry_alloc` has type (i64) -> (i32); the ABI says (i32) -> (i32)"),
        "{message}"
    );
}

#[test]
fn a_module_of_another_abi_version_is_refused_saying_both_versions() {
    let mut guest = Guest::echo();
    guest.abi_version = ABI_VERSION + 1;
    let err = runtime().load(&guest.wasm()).unwrap_err();
    match &err {
        Error::AbiMismatch { module, host } => {
            assert_eq!((*module, *host), (ABI_VERSION + 1, ABI_VERSION));
        }
        other => panic!("expected AbiMismatch, got {other:?}"),
    }
    assert!(err.is_user_error());
    let message = err.to_string();
    assert!(
        message.contains(&format!("ABI version {}", ABI_VERSION + 1))
            && message.contains(&format!("ABI version {ABI_VERSION}")),
        "{message}"
    );
}

#[test]
fn a_module_is_loaded_once_and_found_by_its_hash() {
    let runtime = runtime();
    let wasm = Guest::echo().wasm();
    let hash = ModuleHash::of(&wasm);
    assert!(runtime.module(&hash).is_none());

    let first = runtime.load(&wasm).unwrap();
    assert_eq!(first.hash(), hash);
    assert!(!first.from_disk_cache());
    assert!(Arc::ptr_eq(&first, &runtime.load(&wasm).unwrap()));
    assert!(Arc::ptr_eq(&first, &runtime.module(&hash).unwrap()));
    assert!(runtime.module(&ModuleHash::of(b"other")).is_none());
}

#[test]
fn concurrent_loads_of_one_module_share_one_compilation() {
    let runtime = runtime();
    let wasm = Guest::echo().wasm();
    let modules: Vec<_> = std::thread::scope(|scope| {
        let loads: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| runtime.load(&wasm).unwrap()))
            .collect();
        loads.into_iter().map(|load| load.join().unwrap()).collect()
    });
    for module in &modules[1..] {
        assert!(Arc::ptr_eq(&modules[0], module));
    }
}

/// Every file under `dir` named `name`.
fn find(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(find(&path, name));
        } else if path.file_name().is_some_and(|n| n == name) {
            found.push(path);
        }
    }
    found
}

#[test]
fn the_disk_cache_spares_a_restarted_process_the_compile_and_survives_damage() {
    let dir = tempfile::tempdir().unwrap();
    let config = RuntimeConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        ..RuntimeConfig::default()
    };
    let wasm = Guest::echo().wasm();
    let file_name = format!("{}.cwasm", ModuleHash::of(&wasm));

    let compiled = Runtime::new(config.clone()).unwrap().load(&wasm).unwrap();
    assert!(!compiled.from_disk_cache());
    let files = find(dir.path(), &file_name);
    assert_eq!(files.len(), 1, "{files:?}");
    let file = &files[0];
    let relative = file.strip_prefix(dir.path()).unwrap();
    assert_eq!(relative.components().count(), 3, "{}", relative.display());
    assert!(
        relative.starts_with("wasmtime-48"),
        "{}",
        relative.display()
    );

    // A new process (a new runtime, a new engine) finds it and does not compile; the module
    // works.
    let cached = Runtime::new(config.clone()).unwrap().load(&wasm).unwrap();
    assert!(cached.from_disk_cache());
    let batch =
        RecordBatch::try_from_iter([("n", Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef)])
            .unwrap();
    let mut op = cached.start(0, "echo", &JobArgs::default()).unwrap();
    assert_eq!(op.push(&batch).unwrap(), vec![batch.clone()]);

    // A damaged artefact is deleted and replaced by a fresh compile. It is damaged in place
    // while `cached` still runs code loaded from it: artefacts are read, not mapped, so this
    // cannot fault the process.
    std::fs::write(file, b"not machine code").unwrap();
    let recompiled = Runtime::new(config.clone()).unwrap().load(&wasm).unwrap();
    assert!(!recompiled.from_disk_cache());
    assert_ne!(std::fs::read(file).unwrap(), b"not machine code");
    assert!(
        Runtime::new(config)
            .unwrap()
            .load(&wasm)
            .unwrap()
            .from_disk_cache()
    );
    let mut op = cached.start(0, "echo", &JobArgs::default()).unwrap();
    assert_eq!(op.push(&batch).unwrap(), vec![batch]);
}

#[test]
fn an_invalid_module_leaves_nothing_in_the_disk_cache() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        ..RuntimeConfig::default()
    })
    .unwrap();
    let mut guest = Guest::new(Push::Echo);
    guest.abi_version = 0;
    assert!(runtime.load(&guest.wasm()).is_err());
    let name = format!("{}.cwasm", ModuleHash::of(&guest.wasm()));
    assert!(find(dir.path(), &name).is_empty());
}
