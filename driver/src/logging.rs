//! Logging through `tracing`: quiet by default, `RUST_LOG` for detail (e.g. `RUST_LOG=debug` or
//! `RUST_LOG=quarry_store=debug`). Logs go to stderr so that query output on stdout stays clean.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber once.
pub fn install() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(true)
        .try_init();
}
