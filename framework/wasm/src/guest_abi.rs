//! The guest ABI a job module must implement, and the checks that a compiled module does.
//!
//! Version 1 ([`quarry_sdk::dag::ABI_VERSION`]): only core-wasm functions with scalar arguments,
//! because struct passing on wasm32-unknown-unknown's `extern "C"` is non-standard. Buffers are
//! `(ptr << 32) | len` in an `i64`; every result buffer starts with a [`status`] byte.

use wasmtime::{ExternType, Module, ValType};

use crate::error::{Error, Result};

pub(crate) const MEMORY: &str = "memory";
pub(crate) const ABI_VERSION: &str = "quarry_abi_version";
pub(crate) const ALLOC: &str = "quarry_alloc";
pub(crate) const FREE: &str = "quarry_free";
pub(crate) const PANIC_BUFFER: &str = "quarry_panic_buffer";
pub(crate) const PLAN: &str = "quarry_plan";
pub(crate) const START: &str = "quarry_start";
pub(crate) const PUSH: &str = "quarry_push";
pub(crate) const FINISH: &str = "quarry_finish";

/// The first byte of every result buffer.
pub(crate) mod status {
    /// The rest is the payload.
    pub(crate) const OK: u8 = 0;
    /// The rest is a UTF-8 message: the job's own error (a missing argument, bad data).
    pub(crate) const JOB_ERROR: u8 = 1;
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Scalar {
    I32,
    I64,
}

use Scalar::{I32, I64};

/// Every export the host calls, with its exact type: `(name, params, results)`.
const FUNCTIONS: &[(&str, &[Scalar], &[Scalar])] = &[
    (ABI_VERSION, &[], &[I32]),
    (ALLOC, &[I32], &[I32]),
    (FREE, &[I32, I32], &[]),
    (PANIC_BUFFER, &[], &[I64]),
    (PLAN, &[I32, I32], &[I64]),
    (START, &[I32, I32, I32], &[I64]),
    (PUSH, &[I32, I32], &[I64]),
    (FINISH, &[], &[I64]),
];

/// Refuses a module with any import, naming it and the likely cause. Job code runs with no host
/// functions at all: std on wasm32-unknown-unknown imports nothing, so an import means a
/// dependency built for another platform slipped in.
pub(crate) fn check_imports(module: &Module) -> Result<()> {
    let problems: Vec<String> = module
        .imports()
        .map(|import| {
            let (from, name) = (import.module(), import.name());
            let why = if from.starts_with("__wbindgen")
                || name.starts_with("__wbindgen")
                || from == "wbg"
            {
                "built for the web (wasm-bindgen): a dependency uses wasm-bindgen or js-sys (for \
                 example getrandom's `wasm_js` backend); remove it or disable its web feature"
            } else if from.starts_with("wasi") {
                "built for WASI; build for wasm32-unknown-unknown"
            } else {
                "job modules may import nothing; build for wasm32-unknown-unknown and declare no \
                 `extern` functions"
            };
            format!("it imports `{from}::{name}` ({why})")
        })
        .collect();
    match problems.len() {
        0 => Ok(()),
        1..=3 => Err(Error::invalid_module(problems.join("; "))),
        n => Err(Error::invalid_module(format!(
            "{}; and {} more imports",
            problems[..3].join("; "),
            n - 3
        ))),
    }
}

/// Checks that every export the host calls exists with exactly the ABI's type, and that the
/// module exports its one 32-bit memory.
pub(crate) fn check_exports(module: &Module) -> Result<()> {
    let mut problems = Vec::new();
    for &(name, params, results) in FUNCTIONS {
        let expected = signature(params, results);
        match module.get_export(name) {
            None => problems.push(format!("it does not export `{name}`, of type {expected}")),
            Some(ExternType::Func(ty)) => {
                if !matches_scalars(ty.params(), params) || !matches_scalars(ty.results(), results)
                {
                    problems.push(format!(
                        "its export `{name}` has type {}; the ABI says {expected}",
                        describe(ty.params(), ty.results())
                    ));
                }
            }
            Some(_) => problems.push(format!(
                "its export `{name}` is not a function; the ABI says a function of type {expected}"
            )),
        }
    }
    match module.get_export(MEMORY) {
        Some(ExternType::Memory(ty)) if !ty.is_64() && !ty.is_shared() => {}
        Some(ExternType::Memory(_)) => problems.push(format!(
            "its `{MEMORY}` export is not a 32-bit unshared memory"
        )),
        _ => problems.push(format!(
            "it does not export its linear memory as `{MEMORY}`"
        )),
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(Error::invalid_module(format!(
        "{}. A job module is a `cdylib` built with quarry-sdk for wasm32-unknown-unknown, \
         which defines these exports",
        problems.join("; ")
    )))
}

fn matches_scalars(actual: impl ExactSizeIterator<Item = ValType>, expected: &[Scalar]) -> bool {
    actual.len() == expected.len()
        && actual.zip(expected).all(|(actual, expected)| {
            matches!(
                (actual, expected),
                (ValType::I32, Scalar::I32) | (ValType::I64, Scalar::I64)
            )
        })
}

fn signature(params: &[Scalar], results: &[Scalar]) -> String {
    let name = |s: &Scalar| match s {
        I32 => "i32",
        I64 => "i64",
    };
    format!(
        "({}) -> ({})",
        params.iter().map(name).collect::<Vec<_>>().join(", "),
        results.iter().map(name).collect::<Vec<_>>().join(", ")
    )
}

fn describe(
    params: impl Iterator<Item = ValType>,
    results: impl Iterator<Item = ValType>,
) -> String {
    format!("({}) -> ({})", list(params), list(results))
}

fn list(types: impl Iterator<Item = ValType>) -> String {
    types.map(|t| t.to_string()).collect::<Vec<_>>().join(", ")
}
