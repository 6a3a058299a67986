//! Running resolved statements: DDL (pushed to registered connections as events), writes (one
//! atomic store write per table), system-table reads, and paged scans of user tables.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use arrow::array::{ArrayRef, BooleanArray, RecordBatch};
use arrow::compute::{and, filter_record_batch, or};
use futures::{StreamExt, TryStreamExt};
use quarry_core::cql_type::CqlType;
use quarry_core::cql_value::{CellDecoder, CellEncoder};
use quarry_core::ddl::Statement;
use quarry_core::partition_key::{KeyColumn, tokens};
use quarry_core::schema::TableDef;
use quarry_core::token::TokenRange;
use quarry_store::{BatchStream, CmpOp, Predicate, ScanRequest};
use tokio::sync::mpsc;

use crate::parse::{Insert, Lhs, Literal, Restriction, Select, Selection, Term};
use crate::system::{self, SystemTable};
use crate::types::{collection_elements, literal_cell};
use crate::wire::{self, BatchRequest, BatchStatement, Body, QueryParameters, Value, code, opcode};

use crate::server::{
    CURSOR_IDLE, Connection, CqlError, MAX_CURSORS, Response, Shared, lookup_prepared,
};
use crate::statement::*;

pub(crate) async fn execute(
    shared: &Shared,
    node: usize,
    connection: &Connection,
    p: &Prepared,
    params: QueryParameters,
) -> Response {
    if params.names.is_some() {
        return Err(CqlError::invalid(
            "values bound by name are not supported; bind them in order",
        ));
    }
    match &p.kind {
        Kind::Use(keyspace) => {
            *connection
                .keyspace
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(keyspace.clone());
            let mut b = Body::new();
            b.int(3).string(keyspace);
            Ok((opcode::RESULT, b.0))
        }
        Kind::Ddl(statement) => {
            let response = execute_ddl(shared, statement).await?;
            // A schema change is pushed to every connection registered for it, as a
            // Cassandra node does, so drivers read the new schema at once.
            if let Some(change) = schema_change_of(&response) {
                let event = event_frame(change);
                shared
                    .schema_listeners
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .retain(|tx| {
                        !matches!(
                            tx.try_send(event.clone()),
                            Err(mpsc::error::TrySendError::Closed(_))
                        )
                    });
            }
            Ok(response)
        }
        Kind::Insert(inserts) => {
            let rows: Vec<(&Insert, &TableDef, &[Value])> = inserts
                .iter()
                .map(|(i, d)| (i, d, params.values.as_slice()))
                .collect();
            write_rows(shared, node, p, &rows).await
        }
        Kind::System {
            select,
            table,
            columns,
        } => select_system(shared, node, p, select, table, columns, &params),
        Kind::Select { .. } => select_table(shared, node, connection.shard, p, params).await,
        Kind::Describe(statement) => {
            let session = connection
                .keyspace
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            let table = system::describe(
                statement,
                session.as_deref(),
                &shared.ring,
                shared.store.as_ref(),
            )
            .unwrap_or_else(|| Err("not a DESCRIBE statement".into()))
            .map_err(CqlError::invalid)?;
            let every_column: Vec<usize> = (0..table.columns.len()).collect();
            Ok(cells_result(
                p,
                &table,
                &table.rows.iter().collect::<Vec<_>>(),
                &every_column,
                params.skip_metadata,
            ))
        }
    }
}

/// The change of a SchemaChange result (what follows its kind), if `response` is one.
pub(crate) fn schema_change_of(response: &(u8, Vec<u8>)) -> Option<&[u8]> {
    let (op, body) = response;
    (*op == opcode::RESULT && body.get(..4) == Some(&5i32.to_be_bytes()[..])).then(|| &body[4..])
}

/// An EVENT frame (stream -1) for a schema change.
pub(crate) fn event_frame(change: &[u8]) -> Vec<u8> {
    let mut body = Body::new();
    body.string("SCHEMA_CHANGE");
    body.0.extend_from_slice(change);
    wire::response_frame(wire::VERSION, -1, opcode::EVENT, &body.0)
}

pub(crate) async fn execute_ddl(shared: &Shared, statement: &Statement) -> Response {
    let store = &shared.store;
    let change = |change: &str, target: &str, keyspace: &str, table: Option<&str>| {
        let mut b = Body::new();
        b.int(5).string(change).string(target).string(keyspace);
        if let Some(t) = table {
            b.string(t);
        }
        (opcode::RESULT, b.0)
    };
    let void = (opcode::RESULT, 1i32.to_be_bytes().to_vec());
    let already = |e: quarry_store::Error, ks: &str, table: &str| {
        let mut err = CqlError::from(e);
        if err.code == code::ALREADY_EXISTS {
            let mut extra = Body::new();
            extra.string(ks).string(table);
            err.extra = extra.0;
        }
        err
    };
    Ok(match statement {
        Statement::CreateKeyspace { def, if_not_exists } => {
            let name = def.name.clone();
            match store.create_keyspace(def.clone(), *if_not_exists).await {
                Ok(true) => change("CREATED", "KEYSPACE", &name, None),
                Ok(false) => void,
                Err(e) => return Err(already(e, &name, "")),
            }
        }
        Statement::DropKeyspace { name, if_exists } => {
            if store.drop_keyspace(name, *if_exists).await? {
                change("DROPPED", "KEYSPACE", name, None)
            } else {
                void
            }
        }
        Statement::CreateTable { def, if_not_exists } => {
            let (ks, t) = (def.keyspace.clone(), def.name.clone());
            match store.create_table(def.clone(), *if_not_exists).await {
                Ok(true) => change("CREATED", "TABLE", &ks, Some(&t)),
                Ok(false) => void,
                Err(e) => return Err(already(e, &ks, &t)),
            }
        }
        Statement::DropTable { name, if_exists } => {
            if store.drop_table(name, *if_exists).await? {
                change("DROPPED", "TABLE", &name.keyspace, Some(&name.table))
            } else {
                void
            }
        }
        _ => return Err(CqlError::invalid("this statement is not served over CQL")),
    })
}

/// The most bytes of values one batch may carry, as ScyllaDB's default
/// `batch_size_fail_threshold_in_kb` (1024): a larger batch fails, as it would on a real node.
pub const BATCH_FAIL_BYTES: usize = 1024 * 1024;

pub(crate) async fn execute_batch(
    shared: &Shared,
    node: usize,
    connection: &Connection,
    batch: BatchRequest,
) -> Response {
    if batch.kind == 2 {
        return Err(CqlError::invalid(
            "counter batches are not supported (Quarry has no counters)",
        ));
    }
    let bytes: usize = batch
        .statements
        .iter()
        .flat_map(|(_, values)| values)
        .map(|v| match v {
            Value::Set(b) => b.len(),
            Value::Null | Value::NotSet => 0,
        })
        .sum();
    if bytes > BATCH_FAIL_BYTES {
        return Err(CqlError::invalid(format!(
            "Batch too large: {} KiB of values, over the {} KiB limit (ScyllaDB's \
             batch_size_fail_threshold_in_kb); send smaller batches",
            bytes.div_ceil(1024),
            BATCH_FAIL_BYTES / 1024
        )));
    }
    let keyspace = connection
        .keyspace
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let mut statements = Vec::with_capacity(batch.statements.len());
    for (statement, values) in &batch.statements {
        let prepared = match statement {
            BatchStatement::Query(text) => Arc::new(compile(shared, text, keyspace.as_deref())?),
            BatchStatement::Prepared(id) => lookup_prepared(shared, id)?,
        };
        if !matches!(prepared.kind, Kind::Insert(_)) {
            return Err(CqlError::invalid(
                "a batch holds INSERT statements only (Quarry's store has no UPDATE or DELETE)",
            ));
        }
        statements.push((prepared, values.as_slice()));
    }
    // All rows of the batch, grouped by table, are written together: one write per table.
    let mut rows: Vec<(&Insert, &TableDef, &[Value])> = Vec::new();
    for (prepared, values) in &statements {
        if let Kind::Insert(inserts) = &prepared.kind {
            rows.extend(inserts.iter().map(|(i, d)| (i, d, *values)));
        }
    }
    // Each row's markers are described by the statement it came from.
    let mut owner: Vec<&Prepared> = Vec::with_capacity(rows.len());
    for (prepared, _) in &statements {
        if let Kind::Insert(inserts) = &prepared.kind {
            owner.extend(std::iter::repeat_n(prepared.as_ref(), inserts.len()));
        }
    }
    write_grouped(shared, node, &rows, &owner).await
}

pub(crate) async fn write_rows(
    shared: &Shared,
    node: usize,
    p: &Prepared,
    rows: &[(&Insert, &TableDef, &[Value])],
) -> Response {
    let owner: Vec<&Prepared> = vec![p; rows.len()];
    write_grouped(shared, node, rows, &owner).await
}

/// Writes rows grouped by table, one all-or-nothing store write per table.
pub(crate) async fn write_grouped(
    shared: &Shared,
    node: usize,
    rows: &[(&Insert, &TableDef, &[Value])],
    owner: &[&Prepared],
) -> Response {
    let mut by_table: Vec<(&TableDef, Vec<usize>)> = Vec::new();
    for (i, (_, def, _)) in rows.iter().enumerate() {
        match by_table
            .iter_mut()
            .find(|(d, _)| d.table_name() == def.table_name())
        {
            Some((_, list)) => list.push(i),
            None => by_table.push((def, vec![i])),
        }
    }
    let mut batches = Vec::new();
    for (def, indices) in &by_table {
        let mut decoders: Vec<CellDecoder> = def
            .columns
            .iter()
            .map(|c| CellDecoder::new(c.cql_type, indices.len()))
            .collect();
        for &i in indices {
            let (insert, _, values) = rows[i];
            for (c, column) in def.columns.iter().enumerate() {
                let at = insert
                    .columns
                    .iter()
                    .position(|n| n == &column.name)
                    .unwrap_or(0);
                let cell = term_cell(
                    &insert.values[at],
                    column.cql_type,
                    values,
                    owner[i],
                    &column.name,
                )?;
                decoders[c]
                    .push(cell.as_deref())
                    .map_err(|e| CqlError::invalid(format!("column {}: {e}", column.name)))?;
            }
        }
        let columns: Vec<ArrayRef> = decoders.iter_mut().map(CellDecoder::finish).collect();
        let batch = RecordBatch::try_new(def.arrow_schema(), columns)
            .map_err(|e| CqlError::invalid(e.to_string()))?;
        batches.push((def.table_name(), batch));
    }
    // Check keys (and count locality) before anything is written.
    let mut local = 0u64;
    let mut total = 0u64;
    for ((name, batch), (def, _)) in batches.iter().zip(&by_table) {
        let key: Vec<KeyColumn<'_>> = def
            .partition_key_indices()
            .into_iter()
            .map(|i| KeyColumn {
                name: &def.columns[i].name,
                cql_type: def.columns[i].cql_type,
                values: batch.column(i),
            })
            .collect();
        let row_tokens = tokens(&key, batch.num_rows())
            .map_err(|e| CqlError::invalid(format!("{name}: {e}")))?;
        for t in row_tokens.values() {
            total += 1;
            if shared.ring.replicas(name, *t).contains(&node) {
                local += 1;
            }
        }
    }
    for (name, batch) in batches {
        shared.store.write(&name, vec![batch]).await?;
    }
    let c = &shared.counters[node];
    c.local_writes.fetch_add(local, Ordering::Relaxed);
    c.forwarded_writes
        .fetch_add(total - local, Ordering::Relaxed);
    Ok((opcode::RESULT, 1i32.to_be_bytes().to_vec()))
}

pub(crate) fn select_system(
    shared: &Shared,
    node: usize,
    p: &Prepared,
    select: &Select,
    _compiled: &SystemTable,
    columns: &[usize],
    params: &QueryParameters,
) -> Response {
    // Built again for the node asked: system.local and system.peers differ per node.
    let table = system::table(
        &select.keyspace.clone().unwrap_or_default(),
        &select.table,
        node,
        &shared.ring,
        shared.store.as_ref(),
        &shared.cluster_name,
        &shared.stats(node),
        system::Build::Rows,
    )
    .ok_or_else(|| CqlError::invalid("unconfigured table"))?;
    let mut rows: Vec<&Vec<Option<Vec<u8>>>> = table.rows.iter().collect();
    for r in &select.restrictions {
        let (column, wanted): (&str, Vec<Option<Vec<u8>>>) = match r {
            Restriction::Compare {
                lhs: Lhs::Column(c),
                term,
                ..
            } => (c, vec![system_term(&table, c, term, &params.values, p)?]),
            Restriction::In { column, terms } => (
                column,
                terms
                    .iter()
                    .map(|t| system_term(&table, column, t, &params.values, p))
                    .collect::<Result<_, _>>()?,
            ),
            Restriction::InMarker { column, marker } => match bound(&params.values, p, *marker)? {
                Value::Set(list) => (
                    column,
                    collection_elements(list).map_err(CqlError::invalid)?,
                ),
                _ => (column, Vec::new()),
            },
            Restriction::Compare { .. } => {
                return Err(CqlError::invalid(
                    "system tables are filtered by equality only",
                ));
            }
        };
        let i = table
            .columns
            .iter()
            .position(|(c, _)| *c == column)
            .ok_or_else(|| CqlError::invalid(format!("Undefined column name {column}")))?;
        rows.retain(|row| wanted.contains(&row[i]));
    }
    if let Some(limit) = &select.limit {
        let n = limit_value(limit, &params.values, p)?;
        rows.truncate(n);
    }
    Ok(cells_result(
        p,
        &table,
        &rows,
        columns,
        params.skip_metadata,
    ))
}

/// A ROWS result of serialized cells: `columns` of each of `rows` of a server-built `table`.
fn cells_result(
    p: &Prepared,
    table: &SystemTable,
    rows: &[&Vec<Option<Vec<u8>>>],
    columns: &[usize],
    skip_metadata: bool,
) -> (u8, Vec<u8>) {
    let out: Vec<OutColumn> = p.result_columns().unwrap_or_default();
    let mut b = Body::new();
    b.int(2);
    write_rows_metadata(
        &mut b,
        (table.keyspace, table.name),
        Some(&out),
        skip_metadata,
        None,
    );
    b.int(rows.len() as i32);
    for row in rows {
        for &c in columns {
            b.bytes(row[c].as_deref());
        }
    }
    (opcode::RESULT, b.0)
}

pub(crate) fn system_term(
    table: &SystemTable,
    column: &str,
    term: &Term,
    values: &[Value],
    p: &Prepared,
) -> Result<Option<Vec<u8>>, CqlError> {
    match term {
        Term::Marker(m) => Ok(match bound(values, p, *m)? {
            Value::Set(cell) => Some(cell.clone()),
            _ => None,
        }),
        Term::Literal(l) => {
            let t = match table.columns.iter().find(|(c, _)| *c == column) {
                Some((_, t)) => t.column().map_err(CqlError::invalid)?,
                _ => CqlType::Text,
            };
            literal_cell(l, t).map_err(CqlError::invalid)
        }
    }
}

pub(crate) fn limit_value(term: &Term, values: &[Value], p: &Prepared) -> Result<usize, CqlError> {
    let n: i64 = match term {
        Term::Literal(Literal::Num(n)) => n.parse().unwrap_or(-1),
        Term::Marker(m) => match bound(values, p, *m)? {
            Value::Set(cell) if cell.len() == 4 => {
                i64::from(i32::from_be_bytes([cell[0], cell[1], cell[2], cell[3]]))
            }
            _ => -1,
        },
        _ => -1,
    };
    usize::try_from(n)
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| CqlError::invalid("LIMIT must be a strictly positive integer"))
}

/// An exact filter on scanned rows.
#[derive(Debug, Clone)]
pub(crate) enum RowFilter {
    Compare {
        column: usize,
        op: CmpOp,
        value: ArrayRef,
    },
    In {
        column: usize,
        values: Vec<ArrayRef>,
    },
    Token {
        range: TokenRange,
    },
}

/// An open paged scan.
pub(crate) struct Cursor {
    pub(crate) stream: BatchStream,
    pub(crate) pending: Option<RecordBatch>,
    pub(crate) remaining: Option<usize>,
    pub(crate) out: Vec<OutColumn>,
    pub(crate) table: (String, String),
}

pub(crate) async fn select_table(
    shared: &Shared,
    node: usize,
    shard: Option<u16>,
    p: &Prepared,
    params: QueryParameters,
) -> Response {
    let Kind::Select {
        select,
        def,
        columns,
        out,
    } = &p.kind
    else {
        return Err(CqlError::new(code::SERVER, "not a select"));
    };
    let mut cursor = match &params.paging_state {
        Some(state) => take_cursor(shared, state)?,
        None => {
            let at = (node, shard);
            open_cursor(shared, at, p, select, def, columns, out, &params.values).await?
        }
    };
    let count = matches!(select.selection, Selection::Count);
    let page = if count {
        usize::MAX
    } else {
        params.page_size.map(|n| n as usize).unwrap_or(usize::MAX)
    };
    let mut batches = Vec::new();
    let mut rows = 0usize;
    let mut counted = 0u64;
    let mut done = false;
    while rows < page {
        if cursor.remaining == Some(0) {
            done = true;
            break;
        }
        let batch = match cursor.pending.take() {
            Some(b) => b,
            None => match cursor.stream.next().await {
                Some(b) => b?,
                None => {
                    done = true;
                    break;
                }
            },
        };
        let mut batch = batch;
        if let Some(remaining) = cursor.remaining
            && batch.num_rows() > remaining
        {
            batch = batch.slice(0, remaining);
        }
        let want = (page - rows).min(batch.num_rows());
        if want < batch.num_rows() {
            cursor.pending = Some(batch.slice(want, batch.num_rows() - want));
        }
        if let Some(remaining) = cursor.remaining.as_mut() {
            *remaining -= want;
        }
        rows += want;
        if count {
            counted += want as u64;
        } else if want > 0 {
            batches.push(batch.slice(0, want));
        }
    }
    if !done && cursor.pending.is_none() && cursor.remaining != Some(0) {
        // Look one batch ahead, so the last page does not promise more.
        match cursor.stream.next().await {
            Some(b) => cursor.pending = Some(b?),
            None => done = true,
        }
    }
    if cursor.remaining == Some(0) {
        done = true;
    }
    shared.counters[node]
        .rows_read
        .fetch_add(rows as u64, Ordering::Relaxed);
    let mut b = Body::new();
    b.int(2);
    let table = cursor.table.clone();
    let out_columns = cursor.out.clone();
    let state = if done {
        None
    } else {
        Some(put_cursor(shared, cursor))
    };
    write_rows_metadata(
        &mut b,
        (&table.0, &table.1),
        Some(&out_columns),
        params.skip_metadata,
        state.as_deref(),
    );
    if count {
        b.int(1);
        b.bytes(Some(&(counted as i64).to_be_bytes()));
        return Ok((opcode::RESULT, b.0));
    }
    b.int(rows as i32);
    for batch in &batches {
        let encoders: Vec<CellEncoder> = out_columns
            .iter()
            .zip(batch.columns())
            .map(|(c, array)| CellEncoder::new(c.column_type.column()?, array))
            .collect::<Result<_, _>>()
            .map_err(|e| CqlError::new(code::SERVER, e))?;
        let mut cell = Vec::new();
        for row in 0..batch.num_rows() {
            for e in &encoders {
                if e.is_null(row) {
                    b.int(-1);
                } else {
                    cell.clear();
                    e.write(row, &mut cell)
                        .map_err(|e| CqlError::new(code::SERVER, e))?;
                    b.bytes(Some(&cell));
                }
            }
        }
    }
    Ok((opcode::RESULT, b.0))
}

pub(crate) fn put_cursor(shared: &Shared, cursor: Cursor) -> Vec<u8> {
    let id = shared.next_cursor.fetch_add(1, Ordering::Relaxed);
    let mut cursors = shared
        .cursors
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let now = Instant::now();
    cursors.retain(|_, (at, _)| now.duration_since(*at) < CURSOR_IDLE);
    if cursors.len() >= MAX_CURSORS
        && let Some(oldest) = cursors
            .iter()
            .min_by_key(|(_, (at, _))| *at)
            .map(|(k, _)| *k)
    {
        cursors.remove(&oldest);
    }
    cursors.insert(id, (now, cursor));
    id.to_be_bytes().to_vec()
}

pub(crate) fn take_cursor(shared: &Shared, state: &[u8]) -> Result<Cursor, CqlError> {
    let id = <[u8; 8]>::try_from(state)
        .map(u64::from_be_bytes)
        .map_err(|_| {
            CqlError::new(
                code::PROTOCOL,
                "this paging state was not made by this server",
            )
        })?;
    shared
        .cursors
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .remove(&id)
        .map(|(_, c)| c)
        .ok_or_else(|| {
            CqlError::invalid(format!(
                "the paging state has expired (pages are kept {} s between requests); run the \
                 query again",
                CURSOR_IDLE.as_secs()
            ))
        })
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn open_cursor(
    shared: &Shared,
    (node, shard): (usize, Option<u16>),
    p: &Prepared,
    select: &Select,
    def: &TableDef,
    columns: &[usize],
    out: &[OutColumn],
    values: &[Value],
) -> Result<Cursor, CqlError> {
    let mut filters = Vec::new();
    let mut predicates = Vec::new();
    let mut needed: Vec<usize> = columns.to_vec();
    let mut token_range = TokenRange::new(i64::MIN, i64::MAX);
    let mut pk_values: Vec<Option<Vec<u8>>> = vec![None; def.partition_key.len()];
    let one = |t: CqlType, cell: Option<Vec<u8>>, column: &str| -> Result<ArrayRef, CqlError> {
        let cell = cell.ok_or_else(|| {
            CqlError::invalid(format!(
                "Invalid null value in condition for column {column}"
            ))
        })?;
        let mut d = CellDecoder::new(t, 1);
        d.push(Some(&cell))
            .map_err(|e| CqlError::invalid(format!("column {column}: {e}")))?;
        Ok(d.finish())
    };
    for r in &select.restrictions {
        match r {
            Restriction::Compare {
                lhs: Lhs::Column(c),
                op,
                term,
            } => {
                let i = column_index(def, c)?;
                let t = def.columns[i].cql_type;
                let cell = term_cell(term, t, values, p, c)?;
                if *op == CmpOp::Eq
                    && let Some(k) = def.partition_key.iter().position(|k| k == c)
                {
                    pk_values[k] = cell.clone();
                }
                let value = one(t, cell, c)?;
                predicates.push(Predicate::Compare {
                    column: c.clone(),
                    op: *op,
                    value: value.clone(),
                });
                filters.push(RowFilter::Compare {
                    column: i,
                    op: *op,
                    value,
                });
                needed.push(i);
            }
            Restriction::Compare {
                lhs: Lhs::Token(_),
                op,
                term,
            } => {
                let cell =
                    term_cell(term, CqlType::BigInt, values, p, "token")?.ok_or_else(|| {
                        CqlError::invalid("Invalid null value for the partition key token")
                    })?;
                let v = i64::from_be_bytes(
                    <[u8; 8]>::try_from(cell.as_slice())
                        .map_err(|_| CqlError::invalid("a token is a bigint"))?,
                );
                let Predicate::TokenRange(range) = Predicate::token_compare(*op, v) else {
                    unreachable!("token_compare makes a token range")
                };
                token_range = token_range.intersect(&range);
                needed.extend(def.partition_key_indices());
            }
            Restriction::In { column, terms } => {
                let i = column_index(def, column)?;
                let t = def.columns[i].cql_type;
                let list = terms
                    .iter()
                    .map(|term| one(t, term_cell(term, t, values, p, column)?, column))
                    .collect::<Result<Vec<_>, _>>()?;
                filters.push(RowFilter::In {
                    column: i,
                    values: list,
                });
                needed.push(i);
            }
            Restriction::InMarker { column, marker } => {
                let i = column_index(def, column)?;
                let t = def.columns[i].cql_type;
                let list = match bound(values, p, *marker)? {
                    Value::Set(cell) => collection_elements(cell).map_err(CqlError::invalid)?,
                    _ => {
                        return Err(CqlError::invalid(format!(
                            "IN ? on {column} was bound to null"
                        )));
                    }
                };
                let list = list
                    .into_iter()
                    .map(|cell| one(t, cell, column))
                    .collect::<Result<Vec<_>, _>>()?;
                filters.push(RowFilter::In {
                    column: i,
                    values: list,
                });
                needed.push(i);
            }
        }
    }
    if token_range != TokenRange::new(i64::MIN, i64::MAX) {
        predicates.push(Predicate::TokenRange(token_range));
        filters.push(RowFilter::Token { range: token_range });
    }
    // Locality: a token range, or a whole partition key, this node replicates.
    let c = &shared.counters[node];
    let local = if pk_values.iter().all(Option::is_some) {
        let components: Vec<Vec<u8>> = pk_values.into_iter().flatten().collect();
        let token = quarry_core::partition_key::token_of_components(&components);
        Some(
            shared
                .ring
                .replicas(&def.table_name(), token)
                .contains(&node),
        )
    } else if token_range == TokenRange::FULL {
        None
    } else {
        Some(match token_range.bounds_inclusive() {
            Some((first, last)) => {
                let (table, start) = (def.table_name(), first.saturating_sub(1));
                let holds = shared.ring.holds(&table, node, start, last);
                // On sharded nodes, whether the connection's shard holds the tablet.
                if let (true, Some(on), Some(holder)) = (
                    holds,
                    shard,
                    shared.ring.shard_holding(&table, node, start, last),
                ) {
                    let counter = if on == holder {
                        &c.shard_local_scans
                    } else {
                        &c.cross_shard_scans
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                holds
            }
            None => true,
        })
    };
    match local {
        Some(true) => c.local_scans.fetch_add(1, Ordering::Relaxed),
        Some(false) => c.forwarded_scans.fetch_add(1, Ordering::Relaxed),
        None => c.full_scans.fetch_add(1, Ordering::Relaxed),
    };
    needed.sort_unstable();
    needed.dedup();
    let request = ScanRequest {
        table: def.table_name(),
        projection: Some(needed.clone()),
        filters: predicates,
        limit: None,
        shards: None,
    };
    let plan = shared.store.plan_scan(&request)?;
    let position = |i: usize| needed.iter().position(|n| *n == i).unwrap_or(0);
    let filters: Vec<RowFilter> = filters
        .into_iter()
        .map(|f| match f {
            RowFilter::Compare { column, op, value } => RowFilter::Compare {
                column: position(column),
                op,
                value,
            },
            RowFilter::In { column, values } => RowFilter::In {
                column: position(column),
                values,
            },
            token => token,
        })
        .collect();
    let key: Vec<(usize, String, CqlType)> = def
        .partition_key_indices()
        .into_iter()
        .map(|i| {
            (
                position(i),
                def.columns[i].name.clone(),
                def.columns[i].cql_type,
            )
        })
        .collect();
    let keep: Vec<usize> = columns.iter().map(|&i| position(i)).collect();
    let splits = plan.splits;
    let stream = futures::stream::iter(splits)
        .map(|split| split.source.open())
        .try_flatten()
        .map(move |batch| {
            let batch = batch?;
            let batch = apply_filters(&batch, &filters, &key)?;
            Ok(batch.project(&keep)?)
        })
        .try_filter(|b| futures::future::ready(b.num_rows() > 0));
    let remaining = match &select.limit {
        Some(l) => Some(limit_value(l, values, p)?),
        None => None,
    };
    Ok(Cursor {
        stream: Box::pin(stream),
        pending: None,
        remaining,
        out: out.to_vec(),
        table: (def.keyspace.clone(), def.name.clone()),
    })
}

pub(crate) fn apply_filters(
    batch: &RecordBatch,
    filters: &[RowFilter],
    key: &[(usize, String, CqlType)],
) -> quarry_store::Result<RecordBatch> {
    if filters.is_empty() {
        return Ok(batch.clone());
    }
    let mut mask: Option<BooleanArray> = None;
    for f in filters {
        let m = match f {
            RowFilter::Compare { column, op, value } => compare(batch.column(*column), *op, value)?,
            RowFilter::In { column, values } => {
                let mut any: Option<BooleanArray> = None;
                for v in values {
                    let eq = compare(batch.column(*column), CmpOp::Eq, v)?;
                    any = Some(match any {
                        Some(a) => or(&a, &eq)?,
                        None => eq,
                    });
                }
                any.unwrap_or_else(|| BooleanArray::from(vec![false; batch.num_rows()]))
            }
            RowFilter::Token { range } => {
                let columns: Vec<KeyColumn<'_>> = key
                    .iter()
                    .map(|(i, name, t)| KeyColumn {
                        name,
                        cql_type: *t,
                        values: batch.column(*i),
                    })
                    .collect();
                let row_tokens = tokens(&columns, batch.num_rows())?;
                row_tokens
                    .values()
                    .iter()
                    .map(|t| Some(range.contains(*t)))
                    .collect()
            }
        };
        mask = Some(match mask {
            Some(prev) => and(&prev, &m)?,
            None => m,
        });
    }
    match mask {
        Some(m) => Ok(filter_record_batch(batch, &m)?),
        None => Ok(batch.clone()),
    }
}

pub(crate) fn compare(
    column: &ArrayRef,
    op: CmpOp,
    value: &ArrayRef,
) -> quarry_store::Result<BooleanArray> {
    let value = if value.data_type() == column.data_type() {
        value.clone()
    } else {
        arrow::compute::cast(value, column.data_type())?
    };
    Ok(op.evaluate(column, &arrow::array::Scalar::new(value))?)
}
