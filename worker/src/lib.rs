//! The Quarry worker daemon.
//!
//! A worker runs beside one store node and executes the tasks the driver sends it over the shards
//! that node holds: serialized DataFusion plan fragments and WASM stages, on a CPU runtime kept
//! apart from the network runtime that serves gRPC, Arrow Flight (shuffle) and heartbeats.
//!
//! Nothing is defined yet: today every command runs in one process on the embedded store
//! (`quarry_store::EmbeddedStore`), planned by `quarry_sql`. The worker arrives with the
//! distributed runtime.
