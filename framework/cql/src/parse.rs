//! The CQL statements the server reads itself: `SELECT`, `INSERT`, `BEGIN BATCH`, `USE`.
//! Keyspace and table DDL goes to Quarry's DDL parser ([`quarry_core::ddl`]), which speaks CQL.
//!
//! ```text
//! SELECT * | count(*) | col [AS alias], ... FROM [ks.]t
//!     [WHERE restriction [AND restriction ...]] [LIMIT n | ?] [ALLOW FILTERING]
//!   restriction: col op term | col IN (term, ...) | col IN ? | token(col, ...) op term
//!   op: = < <= > >=          term: literal | ? | :name
//! INSERT INTO [ks.]t (col, ...) VALUES (term, ...)
//! BEGIN [UNLOGGED] BATCH insert; ... APPLY BATCH
//! USE ks
//! ```
//!
//! Identifiers are lowercased unless double-quoted, as in CQL. Errors name what was found and
//! where the statement expected something else.

use quarry_store::CmpOp;

/// A literal as written.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Str(String),
    /// A number as written (integer or decimal, maybe negative, maybe with an exponent).
    Num(String),
    Bool(bool),
    Null,
    /// An unquoted uuid.
    Uuid(String),
    /// `0x...`.
    Blob(Vec<u8>),
    /// `[a, b]`.
    List(Vec<Literal>),
    /// `{a, b}`, or `{}` (an empty set or map).
    Set(Vec<Literal>),
    /// `{k: v, ...}`.
    Map(Vec<(Literal, Literal)>),
}

/// A value in a statement: a literal or a bind marker (numbered in order of appearance).
#[derive(Debug, Clone, PartialEq)]
pub enum Term {
    Literal(Literal),
    Marker(usize),
}

/// The left side of a restriction.
#[derive(Debug, Clone, PartialEq)]
pub enum Lhs {
    Column(String),
    Token(Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Restriction {
    Compare {
        lhs: Lhs,
        op: CmpOp,
        term: Term,
    },
    In {
        column: String,
        terms: Vec<Term>,
    },
    /// `col IN ?`: one marker bound to a list.
    InMarker {
        column: String,
        marker: usize,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Selection {
    All,
    Count,
    Columns(Vec<(String, Option<String>)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Select {
    pub keyspace: Option<String>,
    pub table: String,
    pub selection: Selection,
    pub restrictions: Vec<Restriction>,
    pub limit: Option<Term>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Insert {
    pub keyspace: Option<String>,
    pub table: String,
    pub columns: Vec<String>,
    pub values: Vec<Term>,
}

/// A statement the server reads itself, or `Other` for the DDL parser.
#[derive(Debug, Clone, PartialEq)]
pub enum Cql {
    Select(Select),
    Insert(Insert),
    Batch(Vec<Insert>),
    Use(String),
    Other,
}

impl Cql {
    /// Bind markers in the statement.
    pub fn markers(&self) -> usize {
        fn term(t: &Term, n: &mut usize) {
            if let Term::Marker(i) = t {
                *n = (*n).max(i + 1);
            }
        }
        let mut n = 0;
        match self {
            Cql::Select(s) => {
                for r in &s.restrictions {
                    match r {
                        Restriction::Compare { term: t, .. } => term(t, &mut n),
                        Restriction::In { terms, .. } => terms.iter().for_each(|t| term(t, &mut n)),
                        Restriction::InMarker { marker, .. } => n = n.max(marker + 1),
                    }
                }
                if let Some(t) = &s.limit {
                    term(t, &mut n);
                }
            }
            Cql::Insert(i) => i.values.iter().for_each(|t| term(t, &mut n)),
            Cql::Batch(inserts) => inserts
                .iter()
                .flat_map(|i| &i.values)
                .for_each(|t| term(t, &mut n)),
            Cql::Use(_) | Cql::Other => {}
        }
        n
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Quoted(String),
    Str(String),
    Num(String),
    Uuid(String),
    Blob(Vec<u8>),
    Marker,
    NamedMarker,
    Sym(&'static str),
}

impl Tok {
    fn show(&self) -> String {
        match self {
            Tok::Word(w) => w.clone(),
            Tok::Quoted(w) => format!("\"{w}\""),
            Tok::Str(s) => format!("'{s}'"),
            Tok::Num(n) | Tok::Uuid(n) => n.clone(),
            Tok::Blob(_) => "a blob literal".into(),
            Tok::Marker => "?".into(),
            Tok::NamedMarker => "a named bind marker".into(),
            Tok::Sym(s) => (*s).into(),
        }
    }
}

fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit()))
}

fn next_is_digit(chars: &[char], i: usize) -> bool {
    chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())
}

fn tokenize(text: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '-' && chars.get(i + 1) == Some(&'-') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && chars.get(i + 1) == Some(&'*') {
            i += 2;
            while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                i += 1;
            }
            i += 2;
        } else if c == '\'' || c == '"' {
            let mut s = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err(format!("an unterminated {c}...{c} in the statement")),
                    Some(&q) if q == c && chars.get(i + 1) == Some(&c) => {
                        s.push(c);
                        i += 2;
                    }
                    Some(&q) if q == c => {
                        i += 1;
                        break;
                    }
                    Some(&other) => {
                        s.push(other);
                        i += 1;
                    }
                }
            }
            out.push(if c == '\'' {
                Tok::Str(s)
            } else {
                Tok::Quoted(s)
            });
        } else if c == '?' {
            out.push(Tok::Marker);
            i += 1;
        } else if c == ':' && chars.get(i + 1).is_some_and(|c| c.is_alphabetic()) {
            i += 1;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Tok::NamedMarker);
        } else if c.is_ascii_alphanumeric() || c == '_' || c == '-' && next_is_digit(&chars, i) {
            let rest: String = chars[i..(i + 36).min(chars.len())].iter().collect();
            if is_uuid(&rest) {
                i += 36;
                out.push(Tok::Uuid(rest));
                continue;
            }
            let start = i;
            if c == '0' && matches!(chars.get(i + 1), Some('x' | 'X')) {
                i += 2;
                while i < chars.len() && chars[i].is_ascii_alphanumeric() {
                    i += 1;
                }
                let hex: String = chars[start + 2..i].iter().collect();
                if !hex.len().is_multiple_of(2) || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                    return Err(format!(
                        "'0x{hex}' is not a blob literal (0x and hex digit pairs)"
                    ));
                }
                let bytes = (0..hex.len())
                    .step_by(2)
                    .map(|k| u8::from_str_radix(&hex[k..k + 2], 16).unwrap_or(0))
                    .collect();
                out.push(Tok::Blob(bytes));
            } else if c.is_ascii_digit() || c == '-' {
                i += 1;
                let digits = |i: &mut usize| {
                    while *i < chars.len() && chars[*i].is_ascii_digit() {
                        *i += 1;
                    }
                };
                digits(&mut i);
                if chars.get(i) == Some(&'.') && next_is_digit(&chars, i) {
                    i += 1;
                    digits(&mut i);
                }
                if matches!(chars.get(i), Some('e' | 'E')) {
                    let mut k = i + 1;
                    if matches!(chars.get(k), Some('+' | '-')) {
                        k += 1;
                    }
                    if chars.get(k).is_some_and(|d| d.is_ascii_digit()) {
                        i = k;
                        digits(&mut i);
                    }
                }
                out.push(Tok::Num(chars[start..i].iter().collect()));
            } else {
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                out.push(Tok::Word(chars[start..i].iter().collect()));
            }
        } else {
            let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            let sym = match two.as_str() {
                "<=" => Some("<="),
                ">=" => Some(">="),
                "!=" => Some("!="),
                _ => None,
            };
            if let Some(sym) = sym {
                out.push(Tok::Sym(sym));
                i += 2;
                continue;
            }
            let sym = match c {
                '(' => "(",
                ')' => ")",
                ',' => ",",
                '.' => ".",
                ';' => ";",
                '=' => "=",
                '<' => "<",
                '>' => ">",
                '*' => "*",
                '{' => "{",
                '}' => "}",
                '[' => "[",
                ']' => "]",
                ':' => ":",
                _ => return Err(format!("unexpected character '{c}'")),
            };
            out.push(Tok::Sym(sym));
            i += 1;
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    markers: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn found(&self) -> String {
        self.peek()
            .map(|t| format!("'{}'", t.show()))
            .unwrap_or_else(|| "the end of the statement".into())
    }

    fn is_keyword(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(kw))
    }

    fn keyword(&mut self, kw: &str) -> Result<(), String> {
        if self.is_keyword(kw) {
            self.pos += 1;
            Ok(())
        } else {
            Err(format!("expected {kw}, found {}", self.found()))
        }
    }

    fn eat_keyword(&mut self, kw: &str) -> bool {
        let yes = self.is_keyword(kw);
        if yes {
            self.pos += 1;
        }
        yes
    }

    fn is_sym(&self, sym: &str) -> bool {
        matches!(self.peek(), Some(Tok::Sym(s)) if *s == sym)
    }

    fn sym(&mut self, sym: &str) -> Result<(), String> {
        if self.is_sym(sym) {
            self.pos += 1;
            Ok(())
        } else {
            Err(format!("expected '{sym}', found {}", self.found()))
        }
    }

    fn ident(&mut self, what: &str) -> Result<String, String> {
        match self.next() {
            Some(Tok::Word(w)) => Ok(w.to_lowercase()),
            Some(Tok::Quoted(w)) => Ok(w),
            other => {
                self.pos -= 1;
                let _ = other;
                Err(format!("expected {what}, found {}", self.found()))
            }
        }
    }

    /// `[ks.]name`.
    fn table_name(&mut self) -> Result<(Option<String>, String), String> {
        let first = self.ident("a table name")?;
        if self.is_sym(".") {
            self.pos += 1;
            Ok((Some(first), self.ident("a table name after the '.'")?))
        } else {
            Ok((None, first))
        }
    }

    fn term(&mut self) -> Result<Term, String> {
        if matches!(self.peek(), Some(Tok::Marker) | Some(Tok::NamedMarker)) {
            self.pos += 1;
            self.markers += 1;
            return Ok(Term::Marker(self.markers - 1));
        }
        Ok(Term::Literal(self.literal()?))
    }

    /// A value written in the statement, collections included (`[1, 2]`, `{'a'}`, `{'k': 1}`).
    fn literal(&mut self) -> Result<Literal, String> {
        let literal = match self.next() {
            Some(Tok::Sym("[")) => Literal::List(self.elements("]")?),
            Some(Tok::Sym("{")) => {
                if self.is_sym("}") {
                    self.pos += 1;
                    return Ok(Literal::Set(Vec::new()));
                }
                let first = self.literal()?;
                if self.is_sym(":") {
                    self.pos += 1;
                    let mut entries = vec![(first, self.literal()?)];
                    while self.is_sym(",") {
                        self.pos += 1;
                        let key = self.literal()?;
                        self.sym(":")?;
                        entries.push((key, self.literal()?));
                    }
                    self.sym("}")?;
                    Literal::Map(entries)
                } else {
                    let mut elements = vec![first];
                    if self.is_sym(",") {
                        self.pos += 1;
                        elements.extend(self.elements("}")?);
                    } else {
                        self.sym("}")?;
                    }
                    Literal::Set(elements)
                }
            }
            Some(Tok::Str(s)) => Literal::Str(s),
            Some(Tok::Num(n)) => Literal::Num(n),
            Some(Tok::Uuid(u)) => Literal::Uuid(u),
            Some(Tok::Blob(b)) => Literal::Blob(b),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("true") => Literal::Bool(true),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("false") => Literal::Bool(false),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("null") => Literal::Null,
            Some(Tok::Word(w))
                if w.eq_ignore_ascii_case("nan") || w.eq_ignore_ascii_case("infinity") =>
            {
                Literal::Num(w)
            }
            _ => {
                self.pos -= 1;
                return Err(format!("expected a value or '?', found {}", self.found()));
            }
        };
        Ok(literal)
    }

    /// Literals separated by commas, up to `close` (which may come at once).
    fn elements(&mut self, close: &str) -> Result<Vec<Literal>, String> {
        let mut out = Vec::new();
        if self.is_sym(close) {
            self.pos += 1;
            return Ok(out);
        }
        loop {
            out.push(self.literal()?);
            if self.is_sym(",") {
                self.pos += 1;
                continue;
            }
            self.sym(close)?;
            return Ok(out);
        }
    }

    fn op(&mut self) -> Result<CmpOp, String> {
        let op = match self.peek() {
            Some(Tok::Sym("=")) => CmpOp::Eq,
            Some(Tok::Sym("<")) => CmpOp::Lt,
            Some(Tok::Sym("<=")) => CmpOp::LtEq,
            Some(Tok::Sym(">")) => CmpOp::Gt,
            Some(Tok::Sym(">=")) => CmpOp::GtEq,
            Some(Tok::Sym("!=")) => {
                return Err("CQL has no '!=' restriction; filter with SQL (quarry sql)".into());
            }
            _ => {
                return Err(format!(
                    "expected =, <, <=, > or >=, found {}",
                    self.found()
                ));
            }
        };
        self.pos += 1;
        Ok(op)
    }

    fn end(&mut self) -> Result<(), String> {
        while self.is_sym(";") {
            self.pos += 1;
        }
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(format!(
                "unexpected {} after the end of the statement",
                self.found()
            )),
        }
    }

    fn select(&mut self) -> Result<Select, String> {
        self.keyword("SELECT")?;
        if self.is_keyword("DISTINCT") || self.is_keyword("JSON") {
            return Err(format!(
                "SELECT {} is not supported by Quarry's CQL server; use quarry sql",
                self.found()
            ));
        }
        let selection = if self.is_sym("*") {
            self.pos += 1;
            Selection::All
        } else if self.is_keyword("count") && self.toks.get(self.pos + 1) == Some(&Tok::Sym("(")) {
            self.pos += 2;
            if self.is_sym("*") || matches!(self.peek(), Some(Tok::Num(n)) if n == "1") {
                self.pos += 1;
            } else {
                return Err(format!("expected count(*), found {}", self.found()));
            }
            self.sym(")")?;
            Selection::Count
        } else {
            let mut columns = Vec::new();
            loop {
                let name = self.ident("a column name")?;
                if self.is_sym("(") {
                    return Err(format!(
                        "function {name}(...) in a selection is not supported by Quarry's CQL \
                         server; use quarry sql"
                    ));
                }
                let alias = if self.eat_keyword("AS") {
                    Some(self.ident("an alias after AS")?)
                } else {
                    None
                };
                columns.push((name, alias));
                if !self.is_sym(",") {
                    break;
                }
                self.pos += 1;
            }
            Selection::Columns(columns)
        };
        self.keyword("FROM")?;
        let (keyspace, table) = self.table_name()?;
        let mut restrictions = Vec::new();
        if self.eat_keyword("WHERE") {
            loop {
                restrictions.push(self.restriction()?);
                if !self.eat_keyword("AND") {
                    break;
                }
            }
        }
        let mut limit = None;
        if self.eat_keyword("LIMIT") {
            limit = Some(self.term()?);
        }
        if self.eat_keyword("ALLOW") {
            self.keyword("FILTERING")?;
        }
        // ScyllaDB's statement options, which drivers add to their schema queries on ScyllaDB
        // nodes and which change nothing here: `BYPASS CACHE`, `USING TIMEOUT 2000ms`.
        if self.eat_keyword("BYPASS") {
            self.keyword("CACHE")?;
        }
        if self.eat_keyword("USING") {
            self.keyword("TIMEOUT")?;
            self.duration()?;
        }
        self.end()?;
        Ok(Select {
            keyspace,
            table,
            selection,
            restrictions,
            limit,
        })
    }

    /// A CQL duration literal such as `2000ms` or `1h30m`.
    fn duration(&mut self) -> Result<(), String> {
        let mut parts = 0;
        while let (Some(Tok::Num(_)), Some(Tok::Word(_))) =
            (self.toks.get(self.pos), self.toks.get(self.pos + 1))
        {
            self.pos += 2;
            parts += 1;
        }
        if parts == 0 {
            return Err(format!(
                "expected a duration such as 500ms, found {}",
                self.found()
            ));
        }
        Ok(())
    }

    fn restriction(&mut self) -> Result<Restriction, String> {
        if self.is_keyword("token") && self.toks.get(self.pos + 1) == Some(&Tok::Sym("(")) {
            self.pos += 2;
            let mut columns = vec![self.ident("a partition key column in token(...)")?];
            while self.is_sym(",") {
                self.pos += 1;
                columns.push(self.ident("a partition key column in token(...)")?);
            }
            self.sym(")")?;
            let op = self.op()?;
            let term = self.term()?;
            return Ok(Restriction::Compare {
                lhs: Lhs::Token(columns),
                op,
                term,
            });
        }
        let column = self.ident("a column name or token(...)")?;
        if self.eat_keyword("IN") {
            if self.is_sym("(") {
                self.pos += 1;
                let mut terms = vec![self.term()?];
                while self.is_sym(",") {
                    self.pos += 1;
                    terms.push(self.term()?);
                }
                self.sym(")")?;
                return Ok(Restriction::In { column, terms });
            }
            match self.term()? {
                Term::Marker(marker) => return Ok(Restriction::InMarker { column, marker }),
                Term::Literal(_) => {
                    return Err(format!("expected ( or ? after IN on {column}"));
                }
            }
        }
        let op = self.op()?;
        let term = self.term()?;
        Ok(Restriction::Compare {
            lhs: Lhs::Column(column),
            op,
            term,
        })
    }

    fn insert(&mut self) -> Result<Insert, String> {
        self.keyword("INSERT")?;
        self.keyword("INTO")?;
        let (keyspace, table) = self.table_name()?;
        self.sym("(")?;
        let mut columns = vec![self.ident("a column name")?];
        while self.is_sym(",") {
            self.pos += 1;
            columns.push(self.ident("a column name")?);
        }
        self.sym(")")?;
        if self.is_keyword("JSON") {
            return Err("INSERT ... JSON is not supported; list the columns".into());
        }
        self.keyword("VALUES")?;
        self.sym("(")?;
        let mut values = vec![self.term()?];
        while self.is_sym(",") {
            self.pos += 1;
            values.push(self.term()?);
        }
        self.sym(")")?;
        if self.is_keyword("IF") {
            return Err(
                "INSERT ... IF NOT EXISTS (a lightweight transaction) is not supported: Quarry's \
                 store upserts by primary key"
                    .into(),
            );
        }
        if self.eat_keyword("USING") {
            if self.is_keyword("TTL") {
                return Err(
                    "USING TTL is not supported: Quarry's store keeps rows until they are \
                     overwritten"
                        .into(),
                );
            }
            return Err(format!(
                "USING {} is not supported: the last write of a key wins in Quarry's store",
                self.found()
            ));
        }
        if columns.len() != values.len() {
            return Err(format!(
                "INSERT names {} columns but gives {} values",
                columns.len(),
                values.len()
            ));
        }
        Ok(Insert {
            keyspace,
            table,
            columns,
            values,
        })
    }

    fn batch(&mut self) -> Result<Vec<Insert>, String> {
        self.keyword("BEGIN")?;
        if self.eat_keyword("COUNTER") {
            return Err("counter batches are not supported (Quarry has no counters)".into());
        }
        self.eat_keyword("UNLOGGED");
        self.eat_keyword("LOGGED");
        self.keyword("BATCH")?;
        let mut inserts = Vec::new();
        loop {
            while self.is_sym(";") {
                self.pos += 1;
            }
            if self.eat_keyword("APPLY") {
                self.keyword("BATCH")?;
                break;
            }
            if !self.is_keyword("INSERT") {
                return Err(format!(
                    "a batch holds INSERT statements (Quarry's store has no UPDATE or DELETE), \
                     found {}",
                    self.found()
                ));
            }
            inserts.push(self.insert_in_batch()?);
        }
        self.end()?;
        Ok(inserts)
    }

    fn insert_in_batch(&mut self) -> Result<Insert, String> {
        let start = self.pos;
        let mut depth = 0;
        // An INSERT inside a batch ends at its closing parenthesis of VALUES (...).
        let mut end = self.pos;
        while let Some(t) = self.toks.get(end) {
            match t {
                Tok::Sym("(") => depth += 1,
                Tok::Sym(")") => {
                    depth -= 1;
                    if depth == 0
                        && self.toks[start..end]
                            .iter()
                            .any(|t| matches!(t, Tok::Word(w) if w.eq_ignore_ascii_case("VALUES")))
                    {
                        end += 1;
                        break;
                    }
                }
                _ => {}
            }
            end += 1;
        }
        let mut sub = Parser {
            toks: self.toks[start..end].to_vec(),
            pos: 0,
            markers: self.markers,
        };
        let insert = sub.insert()?;
        sub.end()?;
        self.markers = sub.markers;
        self.pos = end;
        Ok(insert)
    }
}

/// Reads a statement. `Cql::Other` is DDL or something else for [`quarry_core::ddl`].
pub fn parse(text: &str) -> Result<Cql, String> {
    let toks = tokenize(text)?;
    let mut p = Parser {
        toks,
        pos: 0,
        markers: 0,
    };
    let first = match p.peek() {
        Some(Tok::Word(w)) => w.to_ascii_uppercase(),
        _ => return Err(format!("expected a statement, found {}", p.found())),
    };
    Ok(match first.as_str() {
        "SELECT" => Cql::Select(p.select()?),
        "INSERT" => {
            let insert = p.insert()?;
            p.end()?;
            Cql::Insert(insert)
        }
        "BEGIN" => Cql::Batch(p.batch()?),
        "USE" => {
            p.pos += 1;
            let keyspace = p.ident("a keyspace name")?;
            p.end()?;
            Cql::Use(keyspace)
        }
        "UPDATE" | "DELETE" | "TRUNCATE" => {
            return Err(format!(
                "{first} is not supported: Quarry's store is append-and-upsert (write the whole \
                 row again with INSERT)"
            ));
        }
        _ => Cql::Other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_range_select_with_markers() {
        let cql = parse(
            "SELECT id, \"Value\" AS v FROM Iot.readings WHERE token(id) > ? AND token(id) <= ? \
             LIMIT 10",
        )
        .unwrap();
        let Cql::Select(s) = &cql else { panic!() };
        assert_eq!(s.keyspace.as_deref(), Some("iot"));
        assert_eq!(
            s.selection,
            Selection::Columns(vec![
                ("id".into(), None),
                ("Value".into(), Some("v".into()))
            ])
        );
        assert_eq!(
            s.restrictions[1],
            Restriction::Compare {
                lhs: Lhs::Token(vec!["id".into()]),
                op: CmpOp::LtEq,
                term: Term::Marker(1)
            }
        );
        assert_eq!(cql.markers(), 2);
    }

    #[test]
    fn scylla_statement_options_are_read_and_ignored() {
        let plain = parse("SELECT keyspace_name FROM system_schema.scylla_keyspaces").unwrap();
        for options in [" USING TIMEOUT 2000ms", " BYPASS CACHE USING TIMEOUT 1h30m"] {
            let text = format!("SELECT keyspace_name FROM system_schema.scylla_keyspaces{options}");
            assert_eq!(parse(&text).unwrap(), plain, "{text}");
        }
        let e = parse("SELECT k FROM t USING TIMEOUT soon").unwrap_err();
        assert!(e.contains("expected a duration"), "{e}");
    }

    #[test]
    fn literals_of_every_kind() {
        let cql = parse(
            "INSERT INTO t (a, b, c, d, e, f) VALUES (-1.5e3, 'it''s', \
             123e4567-e89b-12d3-a456-426614174000, 0xCAFE, true, null)",
        )
        .unwrap();
        let Cql::Insert(i) = cql else { panic!() };
        assert_eq!(
            i.values,
            vec![
                Term::Literal(Literal::Num("-1.5e3".into())),
                Term::Literal(Literal::Str("it's".into())),
                Term::Literal(Literal::Uuid("123e4567-e89b-12d3-a456-426614174000".into())),
                Term::Literal(Literal::Blob(vec![0xca, 0xfe])),
                Term::Literal(Literal::Bool(true)),
                Term::Literal(Literal::Null),
            ]
        );
    }

    #[test]
    fn collection_literals() {
        let cql = parse("INSERT INTO t (a, b, c, d, e) VALUES ([1, 2], {'x'}, {'k': [3]}, {}, [])")
            .unwrap();
        let Cql::Insert(i) = cql else { panic!() };
        let num = |n: &str| Literal::Num(n.into());
        assert_eq!(
            i.values,
            vec![
                Term::Literal(Literal::List(vec![num("1"), num("2")])),
                Term::Literal(Literal::Set(vec![Literal::Str("x".into())])),
                Term::Literal(Literal::Map(vec![(
                    Literal::Str("k".into()),
                    Literal::List(vec![num("3")])
                )])),
                Term::Literal(Literal::Set(vec![])),
                Term::Literal(Literal::List(vec![])),
            ]
        );
        for bad in [
            "INSERT INTO t (a) VALUES ([1, 2)",
            "INSERT INTO t (a) VALUES ({'k': 1, 'j'})",
            "INSERT INTO t (a) VALUES ([?])",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn batches_and_refusals() {
        let cql = parse(
            "BEGIN UNLOGGED BATCH INSERT INTO ks.t (k, v) VALUES (?, ?); \
             INSERT INTO ks.t (k, v) VALUES (3, ?) APPLY BATCH",
        )
        .unwrap();
        assert_eq!(cql.markers(), 3);
        assert!(
            parse("DELETE FROM t WHERE k = 1")
                .unwrap_err()
                .contains("INSERT")
        );
        assert!(
            parse("INSERT INTO t (k) VALUES (1) USING TTL 5")
                .unwrap_err()
                .contains("TTL")
        );
        assert!(
            parse("SELECT * FROM t WHERE k != 1")
                .unwrap_err()
                .contains("!=")
        );
        assert_eq!(
            parse("CREATE TABLE x (k int PRIMARY KEY)").unwrap(),
            Cql::Other
        );
        assert_eq!(parse("USE \"Ks\"").unwrap(), Cql::Use("Ks".into()));
    }
}
