//! Plan fragments on the wire: DataFusion's own operators through `datafusion-proto`, Quarry's
//! (the store scan and the exchange reader) through [`QuarryCodec`].
//!
//! A Rust job's operator travels as its module's content hash, arguments and operator number;
//! the worker has loaded the module (fetched by hash) before it decodes the plan.
//!
//! A scan travels as the request it was planned from; a worker decoding it plans the scan again
//! over the shards of its task, in its own process and store. An exchange reader travels unbound
//! and is bound, while decoding, to the outputs of the input stage the task was given.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arrow::datatypes::Schema;
use datafusion::common::{Result, ScalarValue, internal_datafusion_err, plan_datafusion_err};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::bytes::{
    physical_plan_from_bytes_with_extension_codec, physical_plan_to_bytes_with_proto_converter,
};
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use datafusion_proto::protobuf;
use prost::Message;
use quarry_core::schema::{TableDef, TableName};
use quarry_core::shard_set::ShardSet;
use quarry_core::token::TokenRange;
use quarry_sdk::dag::{JobArgs, OpKind};
use quarry_sql::scan_exec::StoreScanExec;
use quarry_store::{CmpOp, Predicate, ScanRequest, Store};
use quarry_wasm::{ModuleHash, Runtime};

use crate::exchange::{ExchangeClient, ExchangeKind, ExchangeReaderExec, TaskOutput};
use crate::ids::StageId;
use crate::scalar_subquery::SubqueryValues;
use crate::wasm_exec::WasmExec;
use crate::write::{ShardRouterExec, StoreWriteExec};

/// What a task binds its plan to while decoding it.
#[derive(Debug, Clone)]
pub struct TaskBinding {
    /// The shards the task's scans read; all shards when `None`.
    pub shards: Option<ShardSet>,
    /// The hash partitions of its input exchanges the task reads.
    pub hash_partitions: Vec<u32>,
    /// The finished tasks of each input stage.
    pub inputs: HashMap<StageId, Vec<TaskOutput>>,
    pub client: Arc<dyn ExchangeClient>,
    /// Partitions a decoded scan spreads its splits over (the worker's cores).
    pub scan_partitions: usize,
}

/// Encodes and decodes Quarry's operators inside DataFusion plans.
pub struct QuarryCodec {
    store: Arc<dyn Store>,
    task: Option<TaskBinding>,
    /// Where decoded WASM operators find their modules (loaded before decoding).
    modules: Option<Arc<Runtime>>,
}

impl fmt::Debug for QuarryCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuarryCodec")
            .field("store", &self.store.kind())
            .field("task", &self.task)
            .finish()
    }
}

impl QuarryCodec {
    /// A codec for encoding, or for decoding without binding (scans read every shard and
    /// exchange readers stay unbound).
    pub fn new(store: Arc<dyn Store>) -> Self {
        QuarryCodec {
            store,
            task: None,
            modules: None,
        }
    }

    /// This codec with WASM operators decoded over the modules `runtime` holds.
    pub fn with_modules(mut self, runtime: Arc<Runtime>) -> Self {
        self.modules = Some(runtime);
        self
    }

    /// A codec that decodes a task's plan, bound to the task's shards and inputs.
    pub fn for_task(store: Arc<dyn Store>, task: TaskBinding) -> Self {
        QuarryCodec {
            store,
            task: Some(task),
            modules: None,
        }
    }

    /// Serializes a plan fragment; scalar subqueries that have run travel as their values.
    pub fn encode(&self, plan: Arc<dyn ExecutionPlan>) -> Result<Vec<u8>> {
        Ok(physical_plan_to_bytes_with_proto_converter(plan, self, &SubqueryValues)?.to_vec())
    }

    /// Deserializes a plan fragment; functions (such as `token`) resolve through `ctx`.
    pub fn decode(&self, bytes: &[u8], ctx: &TaskContext) -> Result<Arc<dyn ExecutionPlan>> {
        physical_plan_from_bytes_with_extension_codec(bytes, ctx, self)
    }
}

#[derive(Clone, PartialEq, Message)]
struct QuarryNode {
    #[prost(message, optional, tag = "1")]
    scan: Option<ScanNode>,
    #[prost(message, optional, tag = "2")]
    exchange: Option<ExchangeNode>,
    #[prost(message, optional, tag = "3")]
    router: Option<RouterNode>,
    #[prost(message, optional, tag = "4")]
    write: Option<WriteNode>,
    #[prost(message, optional, tag = "5")]
    wasm: Option<WasmNode>,
}

/// A [`WasmExec`]: which module (by content hash), its arguments and operator.
#[derive(Clone, PartialEq, Message)]
struct WasmNode {
    #[prost(string, tag = "1")]
    module_hash: String,
    /// The job's arguments as rkyv bytes (`JobArgs::to_bytes`).
    #[prost(bytes = "vec", tag = "2")]
    args: Vec<u8>,
    #[prost(uint32, tag = "3")]
    op: u32,
    #[prost(string, tag = "4")]
    name: String,
    /// 0: map, 1: combine, 2: merge on `keys` columns.
    #[prost(uint32, tag = "5")]
    kind: u32,
    #[prost(uint32, tag = "6")]
    keys: u32,
    #[prost(message, optional, tag = "7")]
    schema: Option<protobuf::Schema>,
}

/// A [`ShardRouterExec`]: the target table and its shard groups (as `0-9,12` text).
#[derive(Clone, PartialEq, Message)]
struct RouterNode {
    #[prost(string, tag = "1")]
    keyspace: String,
    #[prost(string, tag = "2")]
    table: String,
    #[prost(uint32, tag = "3")]
    shard_count: u32,
    #[prost(string, repeated, tag = "4")]
    groups: Vec<String>,
}

/// A [`StoreWriteExec`]: the table it writes, and the statement its parts belong to.
#[derive(Clone, PartialEq, Message)]
struct WriteNode {
    #[prost(string, tag = "1")]
    keyspace: String,
    #[prost(string, tag = "2")]
    table: String,
    #[prost(uint64, tag = "3")]
    statement: u64,
}

#[derive(Clone, PartialEq, Message)]
struct ScanNode {
    #[prost(string, tag = "1")]
    keyspace: String,
    #[prost(string, tag = "2")]
    table: String,
    /// Set when `columns` is a projection (an empty projection is valid: `count(*)`).
    #[prost(bool, tag = "3")]
    projected: bool,
    #[prost(uint32, repeated, tag = "4")]
    columns: Vec<u32>,
    #[prost(message, repeated, tag = "5")]
    predicates: Vec<PredicateNode>,
    #[prost(uint64, optional, tag = "6")]
    limit: Option<u64>,
    #[prost(uint32, tag = "7")]
    pushed_filters: u32,
    #[prost(uint32, tag = "8")]
    target_partitions: u32,
}

#[derive(Clone, PartialEq, Message)]
struct PredicateNode {
    /// 0: comparison, 1: IN list, 2: token range.
    #[prost(uint32, tag = "1")]
    kind: u32,
    #[prost(string, tag = "2")]
    column: String,
    /// 0 `=`, 1 `<`, 2 `<=`, 3 `>`, 4 `>=`.
    #[prost(uint32, tag = "3")]
    op: u32,
    #[prost(message, repeated, tag = "4")]
    values: Vec<protobuf::ScalarValue>,
    #[prost(int64, tag = "5")]
    token_start: i64,
    #[prost(int64, tag = "6")]
    token_end: i64,
}

#[derive(Clone, PartialEq, Message)]
struct ExchangeNode {
    #[prost(uint32, tag = "1")]
    stage: u32,
    /// 0 for a gather exchange.
    #[prost(uint32, tag = "2")]
    hash_partitions: u32,
    #[prost(message, optional, tag = "3")]
    schema: Option<protobuf::Schema>,
}

const OPS: [CmpOp; 5] = [CmpOp::Eq, CmpOp::Lt, CmpOp::LtEq, CmpOp::Gt, CmpOp::GtEq];

fn scalars(array: &arrow::array::ArrayRef) -> Result<Vec<protobuf::ScalarValue>> {
    (0..array.len())
        .map(|i| {
            let value = ScalarValue::try_from_array(array, i)?;
            protobuf::ScalarValue::try_from(&value)
                .map_err(|e| internal_datafusion_err!("encoding a pushed-down literal: {e}"))
        })
        .collect()
}

fn array(values: &[protobuf::ScalarValue]) -> Result<arrow::array::ArrayRef> {
    let values = values
        .iter()
        .map(|v| {
            ScalarValue::try_from(v)
                .map_err(|e| plan_datafusion_err!("decoding a pushed-down literal: {e}"))
        })
        .collect::<Result<Vec<_>>>()?;
    ScalarValue::iter_to_array(values)
}

fn encode_predicate(p: &Predicate) -> Result<PredicateNode> {
    let empty = PredicateNode {
        kind: 0,
        column: String::new(),
        op: 0,
        values: Vec::new(),
        token_start: 0,
        token_end: 0,
    };
    Ok(match p {
        Predicate::Compare { column, op, value } => PredicateNode {
            column: column.clone(),
            op: OPS.iter().position(|o| o == op).unwrap_or(0) as u32,
            values: scalars(value)?,
            ..empty
        },
        Predicate::InList { column, values } => PredicateNode {
            kind: 1,
            column: column.clone(),
            values: scalars(values)?,
            ..empty
        },
        Predicate::TokenRange(range) => PredicateNode {
            kind: 2,
            token_start: range.start,
            token_end: range.end,
            ..empty
        },
    })
}

fn decode_predicate(node: &PredicateNode) -> Result<Predicate> {
    Ok(match node.kind {
        0 => Predicate::Compare {
            column: node.column.clone(),
            op: *OPS
                .get(node.op as usize)
                .ok_or_else(|| plan_datafusion_err!("unknown comparison {} in a scan", node.op))?,
            value: array(&node.values)?,
        },
        1 => Predicate::InList {
            column: node.column.clone(),
            values: array(&node.values)?,
        },
        2 => Predicate::TokenRange(TokenRange::new(node.token_start, node.token_end)),
        other => {
            return Err(plan_datafusion_err!(
                "unknown predicate kind {other} in a scan"
            ));
        }
    })
}

impl QuarryCodec {
    fn encode_scan(scan: &StoreScanExec) -> Result<ScanNode> {
        let request = scan.request();
        Ok(ScanNode {
            keyspace: request.table.keyspace.clone(),
            table: request.table.table.clone(),
            projected: request.projection.is_some(),
            columns: request
                .projection
                .iter()
                .flatten()
                .map(|&c| c as u32)
                .collect(),
            predicates: request
                .filters
                .iter()
                .map(encode_predicate)
                .collect::<Result<_>>()?,
            limit: request.limit.map(|l| l as u64),
            pushed_filters: scan.pushed_filters() as u32,
            target_partitions: scan.target_partitions() as u32,
        })
    }

    /// A table's definition as this process's store has it.
    fn table(&self, keyspace: &str, table: &str) -> Result<TableDef> {
        self.store
            .table(&TableName::new(keyspace, table))
            .map_err(quarry_sql::error::to_datafusion)
    }

    fn decode_scan(&self, node: &ScanNode) -> Result<Arc<dyn ExecutionPlan>> {
        let request = ScanRequest {
            table: TableName::new(&node.keyspace, &node.table),
            projection: node
                .projected
                .then(|| node.columns.iter().map(|&c| c as usize).collect()),
            filters: node
                .predicates
                .iter()
                .map(decode_predicate)
                .collect::<Result<_>>()?,
            limit: node.limit.map(|l| l as usize),
            shards: self.task.as_ref().and_then(|t| t.shards.clone()),
        };
        let partitions = match &self.task {
            Some(t) => t.scan_partitions,
            None => node.target_partitions as usize,
        };
        let plan = self
            .store
            .plan_scan(&request)
            .map_err(quarry_sql::error::to_datafusion)?;
        Ok(Arc::new(StoreScanExec::new(
            request,
            plan,
            partitions,
            node.pushed_filters as usize,
        )))
    }

    fn decode_wasm(
        &self,
        node: &WasmNode,
        input: Arc<dyn ExecutionPlan>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let hash: ModuleHash = node
            .module_hash
            .parse()
            .map_err(|e| plan_datafusion_err!("a WASM operator's module hash: {e}"))?;
        let module = self
            .modules
            .as_ref()
            .and_then(|m| m.module(&hash))
            .ok_or_else(|| {
                plan_datafusion_err!(
                    "the plan runs job module {hash}, which this process has not loaded"
                )
            })?;
        let args = JobArgs::from_bytes(&node.args)
            .map_err(|e| plan_datafusion_err!("a WASM operator's arguments: {e}"))?;
        let kind = match node.kind {
            0 => OpKind::Map,
            1 => OpKind::Combine,
            2 => OpKind::Merge { keys: node.keys },
            other => return Err(plan_datafusion_err!("unknown WASM operator kind {other}")),
        };
        let schema = node
            .schema
            .as_ref()
            .ok_or_else(|| plan_datafusion_err!("a WASM operator without a schema"))?;
        let schema = Arc::new(
            Schema::try_from(schema)
                .map_err(|e| plan_datafusion_err!("decoding a WASM operator's schema: {e}"))?,
        );
        Ok(Arc::new(WasmExec::new(
            input,
            module,
            args,
            node.op,
            node.name.clone(),
            kind,
            schema,
        )))
    }

    fn decode_exchange(&self, node: &ExchangeNode) -> Result<Arc<dyn ExecutionPlan>> {
        let schema = node
            .schema
            .as_ref()
            .ok_or_else(|| plan_datafusion_err!("an exchange reader without a schema"))?;
        let schema = Arc::new(
            Schema::try_from(schema)
                .map_err(|e| plan_datafusion_err!("decoding an exchange schema: {e}"))?,
        );
        let kind = match node.hash_partitions {
            0 => ExchangeKind::Gather,
            n => ExchangeKind::Hash {
                partitions: n as usize,
            },
        };
        let stage = StageId(node.stage);
        let reader = ExchangeReaderExec::new(stage, kind, schema);
        match &self.task {
            Some(task) => {
                let outputs = task.inputs.get(&stage).ok_or_else(|| {
                    plan_datafusion_err!(
                        "the task reads stage {stage} but was given no outputs of it"
                    )
                })?;
                Ok(Arc::new(reader.bind(
                    outputs,
                    &task.hash_partitions,
                    task.client.clone(),
                )))
            }
            None => Ok(Arc::new(reader)),
        }
    }
}

impl PhysicalExtensionCodec for QuarryCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        _ctx: &TaskContext,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let node = QuarryNode::decode(buf)
            .map_err(|e| plan_datafusion_err!("a Quarry plan node is malformed: {e}"))?;
        let input = || match inputs {
            [input] => Ok(input.clone()),
            _ => Err(plan_datafusion_err!(
                "a Quarry write node has {} inputs instead of one",
                inputs.len()
            )),
        };
        if let Some(wasm) = &node.wasm {
            return self.decode_wasm(wasm, input()?);
        }
        match (&node.scan, &node.exchange, &node.router, &node.write) {
            (Some(scan), None, None, None) => self.decode_scan(scan),
            (None, Some(exchange), None, None) => self.decode_exchange(exchange),
            (None, None, Some(router), None) => {
                let def = self.table(&router.keyspace, &router.table)?;
                let shards = self
                    .store
                    .keyspace(&router.keyspace)
                    .map_err(quarry_sql::error::to_datafusion)?
                    .shards;
                if router.shard_count != shards {
                    return Err(plan_datafusion_err!(
                        "a write plan routes {} shards of keyspace {}, which has {shards}",
                        router.shard_count,
                        router.keyspace
                    ));
                }
                let groups = router
                    .groups
                    .iter()
                    .map(|g| {
                        g.parse::<ShardSet>()
                            .map_err(|e| plan_datafusion_err!("a write group is malformed: {e}"))
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(Arc::new(ShardRouterExec::try_new(
                    input()?,
                    def,
                    router.shard_count,
                    groups,
                )?))
            }
            (None, None, None, Some(write)) => {
                let def = self.table(&write.keyspace, &write.table)?;
                Ok(Arc::new(StoreWriteExec::new(
                    input()?,
                    def,
                    write.statement,
                    self.store.clone(),
                )))
            }
            _ => Err(plan_datafusion_err!(
                "a Quarry plan node must be exactly one of scan, exchange, router or write"
            )),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        let message = if let Some(scan) = node.downcast_ref::<StoreScanExec>() {
            QuarryNode {
                scan: Some(Self::encode_scan(scan)?),
                ..QuarryNode::default()
            }
        } else if let Some(router) = node.downcast_ref::<ShardRouterExec>() {
            QuarryNode {
                router: Some(RouterNode {
                    keyspace: router.target().keyspace.clone(),
                    table: router.target().name.clone(),
                    shard_count: router.shard_count(),
                    groups: router.groups().iter().map(ToString::to_string).collect(),
                }),
                ..QuarryNode::default()
            }
        } else if let Some(write) = node.downcast_ref::<StoreWriteExec>() {
            QuarryNode {
                write: Some(WriteNode {
                    keyspace: write.op().table.keyspace.clone(),
                    table: write.op().table.name.clone(),
                    statement: write.op().statement,
                }),
                ..QuarryNode::default()
            }
        } else if let Some(wasm) = node.downcast_ref::<WasmExec>() {
            let schema = protobuf::Schema::try_from(wasm.schema().as_ref())
                .map_err(|e| internal_datafusion_err!("encoding a WASM operator's schema: {e}"))?;
            let (kind, keys) = match wasm.kind() {
                OpKind::Map => (0, 0),
                OpKind::Combine => (1, 0),
                OpKind::Merge { keys } => (2, keys),
            };
            QuarryNode {
                wasm: Some(WasmNode {
                    module_hash: wasm.module().hash().to_string(),
                    args: wasm.args().to_bytes(),
                    op: wasm.op(),
                    name: wasm.op_name().to_string(),
                    kind,
                    keys,
                    schema: Some(schema),
                }),
                ..QuarryNode::default()
            }
        } else if let Some(reader) = node.downcast_ref::<ExchangeReaderExec>() {
            let schema = protobuf::Schema::try_from(reader.schema().as_ref())
                .map_err(|e| internal_datafusion_err!("encoding an exchange schema: {e}"))?;
            QuarryNode {
                exchange: Some(ExchangeNode {
                    stage: reader.stage().0,
                    hash_partitions: match reader.kind() {
                        ExchangeKind::Hash { partitions } => partitions as u32,
                        ExchangeKind::Gather => 0,
                    },
                    schema: Some(schema),
                }),
                ..QuarryNode::default()
            }
        } else {
            return Err(internal_datafusion_err!(
                "{} cannot be sent to a worker",
                node.name()
            ));
        };
        message
            .encode(buf)
            .map_err(|e| internal_datafusion_err!("encoding a Quarry plan node: {e}"))
    }
}
