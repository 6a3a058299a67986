//! Quarry from Rust, without shelling out: connect to a running driver (`quarry up`, `quarry
//! driver`), run SQL and stream its Arrow results, load batches into a table, submit a Rust job's
//! module and follow it, and list or cancel jobs. The `quarry` command's remote commands are
//! built on this crate.
//!
//! ```no_run
//! # async fn example() -> quarry_client::Result<()> {
//! use quarry_client::{Client, auth::Secret};
//!
//! let token = Secret::read(std::path::Path::new("quarry-data/token"))?;
//! let mut client = Client::connect("http://127.0.0.1:7070", Some(&token)).await?;
//!
//! // SQL: batches arrive while the job still runs.
//! let mut rows = client.sql_stream("SELECT device_id, max(value) FROM iot.readings GROUP BY 1").await?;
//! while let Some(batch) = rows.next().await? {
//!     println!("{} rows", batch.num_rows());
//! }
//!
//! // A Rust job: the module `quarry-sdk` built, run with its arguments.
//! let module = std::fs::read("target/wasm32-unknown-unknown/release/rollup.wasm")?;
//! let job = client.upload_job(module, &[("days".into(), "7".into())]).await?;
//! for output in client.run_job(&job).await? {
//!     println!("{}: {} rows", output.result, output.num_rows());
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Every call carries the client's token (see [`auth`]); `https://` drivers are reached over TLS
//! trusting the CA given to [`Client::connect_with`] (see [`tls`]). The crate holds no query
//! engine: it depends on the wire protocol (`quarry-proto`), tonic and Arrow only.

pub mod auth;
mod client;
mod error;
mod jobs;
pub mod tls;

pub use client::{Client, QueryOutput, QueryStream};
pub use error::{Error, Result};
pub use jobs::{Detached, JobOutput, JobReport, JobResult, UploadedJob};
pub use quarry_proto::v1::{GetJobResponse, JobState, JobSummary, WorkerSummary};
