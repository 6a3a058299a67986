//! Turning what `quarry submit` is given into a job module's bytes: a `.wasm` file as it is, or a
//! job crate's directory built for `wasm32-unknown-unknown` in release (installing the rustup
//! target first if it is missing).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

/// The target job modules are built for.
pub const WASM_TARGET: &str = "wasm32-unknown-unknown";

/// The module's bytes and where they came from.
#[derive(Debug)]
pub struct JobSource {
    pub bytes: Vec<u8>,
    pub path: PathBuf,
}

/// Reads `job`: a `.wasm` file, or a crate directory (or its `Cargo.toml`) to build first.
pub fn load(job: &Path) -> anyhow::Result<JobSource> {
    let manifest = if job.is_dir() {
        Some(job.join("Cargo.toml"))
    } else if job.file_name().is_some_and(|n| n == "Cargo.toml") {
        Some(job.to_path_buf())
    } else {
        None
    };
    let path = match manifest {
        Some(manifest) => build(&manifest)?,
        None => job.to_path_buf(),
    };
    let bytes = std::fs::read(&path)
        .with_context(|| format!("reading the job module {}", path.display()))?;
    Ok(JobSource { bytes, path })
}

/// Builds the crate of `manifest` for wasm32 and returns its module's path.
pub fn build(manifest: &Path) -> anyhow::Result<PathBuf> {
    if !manifest.exists() {
        bail!(
            "{} is not a job crate (no Cargo.toml); give a .wasm file or a crate directory",
            manifest.display()
        );
    }
    ensure_target()?;
    eprintln!(
        "Building {} for {WASM_TARGET} (release) ...",
        manifest.display()
    );
    // A target directory of its own: the host's may be locked by the cargo that runs us.
    let output = Command::new(cargo())
        .args(["build", "--release", "--lib", "--target", WASM_TARGET])
        .arg("--manifest-path")
        .arg(manifest)
        .arg("--target-dir")
        .arg(target_dir())
        .args(MODULE_PROFILE.iter().flat_map(|c| ["--config", c]))
        .args(["--config", strip_setting()])
        // Flags meant for the host (`-C target-cpu=native`) do not fit the module's target.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .args(["--message-format", "json-render-diagnostics"])
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo to build the job (is cargo on PATH?)")?;
    if !output.status.success() {
        bail!("building the job failed (cargo's messages are above)");
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let modules: Vec<PathBuf> = stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && is_local(m, manifest))
        .flat_map(|m| {
            m["filenames"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|f| f.as_str().map(PathBuf::from))
        })
        .filter(|f| f.extension().is_some_and(|e| e == "wasm"))
        .collect();
    match modules.as_slice() {
        [module] => Ok(module.clone()),
        [] => bail!(
            "building {} made no .wasm module: a job crate needs `crate-type = [\"cdylib\", \
             \"rlib\"]` under [lib] and `quarry_sdk::job!(your_job);`",
            manifest.display()
        ),
        _ => bail!(
            "building {} made several .wasm modules ({}); give the one to submit",
            manifest.display(),
            modules
                .iter()
                .map(|m| m.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Whether a cargo message is about the package of `manifest` (not a dependency).
fn is_local(message: &serde_json::Value, manifest: &Path) -> bool {
    let Some(path) = message["manifest_path"].as_str() else {
        return false;
    };
    let wanted = manifest
        .canonicalize()
        .unwrap_or_else(|_| manifest.to_path_buf());
    Path::new(path) == wanted
}

/// Small, fast modules: whole-program optimization, panics abort (the only panic strategy of
/// the target). What is stripped: [`strip_setting`].
const MODULE_PROFILE: [&str; 4] = [
    "profile.release.lto=true",
    "profile.release.codegen-units=1",
    "profile.release.opt-level=3",
    "profile.release.panic=\"abort\"",
];

/// No debug info, and no function names either, unless the workers are asked to name the
/// module's functions for a profiler (`QUARRY_WASM_PROFILER=perfmap`, see
/// [`quarry_wasm::PROFILER_ENV`]): then the module keeps its name section, so `perf` shows
/// the closures and SDK functions by name instead of `wasm[0]::function[N]`.
fn strip_setting() -> &'static str {
    if std::env::var_os(quarry_wasm::PROFILER_ENV).is_some_and(|v| v == "perfmap") {
        "profile.release.strip=\"debuginfo\""
    } else {
        "profile.release.strip=true"
    }
}

/// Where job modules are built: `QUARRY_WASM_TARGET_DIR`, else `~/.cache/quarry/wasm-target`.
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("QUARRY_WASM_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    cache.join("quarry").join("wasm-target")
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string())
}

/// Installs the wasm32 target through rustup when it is missing.
fn ensure_target() -> anyhow::Result<()> {
    let Ok(listed) = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
    else {
        // No rustup: cargo's own error will say what is missing.
        return Ok(());
    };
    if String::from_utf8_lossy(&listed.stdout)
        .lines()
        .any(|l| l.trim() == WASM_TARGET)
    {
        return Ok(());
    }
    eprintln!("Installing the Rust target {WASM_TARGET} (rustup target add) ...");
    let status = Command::new("rustup")
        .args(["target", "add", WASM_TARGET])
        .status()
        .context("running rustup")?;
    if !status.success() {
        bail!("`rustup target add {WASM_TARGET}` failed; run it yourself and submit again");
    }
    Ok(())
}
