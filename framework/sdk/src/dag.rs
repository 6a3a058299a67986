//! The job's DAG as the module hands it to the driver, and the arguments the driver hands back.
//!
//! Both cross the host/guest boundary as rkyv archives (little-endian, aligned, 32-bit sizes:
//! rkyv's defaults, identical on wasm32 and x86_64). The host validates every archive it reads
//! (`rkyv::from_bytes`), never trusting the guest's bytes.
//!
//! ```text
//!   Source ──▶ Wasm(op: map) ──▶ Wasm(op: combine) ──▶ Shuffle(keys) ──▶ Wasm(op: final) ──▶ Sink
//! ```
//!
//! Narrow operators (`map`, `filter`, `flat_map`, `key_by`) never appear as nodes: the module fuses
//! each chain of them into the one operator that reads the chain's input, so a node boundary is
//! always a place where batches leave the module (a shuffle, a join, a union, a sink).

use rkyv::{Archive, Deserialize, Serialize};

/// Version of the contract between a job module and the host: the exports, their arguments and
/// results, and the archived types of this module. A host refuses a module built against another.
pub const ABI_VERSION: u32 = 1;

/// A node's id: its index in [`JobDag::nodes`]. Nodes only refer to earlier nodes.
pub type NodeIndex = u32;

/// What the module's planning export returns.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct JobDag {
    /// [`ABI_VERSION`] of the SDK the module was built with.
    pub abi_version: u32,
    /// The SDK's crate version, for messages.
    pub sdk_version: String,
    pub nodes: Vec<Node>,
    /// The module's operators, addressed by [`Node::Wasm::op`].
    pub ops: Vec<OpInfo>,
}

/// One operator the module runs over batches.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct OpInfo {
    /// The closures it runs, for messages: `map at src/lib.rs:12:10 → filter at src/lib.rs:13:10`.
    pub name: String,
    pub kind: OpKind,
    /// Arrow IPC stream bytes holding only the schema of the batches it emits.
    pub output_schema: Vec<u8>,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// Each input batch gives zero or more output batches; no state across batches.
    Map,
    /// Keyed state across all batches of its input partition, emitted at the end: the map-side
    /// combine before a shuffle (any partitioning will do) ...
    Combine,
    /// ... or the merge after it, which must see every row of a key: its input is hash-partitioned
    /// on the first `keys` columns.
    Merge { keys: u32 },
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Node {
    /// Rows of a store table: the columns of `schema` (Arrow IPC schema bytes), by name, with
    /// `predicate` (SQL) pushed down to the store.
    Source {
        table: String,
        predicate: Option<String>,
        schema: Vec<u8>,
    },
    /// The module's operator `op` over `input`'s batches.
    Wasm { input: NodeIndex, op: u32 },
    /// `input` hash-partitioned on its first `keys` columns.
    Shuffle { input: NodeIndex, keys: u32 },
    /// The rows of every input (same column types, in order).
    Union { inputs: Vec<NodeIndex> },
    /// An equi-join on the first `keys` columns of both sides. The output holds the left columns,
    /// then (when `right_marker`) a boolean column that is true where a right row matched and null
    /// where none did, then the right columns after its keys. `left_outer` keeps unmatched left rows
    /// with nulls on the right.
    Join {
        left: NodeIndex,
        right: NodeIndex,
        keys: u32,
        left_outer: bool,
        right_marker: bool,
    },
    /// Distinct rows of `input`.
    Distinct { input: NodeIndex },
    /// One of the job's results.
    Sink { input: NodeIndex, sink: Sink },
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Sink {
    /// Upserts the rows into `table` by its primary key; columns match by name.
    Write { table: String },
    /// Every row, back to whoever submitted the job.
    Collect,
    /// The number of rows.
    Count,
    /// Some `n` rows.
    Take { n: u64 },
}

/// The job's `--arg name=value` pairs, in the order given.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct JobArgs {
    pub pairs: Vec<(String, String)>,
}

impl JobArgs {
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        JobArgs {
            pairs: pairs.into_iter().collect(),
        }
    }

    /// The value of `name` (the last one given wins).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        rkyv::to_bytes::<rkyv::rancor::Error>(self)
            .map(|bytes| bytes.to_vec())
            .unwrap_or_default()
    }

    /// Decodes archived arguments, checking the archive.
    pub fn from_bytes(bytes: &[u8]) -> Result<JobArgs, String> {
        from_archive::<JobArgs>(bytes)
    }
}

impl JobDag {
    pub fn to_bytes(&self) -> Vec<u8> {
        rkyv::to_bytes::<rkyv::rancor::Error>(self)
            .map(|bytes| bytes.to_vec())
            .unwrap_or_default()
    }

    /// Decodes an archived DAG, checking the archive (the bytes come from untrusted code).
    pub fn from_bytes(bytes: &[u8]) -> Result<JobDag, String> {
        from_archive::<JobDag>(bytes)
    }
}

/// Copies `bytes` to an aligned buffer (a guest's `Vec<u8>` is only 8-aligned) and decodes them.
fn from_archive<T>(bytes: &[u8]) -> Result<T, String>
where
    T: Archive,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>>
        + Deserialize<T, rkyv::api::high::HighDeserializer<rkyv::rancor::Error>>,
{
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
    aligned.extend_from_slice(bytes);
    rkyv::from_bytes::<T, rkyv::rancor::Error>(&aligned).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dag_round_trips_through_its_archive() {
        let dag = JobDag {
            abi_version: ABI_VERSION,
            sdk_version: "0.1.0".into(),
            nodes: vec![
                Node::Source {
                    table: "iot.readings".into(),
                    predicate: Some("sensor = 'temp'".into()),
                    schema: vec![1, 2, 3],
                },
                Node::Wasm { input: 0, op: 0 },
                Node::Shuffle { input: 1, keys: 2 },
                Node::Join {
                    left: 2,
                    right: 2,
                    keys: 2,
                    left_outer: true,
                    right_marker: true,
                },
                Node::Sink {
                    input: 3,
                    sink: Sink::Take { n: 10 },
                },
            ],
            ops: vec![OpInfo {
                name: "map at src/lib.rs:1:1".into(),
                kind: OpKind::Merge { keys: 2 },
                output_schema: vec![4, 5],
            }],
        };
        assert_eq!(JobDag::from_bytes(&dag.to_bytes()).unwrap(), dag);
        let args = JobArgs::new([("days".to_string(), "7".to_string())]);
        assert_eq!(JobArgs::from_bytes(&args.to_bytes()).unwrap(), args);
    }

    #[test]
    fn garbage_is_refused_not_trusted() {
        assert!(JobDag::from_bytes(&[0xff; 64]).is_err());
        assert!(JobDag::from_bytes(&[]).is_err());
    }
}
