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
use datafusion::logical_expr::ScalarUDF;
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
use quarry_sql::checked_arithmetic::CheckedOperator;
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

/// The plan codec's messages, generated from `proto/proto/quarry/plan/v1/plan.proto`.
#[allow(missing_debug_implementations, clippy::all, clippy::pedantic)]
mod plan_proto {
    include!("generated/quarry.plan.v1.rs");
}

use plan_proto::quarry_node::Node;
use plan_proto::{
    CompareOp, ExchangeKind as ExchangeKindProto, ExchangeNode, PredicateKind, PredicateNode,
    QuarryNode, RouterNode, ScanNode, WasmNode, WasmOpKind, WriteNode,
};

fn compare_op_to_proto(op: CmpOp) -> CompareOp {
    match op {
        CmpOp::Eq => CompareOp::Eq,
        CmpOp::Lt => CompareOp::Lt,
        CmpOp::LtEq => CompareOp::LtEq,
        CmpOp::Gt => CompareOp::Gt,
        CmpOp::GtEq => CompareOp::GtEq,
    }
}

fn compare_op_from_proto(op: CompareOp) -> CmpOp {
    match op {
        CompareOp::Eq => CmpOp::Eq,
        CompareOp::Lt => CmpOp::Lt,
        CompareOp::LtEq => CmpOp::LtEq,
        CompareOp::Gt => CmpOp::Gt,
        CompareOp::GtEq => CmpOp::GtEq,
    }
}

/// An enum field's value, or an error naming the field when it is out of range.
fn known<E: TryFrom<i32>>(value: i32, field: &str) -> Result<E> {
    E::try_from(value).map_err(|_| plan_datafusion_err!("unknown {field} {value} in a plan"))
}

fn scalars(array: &arrow::array::ArrayRef) -> Result<Vec<Vec<u8>>> {
    (0..array.len())
        .map(|i| {
            let value = ScalarValue::try_from_array(array, i)?;
            protobuf::ScalarValue::try_from(&value)
                .map(|v| v.encode_to_vec())
                .map_err(|e| internal_datafusion_err!("encoding a pushed-down literal: {e}"))
        })
        .collect()
}

fn array(values: &[Vec<u8>]) -> Result<arrow::array::ArrayRef> {
    let values = values
        .iter()
        .map(|bytes| {
            let value = protobuf::ScalarValue::decode(bytes.as_slice())
                .map_err(|e| plan_datafusion_err!("a pushed-down literal is malformed: {e}"))?;
            ScalarValue::try_from(&value)
                .map_err(|e| plan_datafusion_err!("decoding a pushed-down literal: {e}"))
        })
        .collect::<Result<Vec<_>>>()?;
    ScalarValue::iter_to_array(values)
}

fn encode_schema(schema: &Schema) -> Result<Vec<u8>> {
    protobuf::Schema::try_from(schema)
        .map(|s| s.encode_to_vec())
        .map_err(|e| internal_datafusion_err!("encoding a schema: {e}"))
}

fn decode_schema(bytes: &[u8], what: &str) -> Result<Arc<Schema>> {
    let schema = protobuf::Schema::decode(bytes)
        .map_err(|e| plan_datafusion_err!("{what}'s schema is malformed: {e}"))?;
    Ok(Arc::new(Schema::try_from(&schema).map_err(|e| {
        plan_datafusion_err!("decoding {what}'s schema: {e}")
    })?))
}

/// Fails unless a scan of `keyspace.table` returns the columns it returned where the plan was
/// made (names and types, in order): the plan's expressions refer to columns by position.
fn same_columns(keyspace: &str, table: &str, planned: &Schema, here: &Schema) -> Result<()> {
    let columns = |schema: &Schema| {
        schema
            .fields()
            .iter()
            .map(|f| format!("{} {}", f.name(), f.data_type()))
            .collect::<Vec<_>>()
    };
    let (planned, here) = (columns(planned), columns(here));
    if planned == here {
        return Ok(());
    }
    Err(plan_datafusion_err!(
        "the query was planned with columns ({}) of {keyspace}.{table}, but this process's \
         catalog gives ({}); the table changed while the query ran, or this process has not \
         seen its definition yet: run the query again",
        planned.join(", "),
        here.join(", ")
    ))
}

fn encode_predicate(p: &Predicate) -> Result<PredicateNode> {
    Ok(match p {
        Predicate::Compare { column, op, value } => PredicateNode {
            kind: PredicateKind::Comparison as i32,
            column: column.clone(),
            op: compare_op_to_proto(*op) as i32,
            values: scalars(value)?,
            ..PredicateNode::default()
        },
        Predicate::InList { column, values } => PredicateNode {
            kind: PredicateKind::InList as i32,
            column: column.clone(),
            values: scalars(values)?,
            ..PredicateNode::default()
        },
        Predicate::TokenRange(range) => PredicateNode {
            kind: PredicateKind::TokenRange as i32,
            token_start: range.start,
            token_end: range.end,
            ..PredicateNode::default()
        },
    })
}

fn decode_predicate(node: &PredicateNode) -> Result<Predicate> {
    Ok(match known::<PredicateKind>(node.kind, "predicate kind")? {
        PredicateKind::Comparison => Predicate::Compare {
            column: node.column.clone(),
            op: compare_op_from_proto(known(node.op, "comparison")?),
            value: array(&node.values)?,
        },
        PredicateKind::InList => Predicate::InList {
            column: node.column.clone(),
            values: array(&node.values)?,
        },
        PredicateKind::TokenRange => {
            Predicate::TokenRange(TokenRange::new(node.token_start, node.token_end))
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
            replicated: scan.is_replicated(),
            schema: encode_schema(scan.schema().as_ref())?,
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
            shards: match &self.task {
                Some(task) if !node.replicated => task.shards.clone(),
                _ => None,
            },
        };
        let partitions = match &self.task {
            Some(t) => t.scan_partitions,
            None => node.target_partitions as usize,
        };
        let plan = self
            .store
            .plan_scan(&request)
            .map_err(quarry_sql::error::to_datafusion)?;
        let scan = StoreScanExec::new(request, plan, partitions, node.pushed_filters as usize);
        if !node.schema.is_empty() {
            let planned = decode_schema(&node.schema, "a store scan")?;
            same_columns(&node.keyspace, &node.table, &planned, &scan.schema())?;
        }
        Ok(Arc::new(if node.replicated {
            scan.replicated()
        } else {
            scan
        }))
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
        let kind = match known::<WasmOpKind>(node.kind, "WASM operator kind")? {
            WasmOpKind::Map => OpKind::Map,
            WasmOpKind::Combine => OpKind::Combine,
            WasmOpKind::Merge => OpKind::Merge { keys: node.keys },
        };
        let schema = decode_schema(&node.schema, "a WASM operator")?;
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
        let schema = decode_schema(&node.schema, "an exchange reader")?;
        let kind = match known::<ExchangeKindProto>(node.kind, "exchange kind")? {
            ExchangeKindProto::Gather => ExchangeKind::Gather,
            ExchangeKindProto::Hash => ExchangeKind::Hash {
                partitions: node.hash_partitions as usize,
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
        match node.node {
            Some(Node::Scan(scan)) => self.decode_scan(&scan),
            Some(Node::Exchange(exchange)) => self.decode_exchange(&exchange),
            Some(Node::Wasm(wasm)) => self.decode_wasm(&wasm, input()?),
            Some(Node::Router(router)) => {
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
            Some(Node::Write(write)) => {
                let def = self.table(&write.keyspace, &write.table)?;
                Ok(Arc::new(StoreWriteExec::new(
                    input()?,
                    def,
                    write.statement,
                    self.store.clone(),
                )))
            }
            None => Err(plan_datafusion_err!(
                "a Quarry plan node must be one of scan, exchange, router, write or wasm"
            )),
        }
    }

    /// A checked integer operator travels with the text of its expression, for its error.
    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        let checked = CheckedOperator::operator(name).and_then(|op| {
            let expression = String::from_utf8(buf.to_vec()).ok()?;
            CheckedOperator::new(op, expression)
        });
        match checked {
            Some(checked) => Ok(Arc::new(ScalarUDF::new_from_impl(checked))),
            None => Err(plan_datafusion_err!(
                "a plan calls the function {name}, which this worker does not have"
            )),
        }
    }

    fn try_encode_udf(&self, udf: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        if let Some(checked) = udf.inner().downcast_ref::<CheckedOperator>() {
            buf.extend_from_slice(checked.expression().as_bytes());
        }
        Ok(())
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        let node = if let Some(scan) = node.downcast_ref::<StoreScanExec>() {
            Node::Scan(Self::encode_scan(scan)?)
        } else if let Some(router) = node.downcast_ref::<ShardRouterExec>() {
            Node::Router(RouterNode {
                keyspace: router.target().keyspace.clone(),
                table: router.target().name.clone(),
                shard_count: router.shard_count(),
                groups: router.groups().iter().map(ToString::to_string).collect(),
            })
        } else if let Some(write) = node.downcast_ref::<StoreWriteExec>() {
            Node::Write(WriteNode {
                keyspace: write.op().table.keyspace.clone(),
                table: write.op().table.name.clone(),
                statement: write.op().statement,
            })
        } else if let Some(wasm) = node.downcast_ref::<WasmExec>() {
            let (kind, keys) = match wasm.kind() {
                OpKind::Map => (WasmOpKind::Map, 0),
                OpKind::Combine => (WasmOpKind::Combine, 0),
                OpKind::Merge { keys } => (WasmOpKind::Merge, keys),
            };
            Node::Wasm(WasmNode {
                module_hash: wasm.module().hash().to_string(),
                args: wasm.args().to_bytes(),
                op: wasm.op(),
                name: wasm.op_name().to_string(),
                kind: kind as i32,
                keys,
                schema: encode_schema(wasm.schema().as_ref())?,
            })
        } else if let Some(reader) = node.downcast_ref::<ExchangeReaderExec>() {
            let (kind, hash_partitions) = match reader.kind() {
                ExchangeKind::Hash { partitions } => (ExchangeKindProto::Hash, partitions as u32),
                ExchangeKind::Gather => (ExchangeKindProto::Gather, 0),
            };
            Node::Exchange(ExchangeNode {
                stage: reader.stage().0,
                kind: kind as i32,
                hash_partitions,
                schema: encode_schema(reader.schema().as_ref())?,
            })
        } else {
            return Err(internal_datafusion_err!(
                "{} cannot be sent to a worker",
                node.name()
            ));
        };
        let message = QuarryNode { node: Some(node) };
        message
            .encode(buf)
            .map_err(|e| internal_datafusion_err!("encoding a Quarry plan node: {e}"))
    }
}
