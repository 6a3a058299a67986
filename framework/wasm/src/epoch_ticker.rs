//! The thread that advances an engine's epoch, which is how a call into a guest gets interrupted.

use std::time::Duration;

use wasmtime::{Engine, EngineWeak};

/// How often the epoch advances: the granularity of [`SandboxLimits::deadline`].
///
/// [`SandboxLimits::deadline`]: crate::SandboxLimits::deadline
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Starts a thread that increments `engine`'s epoch every [`EPOCH_TICK`].
///
/// The thread holds only a weak reference, so it does not keep the engine alive: it stops by
/// itself within one tick after the last `Engine` clone (the runtime's, a module's, a store's) is
/// dropped. Nobody joins it, because modules may outlive the runtime that loaded them.
pub(crate) fn start(engine: &Engine) -> std::io::Result<()> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("quarry-wasm-epoch".into())
        .spawn(move || tick(weak))
        .map(drop)
}

fn tick(weak: EngineWeak) {
    loop {
        std::thread::sleep(EPOCH_TICK);
        match weak.upgrade() {
            Some(engine) => engine.increment_epoch(),
            None => return,
        }
    }
}
