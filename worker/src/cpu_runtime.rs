//! The runtime plans run on, apart from the one serving gRPC, Flight and heartbeats.
//!
//! A task's operators are CPU-bound; on the network runtime they would delay heartbeats and
//! exchange reads until the driver declared the worker lost. Each worker owns one multi-threaded
//! tokio runtime for plans and hands it tasks through [`CpuRuntime::spawn`], whose handle aborts
//! the task when dropped (a cancelled gRPC call therefore stops its task).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};

/// A dedicated runtime for CPU work.
#[derive(Debug)]
pub struct CpuRuntime {
    runtime: Option<Runtime>,
}

impl CpuRuntime {
    pub fn new(threads: usize) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("quarry-cpu")
            // Exchange readers pull their inputs over the network from inside plans.
            .enable_all()
            .build()
            .map_err(Error::Runtime)?;
        Ok(CpuRuntime {
            runtime: Some(runtime),
        })
    }

    /// The runtime's handle, to spawn work it owns elsewhere (a `JoinSet`).
    pub fn handle(&self) -> tokio::runtime::Handle {
        match &self.runtime {
            Some(rt) => rt.handle().clone(),
            None => tokio::runtime::Handle::current(),
        }
    }

    /// Runs `future` on the CPU runtime. Dropping the returned handle aborts it.
    pub fn spawn<F>(&self, future: F) -> AbortOnDrop<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match &self.runtime {
            Some(rt) => AbortOnDrop(rt.spawn(future)),
            // Only after shutdown: run on the caller's runtime rather than panic.
            None => AbortOnDrop(tokio::spawn(future)),
        }
    }
}

impl Drop for CpuRuntime {
    fn drop(&mut self) {
        // Dropping a runtime from inside another one blocks and panics; let it wind down on its
        // own threads instead.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// A task handle that aborts the task when dropped.
#[derive(Debug)]
pub struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> AbortOnDrop<T> {
    pub fn abort_handle(&self) -> tokio::task::AbortHandle {
        self.0.abort_handle()
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> Future for AbortOnDrop<T> {
    type Output = std::result::Result<T, tokio::task::JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> From<JoinHandle<T>> for AbortOnDrop<T> {
    fn from(handle: JoinHandle<T>) -> Self {
        AbortOnDrop(handle)
    }
}
