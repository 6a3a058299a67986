//! Statements resolved against the catalog: what a PREPARE answers and an EXECUTE runs.
//!
//! A statement is parsed ([`crate::parse`]), its table found (a system table, or the store's),
//! and its bind markers and result columns described, with the partition key's markers named so
//! that drivers route token-aware. DDL and `USE` pass through; the rest is refused with an error
//! that says why.

use quarry_core::cql_type::CqlType;
use quarry_core::ddl::{Statement, parse_statement_in};
use quarry_core::schema::{TableDef, TableName};
use quarry_store::CmpOp;
use sha2::{Digest, Sha256};

use crate::parse::{Cql, Insert, Lhs, Restriction, Select, Selection, Term, parse};
use crate::system::{self, SystemTable};
use crate::types::{WireType, check_cell, literal_cell, write_type, write_wire_type};
use crate::wire::{Body, Value, code};

use crate::server::{CqlError, NodeStats, Shared};

/// A bind marker's description.
#[derive(Debug, Clone)]
pub(crate) struct Bind {
    pub(crate) keyspace: String,
    pub(crate) table: String,
    pub(crate) name: String,
    pub(crate) column_type: CqlType,
}

/// A result column.
#[derive(Debug, Clone)]
pub(crate) struct OutColumn {
    pub(crate) name: String,
    pub(crate) column_type: WireType,
}

/// A statement ready to execute: parsed, resolved against the catalog, with its bind markers
/// and result columns described.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) id: Vec<u8>,
    pub(crate) kind: Kind,
    pub(crate) binds: Vec<Bind>,
    /// Indices of the markers that bind the partition key, in key order (for token-aware
    /// routing), when every partition-key column is bound by one.
    pub(crate) pk_indexes: Vec<u16>,
    /// The table named in the metadata (`[global table spec]`).
    pub(crate) table: (String, String),
}

#[derive(Debug)]
pub(crate) enum Kind {
    System {
        select: Select,
        table: SystemTable,
        columns: Vec<usize>,
    },
    Select {
        select: Select,
        def: TableDef,
        /// Table column index of each output column (empty for count(*)).
        columns: Vec<usize>,
        out: Vec<OutColumn>,
    },
    Insert(Vec<(Insert, TableDef)>),
    Use(String),
    Ddl(Box<Statement>),
    /// `DESCRIBE ...` (and `SHOW KEYSPACES`/`TABLES`), answered from the catalog.
    Describe(Box<Statement>),
}

impl Prepared {
    pub(crate) fn result_columns(&self) -> Option<Vec<OutColumn>> {
        match &self.kind {
            Kind::System { table, columns, .. } => Some(
                columns
                    .iter()
                    .map(|&i| OutColumn {
                        name: table.columns[i].0.to_string(),
                        column_type: table.columns[i].1,
                    })
                    .collect(),
            ),
            Kind::Select { out, .. } => Some(out.clone()),
            Kind::Describe(statement) => {
                let columns: &[(&str, CqlType)] = if system::describe_lists(statement) {
                    &system::DESCRIBE_LISTING
                } else {
                    &system::DESCRIBE_ELEMENT
                };
                Some(
                    columns
                        .iter()
                        .map(|(name, t)| OutColumn {
                            name: name.to_string(),
                            column_type: (*t).into(),
                        })
                        .collect(),
                )
            }
            _ => None,
        }
    }
}

pub(crate) fn statement_id(text: &str, keyspace: Option<&str>) -> Vec<u8> {
    let digest = Sha256::digest(format!("{}\u{0}{text}", keyspace.unwrap_or("")));
    digest[..16].to_vec()
}

pub(crate) fn resolve_keyspace(
    named: &Option<String>,
    session: Option<&str>,
) -> Result<String, CqlError> {
    named
        .clone()
        .or_else(|| session.map(str::to_string))
        .ok_or_else(|| {
            CqlError::invalid(
                "no keyspace has been specified: write keyspace.table, or run USE keyspace first",
            )
        })
}

pub(crate) fn compile(
    shared: &Shared,
    text: &str,
    session: Option<&str>,
) -> Result<Prepared, CqlError> {
    let id = statement_id(text, session);
    let cql = parse(text).map_err(|e| CqlError::new(code::SYNTAX, e))?;
    let mut binds = vec![None; cql.markers()];
    let mut pk_indexes = Vec::new();
    let (kind, table) = match cql {
        Cql::Select(select) => {
            let keyspace = resolve_keyspace(&select.keyspace, session)?;
            if system::is_system_keyspace(&keyspace) {
                let table = system::table(
                    &keyspace,
                    &select.table,
                    0,
                    &shared.ring,
                    shared.store.as_ref(),
                    &shared.cluster_name,
                    &NodeStats::default(),
                    system::Build::Columns,
                )
                .ok_or_else(|| {
                    CqlError::invalid(format!("unconfigured table {keyspace}.{}", select.table))
                })?;
                let columns = match &select.selection {
                    Selection::All => (0..table.columns.len()).collect(),
                    Selection::Count => {
                        return Err(CqlError::invalid(
                            "count(*) of a system table is not served",
                        ));
                    }
                    Selection::Columns(names) => names
                        .iter()
                        .map(|(name, _)| {
                            table
                                .columns
                                .iter()
                                .position(|(c, _)| c == name)
                                .ok_or_else(|| {
                                    CqlError::invalid(format!(
                                        "Undefined column name {name} in table {keyspace}.{}",
                                        select.table
                                    ))
                                })
                        })
                        .collect::<Result<_, _>>()?,
                };
                for r in &select.restrictions {
                    let (column, marker, list) = match r {
                        Restriction::Compare {
                            lhs: Lhs::Column(c),
                            op: CmpOp::Eq,
                            term,
                        } => (c, marker_of(term), false),
                        Restriction::InMarker { column, marker } => (column, Some(*marker), true),
                        Restriction::In { column, terms } => {
                            for t in terms {
                                if let Some(m) = marker_of(t) {
                                    binds[m] = Some(system_bind(&table, column, false)?);
                                }
                            }
                            continue;
                        }
                        _ => {
                            return Err(CqlError::invalid(
                                "system tables are filtered by equality and IN only",
                            ));
                        }
                    };
                    if let Some(m) = marker {
                        binds[m] = Some(system_bind(&table, column, list)?);
                    }
                }
                let names = (table.keyspace.to_string(), table.name.to_string());
                (
                    Kind::System {
                        select,
                        table,
                        columns,
                    },
                    names,
                )
            } else {
                let name = TableName::new(&keyspace, &select.table);
                let def = shared.store.table(&name)?;
                let (columns, out) = match &select.selection {
                    Selection::All => (
                        (0..def.columns.len()).collect(),
                        def.columns
                            .iter()
                            .map(|c| OutColumn {
                                name: c.name.clone(),
                                column_type: c.cql_type.into(),
                            })
                            .collect(),
                    ),
                    Selection::Count => (
                        Vec::new(),
                        vec![OutColumn {
                            name: "count".into(),
                            column_type: CqlType::BigInt.into(),
                        }],
                    ),
                    Selection::Columns(names) => {
                        let mut columns = Vec::new();
                        let mut out = Vec::new();
                        for (column, alias) in names {
                            let i = column_index(&def, column)?;
                            columns.push(i);
                            out.push(OutColumn {
                                name: alias.clone().unwrap_or_else(|| column.clone()),
                                column_type: def.columns[i].cql_type.into(),
                            });
                        }
                        (columns, out)
                    }
                };
                let bind = |name: &str, column_type: CqlType| Bind {
                    keyspace: keyspace.clone(),
                    table: def.name.clone(),
                    name: name.to_string(),
                    column_type,
                };
                let mut pk_markers = vec![None; def.partition_key.len()];
                for r in &select.restrictions {
                    match r {
                        Restriction::Compare { lhs, op, term } => {
                            let (name, t) = match lhs {
                                Lhs::Column(c) => {
                                    let i = column_index(&def, c)?;
                                    if *op == CmpOp::Eq
                                        && let Some(k) =
                                            def.partition_key.iter().position(|p| p == c)
                                    {
                                        pk_markers[k] = marker_of(term);
                                    }
                                    (c.clone(), def.columns[i].cql_type)
                                }
                                Lhs::Token(cols) => {
                                    if cols != &def.partition_key {
                                        return Err(CqlError::invalid(format!(
                                            "token() takes the partition key of {name}: token({})",
                                            def.partition_key.join(", ")
                                        )));
                                    }
                                    ("partition key token".to_string(), CqlType::BigInt)
                                }
                            };
                            if let Some(m) = marker_of(term) {
                                binds[m] = Some(bind(&name, t));
                            }
                        }
                        Restriction::In { column, terms } => {
                            let i = column_index(&def, column)?;
                            for t in terms {
                                if let Some(m) = marker_of(t) {
                                    binds[m] = Some(bind(column, def.columns[i].cql_type));
                                }
                            }
                        }
                        Restriction::InMarker { column, marker } => {
                            let i = column_index(&def, column)?;
                            binds[*marker] = Some(bind(column, list_of(def.columns[i].cql_type)?));
                        }
                    }
                }
                if let Some(Term::Marker(m)) = &select.limit {
                    binds[*m] = Some(bind("[limit]", CqlType::Int));
                }
                if pk_markers.iter().all(Option::is_some) {
                    pk_indexes = pk_markers.into_iter().flatten().map(|m| m as u16).collect();
                }
                let names = (keyspace.clone(), def.name.clone());
                (
                    Kind::Select {
                        select,
                        def,
                        columns,
                        out,
                    },
                    names,
                )
            }
        }
        Cql::Insert(insert) => {
            let (def, pk) = compile_insert(shared, &insert, session, &mut binds)?;
            pk_indexes = pk;
            let names = (def.keyspace.clone(), def.name.clone());
            (Kind::Insert(vec![(insert, def)]), names)
        }
        Cql::Batch(inserts) => {
            let mut compiled = Vec::new();
            for insert in inserts {
                let (def, _) = compile_insert(shared, &insert, session, &mut binds)?;
                compiled.push((insert, def));
            }
            let names = compiled
                .first()
                .map(|(_, d)| (d.keyspace.clone(), d.name.clone()))
                .unwrap_or_default();
            (Kind::Insert(compiled), names)
        }
        Cql::Use(keyspace) => {
            if !system::is_system_keyspace(&keyspace) {
                shared.store.keyspace(&keyspace)?;
            }
            (Kind::Use(keyspace), Default::default())
        }
        Cql::Other => {
            let statement = parse_statement_in(text, session)
                .map_err(|e| CqlError::from(quarry_store::Error::Definition(e)))?;
            match &statement {
                Statement::CreateKeyspace { .. }
                | Statement::DropKeyspace { .. }
                | Statement::CreateTable { .. }
                | Statement::DropTable { .. } => {}
                Statement::ShowKeyspaces
                | Statement::ShowTables { .. }
                | Statement::DescribeKeyspace { .. }
                | Statement::DescribeTable { .. } => {
                    return Ok(Prepared {
                        id,
                        kind: Kind::Describe(Box::new(statement)),
                        binds: Vec::new(),
                        pk_indexes,
                        table: Default::default(),
                    });
                }
                Statement::Sql(_) => {
                    return Err(CqlError::new(
                        code::SYNTAX,
                        format!(
                            "Quarry's CQL server does not serve this statement: {}; \
                             run queries with quarry sql",
                            text.trim()
                        ),
                    ));
                }
                _ => {
                    return Err(CqlError::invalid(
                        "this statement is not served over CQL; run it with quarry sql",
                    ));
                }
            }
            (Kind::Ddl(Box::new(statement)), Default::default())
        }
    };
    let binds = binds
        .into_iter()
        .enumerate()
        .map(|(i, b)| {
            b.ok_or_else(|| {
                CqlError::invalid(format!("bind marker {} has no place to bind", i + 1))
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(Prepared {
        id,
        kind,
        binds,
        pk_indexes,
        table,
    })
}

pub(crate) fn marker_of(term: &Term) -> Option<usize> {
    match term {
        Term::Marker(m) => Some(*m),
        Term::Literal(_) => None,
    }
}

pub(crate) fn system_bind(table: &SystemTable, column: &str, list: bool) -> Result<Bind, CqlError> {
    let (_, t) = table
        .columns
        .iter()
        .find(|(c, _)| *c == column)
        .ok_or_else(|| CqlError::invalid(format!("Undefined column name {column}")))?;
    let t = t
        .column()
        .map_err(|e| CqlError::invalid(format!("{column}: {e}")))?;
    Ok(Bind {
        keyspace: table.keyspace.into(),
        table: table.name.into(),
        name: column.into(),
        column_type: if list { list_of(t)? } else { t },
    })
}

pub(crate) fn column_index(def: &TableDef, column: &str) -> Result<usize, CqlError> {
    def.columns
        .iter()
        .position(|c| c.name == column)
        .ok_or_else(|| {
            CqlError::invalid(format!(
                "Undefined column name {column} in table {}.{} (columns: {})",
                def.keyspace,
                def.name,
                def.column_names().join(", ")
            ))
        })
}

pub(crate) fn compile_insert(
    shared: &Shared,
    insert: &Insert,
    session: Option<&str>,
    binds: &mut [Option<Bind>],
) -> Result<(TableDef, Vec<u16>), CqlError> {
    let keyspace = resolve_keyspace(&insert.keyspace, session)?;
    if system::is_system_keyspace(&keyspace) {
        return Err(CqlError::new(
            code::UNAUTHORIZED,
            format!("{keyspace} tables are read-only"),
        ));
    }
    let def = shared
        .store
        .table(&TableName::new(&keyspace, &insert.table))?;
    for c in &insert.columns {
        column_index(&def, c)?;
    }
    let missing: Vec<&str> = def
        .columns
        .iter()
        .map(|c| c.name.as_str())
        .filter(|c| !insert.columns.iter().any(|i| i == c))
        .collect();
    if !missing.is_empty() {
        return Err(CqlError::invalid(format!(
            "INSERT into {keyspace}.{} must give every column: Quarry's store replaces whole \
             rows, so a missing column would lose its value; missing: {}",
            def.name,
            missing.join(", ")
        )));
    }
    let mut pk = Vec::new();
    for key in &def.partition_key {
        let i = insert.columns.iter().position(|c| c == key).unwrap_or(0);
        if let Term::Marker(m) = insert.values[i] {
            pk.push(m as u16);
        }
    }
    if pk.len() != def.partition_key.len() {
        pk.clear();
    }
    for (column, term) in insert.columns.iter().zip(&insert.values) {
        if let Term::Marker(m) = term {
            let t = def.columns[column_index(&def, column)?].cql_type;
            binds[*m] = Some(Bind {
                keyspace: keyspace.clone(),
                table: def.name.clone(),
                name: column.clone(),
                column_type: t,
            });
        }
    }
    Ok((def, pk))
}

pub(crate) fn write_bind_metadata(b: &mut Body, p: &Prepared) {
    let global = !p.table.0.is_empty();
    b.int(if global { 0x0001 } else { 0 });
    b.int(p.binds.len() as i32);
    b.int(p.pk_indexes.len() as i32);
    for i in &p.pk_indexes {
        b.short(*i);
    }
    if global {
        b.string(&p.table.0).string(&p.table.1);
    }
    for bind in &p.binds {
        if !global {
            b.string(&bind.keyspace).string(&bind.table);
        }
        b.string(&bind.name);
        write_type(bind.column_type, b);
    }
}

/// Rows metadata. `None` columns: a statement without results (flag NO_METADATA, no columns).
pub(crate) fn write_result_metadata(
    b: &mut Body,
    columns: Option<Vec<OutColumn>>,
    skip: bool,
    paging_state: Option<&[u8]>,
) {
    write_rows_metadata(b, ("", ""), columns.as_deref(), skip, paging_state);
}

pub(crate) fn write_rows_metadata(
    b: &mut Body,
    table: (&str, &str),
    columns: Option<&[OutColumn]>,
    skip: bool,
    paging_state: Option<&[u8]>,
) {
    let Some(columns) = columns else {
        b.int(0x0004).int(0);
        return;
    };
    let mut flags = 0;
    let global = !skip && !table.0.is_empty();
    if global {
        flags |= 0x0001;
    }
    if paging_state.is_some() {
        flags |= 0x0002;
    }
    if skip {
        flags |= 0x0004;
    }
    b.int(flags).int(columns.len() as i32);
    if let Some(state) = paging_state {
        b.bytes(Some(state));
    }
    if skip {
        return;
    }
    if global {
        b.string(table.0).string(table.1);
    }
    for c in columns {
        if !global {
            b.string(table.0).string(table.1);
        }
        b.string(&c.name);
        write_wire_type(c.column_type, b);
    }
}

/// The bound value of marker `m`, checked against its type.
/// The type of a marker bound to a list of `t` values (`IN ?`).
fn list_of(t: CqlType) -> Result<CqlType, CqlError> {
    CqlType::list(t).map_err(|e| CqlError::invalid(e.to_string()))
}

pub(crate) fn bound<'v>(
    values: &'v [Value],
    p: &Prepared,
    m: usize,
) -> Result<&'v Value, CqlError> {
    let v = values.get(m).ok_or_else(|| {
        CqlError::invalid(format!(
            "there were {} markers (?) in the statement but {} values were bound",
            p.binds.len(),
            values.len()
        ))
    })?;
    if let (Value::Set(cell), t) = (v, &p.binds[m].column_type) {
        check_cell(cell, *t).map_err(|e| {
            CqlError::invalid(format!("the value bound to {} {e}", p.binds[m].name))
        })?;
    }
    Ok(v)
}

/// The serialized value of a term for a column of type `t`; `None` is null.
pub(crate) fn term_cell(
    term: &Term,
    t: CqlType,
    values: &[Value],
    p: &Prepared,
    column: &str,
) -> Result<Option<Vec<u8>>, CqlError> {
    match term {
        Term::Literal(l) => {
            literal_cell(l, t).map_err(|e| CqlError::invalid(format!("column {column}: {e}")))
        }
        Term::Marker(m) => match bound(values, p, *m)? {
            Value::Set(cell) => Ok(Some(cell.clone())),
            Value::Null => Ok(None),
            Value::NotSet => Err(CqlError::invalid(format!(
                "the value for {column} is unset; Quarry's store writes whole rows, bind a value \
                 or null"
            ))),
        },
    }
}
