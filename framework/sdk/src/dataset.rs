//! Typed, lazy datasets and the job context that records what they become.
//!
//! A job function runs in every instance of the module: at the driver to produce the DAG, and
//! in each task to find the operator the task runs. It builds the same graph each time (a module
//! has no clock or randomness, and gets the same arguments), so operators are addressed by
//! their index in it.
//!
//! A [`Dataset`] is a *root* (a node whose output leaves the module as batches: a source, a
//! shuffle, a join, a union), optionally the keyed merge that reads a shuffle, plus a fused chain
//! of narrow closures over the rows. `map`, `filter`, `flat_map` and `key_by` only extend the
//! chain; wide operations and sinks end it, registering the merge and chain as one operator.
//! Before a shuffle, the chain ends in a map-side combine in the same operator.
//!
//! ```text
//!   source ─▶ filter ─▶ key_by ─▶ reduce_by_key ─▶ map ─▶ write_to
//!   └──── op 0: decode, filter, key_by, combine ───┘ ╎ shuffle ╎
//!                                    └─ op 1: merge, map, encode ─┘
//! ```

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::panic::Location;
use std::rc::Rc;
use std::str::FromStr;

use arrow_array::RecordBatch;

use crate::dag::{JobArgs, JobDag, Node, NodeIndex, OpInfo, OpKind, Sink};
use crate::data::{Columns, Data, finish_batch, schema_of};
use crate::error::{JobError, Result};
use crate::ipc;
use crate::merge::MergeState;

/// A job: builds its datasets and sinks from the context.
pub type JobFn = fn(&JobContext) -> Result<()>;

/// A root's rows through a fused chain of closures: appends the rows the chain makes of them to
/// the vector. Each closure of the chain runs over all the rows before the next one does, in a
/// loop the compiler specializes for it: no call through a pointer per row.
pub(crate) type Pipe<T> = Rc<dyn Fn(Input<'_>, &mut Vec<T>) -> Result<()>>;

/// What a chain starts from: a batch of the root's rows, or (from a merge in the same
/// instance) the rows themselves, a `Vec` of the root's row type that the chain takes over.
pub(crate) enum Input<'a> {
    Batch(&'a RecordBatch),
    Rows(&'a mut dyn Any),
}

/// The rows `pipe` makes of `from`.
fn rows_of<T>(pipe: &Pipe<T>, from: Input<'_>) -> Result<Vec<T>> {
    let mut rows = Vec::new();
    pipe(from, &mut rows)?;
    Ok(rows)
}

/// One running operator: batches in, batches out.
pub(crate) trait OpState {
    fn push(&mut self, batch: &RecordBatch) -> Result<Vec<RecordBatch>>;
    fn finish(&mut self) -> Result<Vec<RecordBatch>>;

    /// [`OpState::finish`], handing on each batch as it is made instead of all of them at once.
    fn finish_each(&mut self, each: &mut dyn FnMut(RecordBatch) -> Result<()>) -> Result<()> {
        self.finish()?.into_iter().try_for_each(each)
    }

    /// [`OpState::finish`] as rows rather than batches, for a chain in the same instance: hands
    /// on each `Vec` of its output rows as it is made (the chain may take them out of it).
    /// False, having done nothing, where the operator has only batches to give.
    fn finish_rows(&mut self, _each: &mut dyn FnMut(&mut dyn Any) -> Result<()>) -> Result<bool> {
        Ok(false)
    }
}

/// Makes a fresh state of an operator for each task.
pub(crate) type OpFactory = Rc<dyn Fn() -> Box<dyn OpState>>;

/// Hash maps of keyed operators. Their hasher has no random seed, so the same input gives the
/// same output order, and it uses 64-bit multiplies only: ahash's 128-bit multiply is a library
/// call on wasm32.
type KeyMap<K, V> = HashMap<K, V, KeyHasher>;

/// The hasher of keyed operators.
pub(crate) type KeyHasher = rustc_hash::FxBuildHasher;

fn key_map<K, V>() -> KeyMap<K, V> {
    KeyMap::with_hasher(KeyHasher::default())
}

thread_local! {
    /// The closure running now, for the panic message.
    static CURRENT: Cell<&'static str> = const { Cell::new("the job") };
}

/// The closure that was running when a panic happened.
pub(crate) fn current_closure() -> &'static str {
    CURRENT.with(Cell::get)
}

pub(crate) fn enter(name: &'static str) {
    CURRENT.with(|c| c.set(name));
}

/// `what at file:line:column` of the caller, kept for the module's lifetime (an instance lives
/// for one task).
#[track_caller]
fn closure_name(what: &str) -> &'static str {
    let at = Location::caller();
    Box::leak(format!("{what} at {}:{}:{}", at.file(), at.line(), at.column()).into_boxed_str())
}

#[derive(Default)]
pub(crate) struct Graph {
    nodes: Vec<Node>,
    ops: Vec<OpInfo>,
    factories: Vec<OpFactory>,
    sinks: usize,
    errors: Vec<String>,
}

impl Graph {
    fn node(&mut self, node: Node) -> NodeIndex {
        self.nodes.push(node);
        (self.nodes.len() - 1) as NodeIndex
    }

    fn op<T: Data>(&mut self, name: String, kind: OpKind, factory: OpFactory) -> u32 {
        self.ops.push(OpInfo {
            name,
            kind,
            output_schema: ipc::schema_bytes(&schema_of::<T>()),
        });
        self.factories.push(factory);
        (self.ops.len() - 1) as u32
    }
}

/// What a job function is given: its arguments and the sources it reads.
pub struct JobContext {
    graph: Rc<RefCell<Graph>>,
    args: JobArgs,
}

impl fmt::Debug for JobContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobContext")
            .field("args", &self.args)
            .finish_non_exhaustive()
    }
}

/// A built job: its DAG and how to start each operator.
pub(crate) struct BuiltJob {
    pub dag: JobDag,
    pub factories: Vec<OpFactory>,
}

impl JobContext {
    pub(crate) fn new(args: JobArgs) -> Self {
        JobContext {
            graph: Rc::new(RefCell::new(Graph::default())),
            args,
        }
    }

    /// Runs `job` and returns what it built.
    pub(crate) fn build(job: JobFn, args: JobArgs) -> Result<BuiltJob> {
        let ctx = JobContext::new(args);
        enter("the job function");
        job(&ctx)?;
        let graph = ctx.graph.take();
        if !graph.errors.is_empty() {
            return Err(JobError::Plan {
                message: graph.errors.join("; "),
            });
        }
        if graph.sinks == 0 {
            return Err(JobError::Plan {
                message: "the job has no result: end a dataset with write_to, collect, count or \
                          take"
                    .into(),
            });
        }
        Ok(BuiltJob {
            dag: JobDag {
                abi_version: crate::dag::ABI_VERSION,
                sdk_version: env!("CARGO_PKG_VERSION").to_string(),
                nodes: graph.nodes,
                ops: graph.ops,
            },
            factories: graph.factories,
        })
    }

    /// The argument `name` (`--arg name=value`), parsed as a `T`.
    pub fn arg<T: FromStr>(&self, name: &str) -> Result<T>
    where
        T::Err: fmt::Display,
    {
        let value = self.args.get(name).ok_or_else(|| JobError::Arg {
            name: name.to_string(),
            message: format!("missing; pass --arg {name}=VALUE"),
        })?;
        parse_arg(name, value)
    }

    /// The argument `name` parsed as a `T`, or `default` when it is not given.
    pub fn arg_or<T: FromStr>(&self, name: &str, default: T) -> Result<T>
    where
        T::Err: fmt::Display,
    {
        match self.args.get(name) {
            Some(value) => parse_arg(name, value),
            None => Ok(default),
        }
    }

    /// The rows of store table `table` (`keyspace.table`) as `T`s: `T`'s fields name the columns
    /// read (others are not read), and must have the columns' types.
    #[track_caller]
    pub fn source<T: Data>(&self, table: &str) -> Dataset<T> {
        let root = self.graph.borrow_mut().node(Node::Source {
            table: table.to_string(),
            predicate: None,
            schema: ipc::schema_bytes(&schema_of::<T>()),
        });
        Dataset::root(self.graph.clone(), root)
    }
}

fn parse_arg<T: FromStr>(name: &str, value: &str) -> Result<T>
where
    T::Err: fmt::Display,
{
    value.parse().map_err(|e: T::Err| JobError::Arg {
        name: name.to_string(),
        message: format!(
            "'{value}' is not a valid {}: {e}",
            std::any::type_name::<T>()
        ),
    })
}

/// A lazy, typed collection of rows: nothing runs until the job is submitted.
pub struct Dataset<T> {
    graph: Rc<RefCell<Graph>>,
    root: NodeIndex,
    /// A keyed merge of the root's batches that the operator reading them starts with: a merge
    /// after a shuffle runs in the same instance as the chain after it, so its rows never
    /// leave the module between the two.
    head: Option<Head>,
    pipe: Pipe<T>,
    /// The closures of the chain so far; empty when the rows are the root's own.
    chain: Vec<&'static str>,
}

/// An operator that has not been registered yet because the chain after it will run in it.
#[derive(Clone)]
struct Head {
    name: String,
    kind: OpKind,
    factory: OpFactory,
}

impl<T> fmt::Debug for Dataset<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dataset")
            .field("root", &self.root)
            .field("head", &self.head.as_ref().map(|h| &h.name))
            .field("chain", &self.chain)
            .finish()
    }
}

/// A root's rows as `T`s: its batches decoded, or its rows taken as they are.
fn decode<T: Data>() -> Pipe<T> {
    Rc::new(|from: Input<'_>, out: &mut Vec<T>| match from {
        Input::Batch(batch) => {
            let reader = T::reader(Columns::of(batch))?;
            out.reserve(batch.num_rows());
            for row in 0..batch.num_rows() {
                out.push(T::read(&reader, row)?);
            }
            Ok(())
        }
        Input::Rows(rows) => {
            let Some(rows) = rows.downcast_mut::<Vec<T>>() else {
                return Err(JobError::Plan {
                    message: format!(
                        "internal: a merge handed its chain rows of another type than {}",
                        std::any::type_name::<T>()
                    ),
                });
            };
            if out.is_empty() {
                std::mem::swap(out, rows);
            } else {
                out.append(rows);
            }
            Ok(())
        }
    })
}

impl<T: Data> Dataset<T> {
    fn root(graph: Rc<RefCell<Graph>>, root: NodeIndex) -> Self {
        Dataset {
            graph,
            root,
            head: None,
            pipe: decode::<T>(),
            chain: Vec::new(),
        }
    }

    /// The rows `head` makes of `input`'s batches.
    fn headed(graph: Rc<RefCell<Graph>>, input: NodeIndex, head: Head) -> Self {
        Dataset {
            head: Some(head),
            ..Dataset::root(graph, input)
        }
    }

    fn then<U>(self, name: &'static str, pipe: Pipe<U>) -> Dataset<U> {
        let mut chain = self.chain;
        chain.push(name);
        Dataset {
            graph: self.graph,
            root: self.root,
            head: self.head,
            pipe,
            chain,
        }
    }

    /// Each row through `f`.
    #[track_caller]
    pub fn map<U: Data>(self, f: impl Fn(T) -> U + 'static) -> Dataset<U> {
        let name = closure_name("map");
        let input = self.pipe.clone();
        self.then(
            name,
            Rc::new(move |from: Input<'_>, out: &mut Vec<U>| {
                let rows = rows_of(&input, from)?;
                enter(name);
                out.extend(rows.into_iter().map(&f));
                Ok(())
            }),
        )
    }

    /// The rows for which `f` is true.
    #[track_caller]
    pub fn filter(self, f: impl Fn(&T) -> bool + 'static) -> Dataset<T> {
        let name = closure_name("filter");
        let input = self.pipe.clone();
        self.then(
            name,
            Rc::new(move |from: Input<'_>, out: &mut Vec<T>| {
                let rows = rows_of(&input, from)?;
                enter(name);
                out.extend(rows.into_iter().filter(|row| f(row)));
                Ok(())
            }),
        )
    }

    /// Every item of `f(row)` for every row.
    #[track_caller]
    pub fn flat_map<U: Data, I: IntoIterator<Item = U>>(
        self,
        f: impl Fn(T) -> I + 'static,
    ) -> Dataset<U> {
        let name = closure_name("flat_map");
        let input = self.pipe.clone();
        self.then(
            name,
            Rc::new(move |from: Input<'_>, out: &mut Vec<U>| {
                let rows = rows_of(&input, from)?;
                enter(name);
                out.extend(rows.into_iter().flat_map(&f));
                Ok(())
            }),
        )
    }

    /// Each row keyed by `f(&row)`: the pairs the `*_by_key` operations and joins work on.
    #[track_caller]
    pub fn key_by<K: Data>(self, f: impl Fn(&T) -> K + 'static) -> Dataset<(K, T)> {
        let name = closure_name("key_by");
        let input = self.pipe.clone();
        self.then(
            name,
            Rc::new(move |from: Input<'_>, out: &mut Vec<(K, T)>| {
                let rows = rows_of(&input, from)?;
                enter(name);
                out.extend(rows.into_iter().map(|row| (f(&row), row)));
                Ok(())
            }),
        )
    }

    /// Keeps only the source's rows that satisfy a SQL predicate, evaluated by the store before
    /// any row reaches the job (shards, token ranges and statistics prune as in SQL). Applies to
    /// a dataset straight from [`JobContext::source`].
    #[track_caller]
    pub fn where_sql(self, predicate: &str) -> Dataset<T> {
        let name = closure_name("where_sql");
        let mut graph = self.graph.borrow_mut();
        let applied = self.chain.is_empty()
            && match graph.nodes.get_mut(self.root as usize) {
                Some(Node::Source { predicate: p, .. }) => {
                    *p = Some(match p.take() {
                        Some(before) => format!("({before}) AND ({predicate})"),
                        None => predicate.to_string(),
                    });
                    true
                }
                _ => false,
            };
        if !applied {
            graph.errors.push(format!(
                "{name}: a SQL predicate filters a source as the store reads it; call where_sql \
                 right after source(), or use filter() here"
            ));
        }
        drop(graph);
        self
    }

    /// The node whose batches hold these rows, registering the head and chain as an operator if
    /// needed.
    fn materialize(self) -> NodeIndex {
        let chain = self.chain.join(" → ");
        let pipe = self.pipe;
        let (name, kind, factory): (String, OpKind, OpFactory) = match self.head {
            None if chain.is_empty() => return self.root,
            None => (
                chain,
                OpKind::Map,
                Rc::new(move || Box::new(MapState { pipe: pipe.clone() }) as Box<dyn OpState>),
            ),
            Some(head) if chain.is_empty() => (head.name, head.kind, head.factory),
            Some(head) => (
                format!("{} → {chain}", head.name),
                head.kind,
                Rc::new(move || {
                    Box::new(HeadThenMap {
                        head: (head.factory)(),
                        map: MapState { pipe: pipe.clone() },
                    }) as Box<dyn OpState>
                }),
            ),
        };
        let mut graph = self.graph.borrow_mut();
        let op = graph.op::<T>(name, kind, factory);
        graph.node(Node::Wasm {
            input: self.root,
            op,
        })
    }

    fn wide<U: Data>(self, node: impl FnOnce(NodeIndex) -> Node) -> Dataset<U> {
        let graph = self.graph.clone();
        let input = self.materialize();
        let root = graph.borrow_mut().node(node(input));
        Dataset::root(graph, root)
    }

    /// The rows of both datasets.
    pub fn union(self, other: Dataset<T>) -> Dataset<T> {
        let graph = self.graph.clone();
        let left = self.materialize();
        let right = other.materialize();
        let root = graph.borrow_mut().node(Node::Union {
            inputs: vec![left, right],
        });
        Dataset::root(graph, root)
    }

    /// Each distinct row once.
    pub fn distinct(self) -> Dataset<T> {
        self.wide(|input| Node::Distinct { input })
    }

    fn sink(self, sink: Sink) {
        let graph = self.graph.clone();
        let input = self.materialize();
        let mut g = graph.borrow_mut();
        g.node(Node::Sink { input, sink });
        g.sinks += 1;
    }

    /// Upserts the rows into `table` (`keyspace.table`), whose columns are `T`'s fields by name:
    /// re-running the job overwrites the same rows.
    pub fn write_to(self, table: &str) {
        self.sink(Sink::Write {
            table: table.to_string(),
        });
    }

    /// Every row, back to whoever submitted the job.
    pub fn collect(self) {
        self.sink(Sink::Collect);
    }

    /// Some `n` rows.
    pub fn take(self, n: u64) {
        self.sink(Sink::Take { n });
    }

    /// The number of rows.
    pub fn count(self) {
        self.sink(Sink::Count);
    }
}

impl<K: Data + Hash + Eq, V: Data> Dataset<(K, V)> {
    /// One value per key: the key's values combined with `f`, which must be associative and
    /// commutative (values are combined on each worker before the shuffle, then across them;
    /// where keys rarely repeat, the first combine stops trying and hands rows on as they are).
    #[track_caller]
    pub fn reduce_by_key(self, f: impl Fn(V, V) -> V + 'static) -> Dataset<(K, V)> {
        let name = closure_name("reduce_by_key");
        let f = Rc::new(f);
        let fold = f.clone();
        self.keyed(name, |v| v, move |a, v| fold(a, v), move |a, b| f(a, b))
    }

    /// One accumulator per key: `fold` adds a value to an accumulator started by `zero`, `merge`
    /// combines the accumulators of two workers.
    #[track_caller]
    pub fn aggregate_by_key<A: Data>(
        self,
        zero: impl Fn() -> A + 'static,
        fold: impl Fn(A, V) -> A + 'static,
        merge: impl Fn(A, A) -> A + 'static,
    ) -> Dataset<(K, A)> {
        let name = closure_name("aggregate_by_key");
        let (zero, fold, merge) = (Rc::new(zero), Rc::new(fold), Rc::new(merge));
        let first = fold.clone();
        self.keyed(
            name,
            move |v| first(zero(), v),
            move |a, v| fold(a, v),
            move |a, b| merge(a, b),
        )
    }

    /// Every value of each key, in no particular order. Prefer `reduce_by_key` or
    /// `aggregate_by_key` where they fit: they combine before the shuffle.
    #[track_caller]
    pub fn group_by_key(self) -> Dataset<(K, Vec<V>)> {
        let name = closure_name("group_by_key");
        let graph = self.graph.clone();
        let input = self.materialize();
        let shuffle = graph.borrow_mut().node(Node::Shuffle {
            input,
            keys: K::WIDTH as u32,
        });
        let merge = merge_op::<K, V, Vec<V>, _, _>(
            format!("{name} (merge)"),
            |v| vec![v],
            |mut a: Vec<V>, v| {
                a.push(v);
                a
            },
        );
        Dataset::headed(graph, shuffle, merge)
    }

    /// The combine and merge of a keyed fold. The combine's closures are type parameters rather
    /// than `dyn` closures, so its per-row loop is compiled with them inlined.
    fn keyed<A: Data, I, F, M>(
        self,
        name: &'static str,
        init: I,
        fold: F,
        merge: M,
    ) -> Dataset<(K, A)>
    where
        I: Fn(V) -> A + Clone + 'static,
        F: Fn(A, V) -> A + Clone + 'static,
        M: Fn(A, A) -> A + Clone + 'static,
    {
        let graph = self.graph.clone();
        let mut chain = self.chain.clone();
        chain.push(name);
        let pipe = self.pipe.clone();
        let folds = Closures {
            init,
            fold,
            merge: merge.clone(),
        };
        let combine = {
            let mut g = graph.borrow_mut();
            let op = g.op::<(K, A)>(
                format!("{} (combine)", chain.join(" → ")),
                OpKind::Combine,
                Rc::new(move || {
                    Box::new(CombineState::new(name, pipe.clone(), folds.clone()))
                        as Box<dyn OpState>
                }),
            );
            let combine = g.node(Node::Wasm {
                input: self.root,
                op,
            });
            g.node(Node::Shuffle {
                input: combine,
                keys: K::WIDTH as u32,
            })
        };
        let merged = merge_op::<K, A, A, _, _>(format!("{name} (merge)"), |a| a, merge);
        Dataset::headed(graph, combine, merged)
    }

    /// Pairs of values with equal keys, one row per matching pair.
    pub fn join<W: Data>(self, other: Dataset<(K, W)>) -> Dataset<(K, (V, W))> {
        self.join_node(other, false, false)
    }

    /// Every row of this dataset with the values of `other` under its key, or `None`.
    pub fn left_join<W: Data>(self, other: Dataset<(K, W)>) -> Dataset<(K, (V, Option<W>))> {
        self.join_node(other, true, W::WIDTH != 1)
    }

    fn join_node<W: Data, O: Data>(
        self,
        other: Dataset<(K, W)>,
        left_outer: bool,
        right_marker: bool,
    ) -> Dataset<O> {
        let graph = self.graph.clone();
        let left = self.materialize();
        let right = other.materialize();
        let root = graph.borrow_mut().node(Node::Join {
            left,
            right,
            keys: K::WIDTH as u32,
            left_outer,
            right_marker,
        });
        Dataset::root(graph, root)
    }

    /// The values, without their keys.
    #[track_caller]
    pub fn values(self) -> Dataset<V> {
        self.map(|(_, v)| v)
    }
}

/// The merge after a shuffle: the key's `In`s folded into one `A`, as the head of the operator
/// that reads the shuffle.
fn merge_op<K: Data + Hash + Eq, In: Data, A: Data, I, F>(name: String, init: I, fold: F) -> Head
where
    I: Fn(In) -> A + Clone + 'static,
    F: Fn(A, In) -> A + Clone + 'static,
{
    let label: &'static str = Box::leak(name.clone().into_boxed_str());
    Head {
        name,
        kind: OpKind::Merge {
            keys: K::WIDTH as u32,
        },
        factory: Rc::new(move || {
            Box::new(MergeState::<K, In, A, I, F>::new(
                label,
                init.clone(),
                fold.clone(),
            )) as Box<dyn OpState>
        }),
    }
}

/// A head operator whose every output batch goes through a chain in the same instance.
struct HeadThenMap<T> {
    head: Box<dyn OpState>,
    map: MapState<T>,
}

impl<T: Data> OpState for HeadThenMap<T> {
    fn push(&mut self, batch: &RecordBatch) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        for batch in &self.head.push(batch)? {
            out.extend(self.map.push(batch)?);
        }
        Ok(out)
    }

    /// The head's output goes through the chain a part at a time, so a merge's whole output is
    /// never held twice (as its own and as the chain's). A merge hands on its rows themselves,
    /// never encoded into a batch for the chain to decode again.
    fn finish(&mut self) -> Result<Vec<RecordBatch>> {
        let (head, map) = (&mut self.head, &mut self.map);
        let mut out = Vec::new();
        let as_rows = head.finish_rows(&mut |rows| {
            out.extend(map.push_input(Input::Rows(rows))?);
            Ok(())
        })?;
        if !as_rows {
            head.finish_each(&mut |batch| {
                out.extend(map.push(&batch)?);
                Ok(())
            })?;
        }
        out.extend(map.finish()?);
        Ok(out)
    }
}

/// A narrow chain, batch by batch.
struct MapState<T> {
    pipe: Pipe<T>,
}

impl<T: Data> MapState<T> {
    fn push_input(&mut self, from: Input<'_>) -> Result<Vec<RecordBatch>> {
        let rows = rows_of(&self.pipe, from)?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let count = rows.len();
        let mut builder = T::builder(count);
        for row in rows {
            T::append(&mut builder, row);
        }
        Ok(vec![finish_batch::<T>(builder, count)?])
    }
}

impl<T: Data> OpState for MapState<T> {
    fn push(&mut self, batch: &RecordBatch) -> Result<Vec<RecordBatch>> {
        self.push_input(Input::Batch(batch))
    }

    fn finish(&mut self) -> Result<Vec<RecordBatch>> {
        Ok(Vec::new())
    }
}

/// Rows at most in one output batch of a keyed operator.
pub(crate) const OUTPUT_BATCH_ROWS: usize = 8192;

/// The keyed map of a combine: rows folded by key, handed on when drained.
///
/// A task reads its rows in token order, so rows whose key holds the partition key arrive one
/// key after another: the key being folded stays out of the map until a row with another key
/// comes, and its rows are folded without hashing. When that key's run ends, its accumulator
/// goes into the map (merged with what the map holds for it, if the key came before), or,
/// once the combine streams, straight to the output.
struct KeyedState<K, In, A, G> {
    name: &'static str,
    input: Pipe<(K, In)>,
    folds: G,
    /// The key of the latest row and its accumulator, not in `map` yet.
    current: Option<(K, A)>,
    map: KeyMap<K, Option<A>>,
    /// Runs of one key that ended, in the order they did, while streaming.
    ended: Option<Vec<(K, A)>>,
    /// Rows folded so far.
    folded: u64,
    /// Runs that ended into the map, and how many of them made a new key there.
    runs_into_map: u64,
    keys_made: u64,
}

impl<K: Data + Hash + Eq, In: Data, A: Data, G: Folds<In, A>> KeyedState<K, In, A, G> {
    /// Folds every row of `batch` into its key's accumulator.
    fn fold(&mut self, batch: &RecordBatch) -> Result<()> {
        let rows = rows_of(&self.input, Input::Batch(batch))?;
        enter(self.name);
        self.folded += rows.len() as u64;
        let (current, folds) = (&mut self.current, &self.folds);
        let mut ended = |key, acc| match &mut self.ended {
            Some(ended) => ended.push((key, acc)),
            None => {
                self.runs_into_map += 1;
                self.keys_made += u64::from(put(&mut self.map, folds, key, acc));
            }
        };
        for (key, value) in rows {
            *current = Some(match current.take() {
                Some((same, acc)) if same == key => (same, folds.fold(acc, value)),
                Some((other, acc)) => {
                    ended(other, acc);
                    (key, folds.init(value))
                }
                None => (key, folds.init(value)),
            });
        }
        Ok(())
    }

    /// Whether the rows folded so far, enough to judge by and fewer than a combine's probe,
    /// came grouped by key: nearly every run of one key was that key's first, and there were
    /// runs of more than one row.
    fn comes_grouped(&self) -> bool {
        let (rows, runs, new) = (
            self.folded as f64,
            self.runs_into_map as f64,
            self.keys_made as f64,
        );
        (STREAM_PROBE_ROWS..COMBINE_PROBE_ROWS).contains(&self.folded)
            && runs > 0.0
            && new >= STREAM_NEW_KEY_RATIO * runs
            && new < COMBINE_SKIP_RATIO * rows
    }

    /// Keys in the map, counting the current one.
    fn keys(&self) -> usize {
        self.map.len() + usize::from(self.current.is_some())
    }

    /// The runs that ended while streaming, in batches, if there are at least `at_least` of
    /// them.
    fn drain_ended(&mut self, at_least: usize) -> Result<Vec<RecordBatch>> {
        let Some(ended) = self
            .ended
            .as_mut()
            .filter(|e| !e.is_empty() && e.len() >= at_least)
        else {
            return Ok(Vec::new());
        };
        to_batches(std::mem::take(ended))
    }

    /// Every key's accumulator, in batches, leaving the map empty.
    fn drain(&mut self) -> Result<Vec<RecordBatch>> {
        if let Some((key, acc)) = self.current.take() {
            match &mut self.ended {
                Some(ended) => ended.push((key, acc)),
                None => {
                    put(&mut self.map, &self.folds, key, acc);
                }
            }
        }
        let mut batches = self.drain_ended(1)?;
        let mut entries = std::mem::take(&mut self.map).into_iter().peekable();
        while entries.peek().is_some() {
            let mut builder = <(K, A)>::builder(OUTPUT_BATCH_ROWS.min(entries.len()));
            let mut rows = 0;
            for (key, acc) in entries.by_ref().take(OUTPUT_BATCH_ROWS) {
                if let Some(acc) = acc {
                    <(K, A)>::append(&mut builder, (key, acc));
                    rows += 1;
                }
            }
            batches.push(finish_batch::<(K, A)>(builder, rows)?);
        }
        Ok(batches)
    }
}

/// Keyed rows as batches of at most [`OUTPUT_BATCH_ROWS`].
fn to_batches<K: Data, A: Data>(rows: Vec<(K, A)>) -> Result<Vec<RecordBatch>> {
    let mut batches = Vec::with_capacity(rows.len().div_ceil(OUTPUT_BATCH_ROWS));
    let mut rows = rows.into_iter();
    while rows.len() > 0 {
        let count = rows.len().min(OUTPUT_BATCH_ROWS);
        let mut builder = <(K, A)>::builder(count);
        for row in rows.by_ref().take(count) {
            <(K, A)>::append(&mut builder, row);
        }
        batches.push(finish_batch::<(K, A)>(builder, count)?);
    }
    Ok(batches)
}

/// Adds `acc` to what `map` holds for `key`; true if the key is new to the map.
fn put<K: Hash + Eq, In, A>(
    map: &mut KeyMap<K, Option<A>>,
    folds: &impl Folds<In, A>,
    key: K,
    acc: A,
) -> bool {
    let mut new = false;
    let slot = map.entry(key).or_insert_with(|| {
        new = true;
        None
    });
    *slot = Some(match slot.take() {
        Some(held) => folds.merge(held, acc),
        None => acc,
    });
    new
}

/// The closures of a keyed fold: start an accumulator with a value, add a value to one, merge
/// two. One type parameter rather than three `dyn` closures, so that the per-row loop is
/// compiled with the job's closures inlined.
trait Folds<In, A> {
    fn init(&self, value: In) -> A;
    fn fold(&self, acc: A, value: In) -> A;
    fn merge(&self, a: A, b: A) -> A;
}

/// [`Folds`] made of three closures.
#[derive(Clone)]
struct Closures<I, F, M> {
    init: I,
    fold: F,
    merge: M,
}

impl<In, A, I, F, M> Folds<In, A> for Closures<I, F, M>
where
    I: Fn(In) -> A,
    F: Fn(A, In) -> A,
    M: Fn(A, A) -> A,
{
    #[inline]
    fn init(&self, value: In) -> A {
        (self.init)(value)
    }
    #[inline]
    fn fold(&self, acc: A, value: In) -> A {
        (self.fold)(acc, value)
    }
    #[inline]
    fn merge(&self, a: A, b: A) -> A {
        (self.merge)(a, b)
    }
}

/// Keys a combine holds before it hands on what it has: the merge after the shuffle folds
/// partial accumulators of one key together anyway. Bounds the module's memory whatever the
/// input, and keeps the map small enough to stay in cache. A task reads its rows in token order,
/// so the rows of a key that holds the partition key arrive together and still combine fully.
const COMBINE_MAX_KEYS: usize = 65_536;

/// Rows a combine reads before it judges whether combining pays.
const COMBINE_PROBE_ROWS: u64 = 100_000;

/// New keys per row read above which a combine stops combining and hands on every row as an
/// accumulator of its own: hashing rows that nearly never share a key only costs (DataFusion's
/// partial aggregation skips itself at the same ratio).
const COMBINE_SKIP_RATIO: f64 = 0.8;

/// Rows a combine reads before it judges whether its input comes grouped by key.
const STREAM_PROBE_ROWS: u64 = 16_384;

/// Share of the runs of one key that must be a key's first (no earlier run of it) for a
/// combine to judge its input grouped by key and stream.
const STREAM_NEW_KEY_RATIO: f64 = 0.95;

/// The map-side combine before the shuffle of `reduce_by_key`/`aggregate_by_key`: a keyed fold
/// that emits when it holds [`COMBINE_MAX_KEYS`] keys, and that adapts to its input.
///
/// - Where the input comes grouped by key (the key holds the partition key, and the store
///   reads in token order), each run of one key is the key's only one, so the map would only be
///   filled and emptied: the combine *streams*, handing on each run's accumulator as the run
///   ends, without hashing.
/// - Where keys rarely repeat at all, it *passes rows through*, each as an accumulator of its
///   own.
/// - Otherwise it combines in the map.
///
/// Either way the merge after the shuffle folds what the combine hands on, so a judgement that
/// turns out wrong later in the input costs output rows, never a wrong result.
struct CombineState<K, In, A, G> {
    keyed: KeyedState<K, In, A, G>,
    passing_through: bool,
}

impl<K, In, A, G> CombineState<K, In, A, G> {
    fn new(name: &'static str, input: Pipe<(K, In)>, folds: G) -> Self {
        CombineState {
            keyed: KeyedState {
                name,
                input,
                folds,
                current: None,
                map: key_map(),
                ended: None,
                folded: 0,
                runs_into_map: 0,
                keys_made: 0,
            },
            passing_through: false,
        }
    }
}

impl<K: Data + Hash + Eq, In: Data, A: Data, G: Folds<In, A>> OpState
    for CombineState<K, In, A, G>
{
    fn push(&mut self, batch: &RecordBatch) -> Result<Vec<RecordBatch>> {
        let keyed = &mut self.keyed;
        if self.passing_through {
            let rows = rows_of(&keyed.input, Input::Batch(batch))?;
            if rows.is_empty() {
                return Ok(Vec::new());
            }
            enter(keyed.name);
            let count = rows.len();
            let mut builder = <(K, A)>::builder(count);
            for (key, value) in rows {
                <(K, A)>::append(&mut builder, (key, keyed.folds.init(value)));
            }
            return Ok(vec![finish_batch::<(K, A)>(builder, count)?]);
        }
        keyed.fold(batch)?;
        if keyed.ended.is_some() {
            return keyed.drain_ended(OUTPUT_BATCH_ROWS);
        }
        if keyed.comes_grouped() {
            keyed.ended = Some(Vec::with_capacity(OUTPUT_BATCH_ROWS));
            return Ok(Vec::new());
        }
        // Rows are folded into the map only while combining.
        let rows = keyed.folded;
        if rows >= COMBINE_PROBE_ROWS && keyed.keys_made as f64 > COMBINE_SKIP_RATIO * rows as f64 {
            self.passing_through = true;
            return keyed.drain();
        }
        if keyed.keys() >= COMBINE_MAX_KEYS {
            return keyed.drain();
        }
        Ok(Vec::new())
    }

    fn finish(&mut self) -> Result<Vec<RecordBatch>> {
        self.keyed.drain()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::data::{from_batch, to_batch};

    fn sum_per_key(ctx: &JobContext) -> Result<()> {
        ctx.source::<(i64, i64)>("t.pairs")
            .reduce_by_key(|a, b| a + b)
            .collect();
        Ok(())
    }

    /// Runs the combine of `sum_per_key` over `pairs` in batches of 8,192 rows: the rows each push
    /// emitted, and every row it emitted (pushes and finish).
    fn combine(pairs: &[(i64, i64)]) -> (Vec<usize>, Vec<(i64, i64)>) {
        let built = JobContext::build(sum_per_key, JobArgs::default()).unwrap();
        let op = built
            .dag
            .ops
            .iter()
            .position(|op| op.kind == OpKind::Combine)
            .unwrap();
        let mut state = built.factories[op]();
        let (mut per_push, mut rows) = (Vec::new(), Vec::new());
        let mut keep = |batches: Vec<RecordBatch>| {
            let mut n = 0;
            for batch in &batches {
                let decoded = from_batch::<(i64, i64)>(batch).unwrap();
                n += decoded.len();
                rows.extend(decoded);
            }
            n
        };
        for chunk in pairs.chunks(8192) {
            let batch = to_batch(chunk.iter().copied()).unwrap();
            per_push.push(keep(state.push(&batch).unwrap()));
        }
        keep(state.finish().unwrap());
        (per_push, rows)
    }

    fn totals(pairs: &[(i64, i64)]) -> BTreeMap<i64, i64> {
        let mut totals = BTreeMap::new();
        for &(key, value) in pairs {
            *totals.entry(key).or_insert(0) += value;
        }
        totals
    }

    #[test]
    fn a_combine_of_repeating_keys_emits_each_key_once_at_the_end() {
        let pairs: Vec<_> = (0..200_000).map(|i| (i % 10, i)).collect();
        let (per_push, rows) = combine(&pairs);
        assert!(per_push.iter().all(|&n| n == 0), "{per_push:?}");
        assert_eq!(rows.len(), 10);
        assert_eq!(totals(&rows), totals(&pairs));
    }

    #[test]
    fn a_combine_folds_runs_of_one_key_and_merges_a_key_that_comes_back() {
        // Runs of 1,000 rows of one key, cycling over 7 keys: each key comes back many times,
        // also across batches.
        let pairs: Vec<_> = (0..200_000).map(|i| ((i / 1000) % 7, i)).collect();
        let (per_push, rows) = combine(&pairs);
        assert!(per_push.iter().all(|&n| n == 0), "{per_push:?}");
        assert_eq!(rows.len(), 7);
        assert_eq!(totals(&rows), totals(&pairs));
    }

    #[test]
    fn a_combine_hands_on_its_keys_when_it_holds_too_many() {
        // Each batch of 8,192 rows holds 4,096 keys, each twice but never twice in a row: half
        // as many keys as rows, so combining pays, and the input is not grouped by key.
        let key = |i: i64| (i / 8192) * 4096 + (i % 8192) % 4096;
        let pairs: Vec<_> = (0..36 * 8192).map(|i| (key(i), i)).collect();
        let (per_push, rows) = combine(&pairs);
        let emitting = per_push.iter().filter(|&&n| n > 0).count();
        assert!(emitting >= 2, "{per_push:?}");
        assert!(
            per_push.iter().all(|&n| n < COMBINE_MAX_KEYS + 8192),
            "{per_push:?}"
        );
        // A batch holds both rows of each of its keys, and a drain follows a whole batch.
        assert_eq!(rows.len(), 36 * 4096);
        assert_eq!(totals(&rows), totals(&pairs));
    }

    #[test]
    fn a_combine_whose_keys_never_repeat_passes_rows_through() {
        let pairs: Vec<_> = (0..300_000).map(|i| (i * 7, i)).collect();
        let (per_push, rows) = combine(&pairs);
        // The probe's rows come out of the map by the end of the probe; from then on each batch
        // comes out as it went in.
        let probe_batches = (COMBINE_PROBE_ROWS as usize).div_ceil(8192);
        let (probe, after) = per_push.split_at(probe_batches);
        assert_eq!(
            probe.iter().sum::<usize>(),
            probe_batches * 8192,
            "{probe:?}"
        );
        assert!(
            after[..after.len() - 1].iter().all(|&n| n == 8192),
            "{after:?}"
        );
        assert_eq!(rows.len(), 300_000);
        assert_eq!(totals(&rows), totals(&pairs));
    }

    #[test]
    fn a_combine_over_rows_grouped_by_key_streams_each_run_as_it_ends() {
        // Runs of 10 rows of one key, each key once: as a scan in token order delivers rows
        // keyed by their partition key.
        let pairs: Vec<_> = (0..200_000).map(|i| (i / 10, i)).collect();
        let (per_push, rows) = combine(&pairs);
        // A map would hold all 20,000 keys until the end; streaming hands them on while the
        // input still comes, in batches of at most 8,192 runs (plus one push's worth).
        let before_the_end: usize = per_push.iter().sum();
        assert!(before_the_end >= 8192, "{per_push:?}");
        assert!(per_push.iter().all(|&n| n < 2 * 8192), "{per_push:?}");
        assert_eq!(rows.len(), 20_000, "each key once");
        assert_eq!(totals(&rows), totals(&pairs));
    }

    #[test]
    fn a_combine_that_streams_and_then_sees_keys_come_back_hands_on_partial_totals() {
        // Grouped by key for long enough to stream, then every key again: the second runs are
        // handed on as partial accumulators of their own, which the merge adds up.
        let pairs: Vec<_> = (0..100_000).map(|i| ((i % 50_000) / 10, i)).collect();
        let (_, rows) = combine(&pairs);
        assert!(
            rows.len() > 5_000,
            "the keys that came back are handed on twice"
        );
        assert_eq!(totals(&rows), totals(&pairs));
    }
}
