//! Quarry's own statements: CQL-flavoured DDL for keyspaces and tables.
//!
//! DataFusion parses queries but knows nothing of keyspaces, shards or primary keys. Every
//! statement goes through [`parse_statement`] first: Quarry's DDL comes back as a typed
//! [`Statement`] for the catalog, anything else as [`Statement::Sql`] with its text as written,
//! for DataFusion. A script is cut into statements with [`split_statements`].
//!
//! ```text
//!   script ──split_statements──▶ statement ──parse_statement──┬──▶ CreateKeyspace, CreateTable, … ──▶ catalog
//!                                                             └──▶ Sql(text) ──────────────────────▶ DataFusion
//! ```
//!
//! The statements Quarry reads itself (keywords in any case; identifiers are lowercased unless
//! double-quoted, and either way must pass [`validate_identifier`]):
//!
//! ```text
//! CREATE KEYSPACE [IF NOT EXISTS] ks [WITH option [AND option ...]]
//!     option: shards = N | replication_factor = N | nodes = N
//!           | replication = {'class': 'SimpleStrategy', 'replication_factor': N}
//! DROP KEYSPACE [IF EXISTS] ks
//! CREATE TABLE [IF NOT EXISTS] ks.t (
//!     column type [PRIMARY KEY], ...
//!     [, PRIMARY KEY (partition_column, clustering_column, ...)]
//!     [, PRIMARY KEY ((partition_column, ...), clustering_column, ...)]
//! )
//! CREATE TABLE [IF NOT EXISTS] ks.t ([column type, ...,] PRIMARY KEY (...)) AS query
//!     (without columns, the columns and their types come from the query)
//! DROP TABLE [IF EXISTS] ks.t
//! CREATE [OR REPLACE] [TEMPORARY | TEMP] VIEW [IF NOT EXISTS] [ks.]v AS query
//! DROP VIEW [IF EXISTS] [ks.]v
//! USE ks
//! SHOW KEYSPACES
//! SHOW TABLES [IN | FROM ks]
//! DESCRIBE | DESC KEYSPACE ks            (DESCRIBE KEYSPACES and DESCRIBE TABLES list them)
//! DESCRIBE | DESC [TABLE | VIEW] [ks.]t
//! OPTIMIZE [TABLE] ks.t                  (compacts the table's rows now, as Delta Lake's OPTIMIZE)
//! ```
//!
//! As in CQL, the first entry of `PRIMARY KEY (...)` is the partition key (a parenthesised list
//! makes a composite one) and the rest are clustering columns. Errors name the offending token and
//! its position (`line L column C`, counted from the start of the statement) and say how to fix it.
//!
//! A table name without a keyspace takes the session's keyspace (`USE ks`), given to
//! [`parse_statement_in`]; without one it is an error that says to write `keyspace.table`. View
//! names and `DESCRIBE` names are kept as written ([`ObjectName`]): a bare name may be a
//! temporary view, which only the session knows. A query after `AS` is kept as written, for
//! DataFusion to plan.

use std::collections::HashSet;
use std::fmt;

use crate::cql_type::CqlType;
use crate::error::{Error, Result};
use crate::schema::{ColumnDef, KeyspaceDef, TableDef, TableName, validate_identifier};

pub use crate::statement_split::split_statements;

/// One statement, as [`parse_statement`] understood it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Statement {
    /// `CREATE KEYSPACE`; options left out take the defaults of [`KeyspaceDef::new`].
    CreateKeyspace {
        def: KeyspaceDef,
        if_not_exists: bool,
    },
    /// `DROP KEYSPACE`.
    DropKeyspace { name: String, if_exists: bool },
    /// `CREATE TABLE`, already validated.
    CreateTable { def: TableDef, if_not_exists: bool },
    /// `DROP TABLE`.
    DropTable { name: TableName, if_exists: bool },
    /// `CREATE TABLE ks.t (..., PRIMARY KEY (...)) AS query`: a table filled by a query. The
    /// primary key columns are checked against `columns`, unless `columns` is empty: then the
    /// columns and their types are the query's.
    CreateTableAs {
        name: TableName,
        if_not_exists: bool,
        columns: Vec<ColumnDef>,
        partition_key: Vec<String>,
        clustering: Vec<String>,
        /// The query as written after `AS`.
        query: String,
    },
    /// `CREATE [OR REPLACE] [TEMPORARY] VIEW [IF NOT EXISTS] name AS query`.
    CreateView {
        name: ObjectName,
        /// The query as written after `AS`.
        query: String,
        or_replace: bool,
        temporary: bool,
        if_not_exists: bool,
    },
    /// `DROP VIEW [IF EXISTS] name`.
    DropView { name: ObjectName, if_exists: bool },
    /// `USE ks`: unqualified names resolve in `ks` from now on.
    Use { keyspace: String },
    /// `SHOW KEYSPACES` (or `DESCRIBE KEYSPACES`).
    ShowKeyspaces,
    /// `SHOW TABLES [VERBOSE] [IN ks]` (or `DESCRIBE TABLES`); `None` is the session's keyspace,
    /// or every keyspace without one. `VERBOSE` adds how the store keeps each table.
    ShowTables {
        keyspace: Option<String>,
        verbose: bool,
    },
    /// `DESCRIBE KEYSPACE ks`.
    DescribeKeyspace { name: String },
    /// `DESCRIBE [TABLE | VIEW] name`: a table, a view or a temporary view.
    DescribeTable { name: ObjectName },
    /// `OPTIMIZE [TABLE] ks.t`: merge the table's stored rows now rather than when the store
    /// gets to it.
    Optimize { name: TableName },
    /// Anything else: passed to DataFusion as written (trimmed, without a trailing `;`).
    Sql(String),
}

/// A table or view name as written: `keyspace.name`, or a bare `name`, which the session
/// resolves (a temporary view of that name, else the session's keyspace).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectName {
    pub keyspace: Option<String>,
    pub name: String,
}

impl ObjectName {
    /// `keyspace.name`: the name's own keyspace, else `default`; `None` when it has neither.
    pub fn in_keyspace(&self, default: Option<&str>) -> Option<TableName> {
        let keyspace = self.keyspace.as_deref().or(default)?;
        Some(TableName::new(keyspace, &self.name))
    }
}

impl fmt::Display for ObjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.keyspace {
            Some(keyspace) => write!(f, "{keyspace}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// Parses one statement with no current keyspace: see [`parse_statement_in`].
pub fn parse_statement(sql: &str) -> Result<Statement> {
    parse_statement_in(sql, None)
}

/// Parses one statement. A trailing `;` is allowed; a second statement after it is an error.
/// Table names without a keyspace take `keyspace` (the session's, from `USE`), or are an error
/// when it is `None`.
///
/// Quarry's DDL (see the [module docs](self)) is parsed and validated here; any other text is
/// returned untouched as [`Statement::Sql`] without being checked, so DataFusion reports its
/// errors. `CREATE TABLE ... AS SELECT` needs a `PRIMARY KEY` in parentheses before `AS`.
pub fn parse_statement_in(sql: &str, keyspace: Option<&str>) -> Result<Statement> {
    let mut parser = Parser::new(sql, keyspace);
    if parser.is_empty() {
        return Err(Error::syntax(
            "the statement is empty: write a SQL query or a DDL statement such as SHOW KEYSPACES",
        ));
    }
    match parser.quarry_statement() {
        Some(statement) => statement,
        None => Ok(Statement::Sql(passthrough_text(sql).to_string())),
    }
}

/// The text DataFusion gets: trimmed, without one trailing `;`.
fn passthrough_text(sql: &str) -> &str {
    let trimmed = sql.trim();
    trimmed.strip_suffix(';').map_or(trimmed, str::trim_end)
}

/// Where a token starts: 1-based line and column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Position {
    line: usize,
    column: usize,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {} column {}", self.line, self.column)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum TokenKind {
    /// An identifier or keyword: as written when bare, unescaped when double-quoted.
    Word {
        value: String,
        quoted: bool,
    },
    /// Digits, with an optional fraction.
    Number,
    /// A `'...'` literal, unescaped.
    Str(String),
    /// Any single ASCII punctuation character.
    Punct(char),
    /// Text the lexer cannot read; the message says what and where. Lexing stops here.
    Invalid(String),
    End,
}

#[derive(Debug, Clone)]
struct Token<'a> {
    kind: TokenKind,
    /// The token as written.
    text: &'a str,
    pos: Position,
}

impl Token<'_> {
    fn is_keyword(&self, keyword: &str) -> bool {
        matches!(&self.kind, TokenKind::Word { value, quoted: false }
            if value.eq_ignore_ascii_case(keyword))
    }

    fn is_punct(&self, c: char) -> bool {
        self.kind == TokenKind::Punct(c)
    }

    /// How an error message shows this token.
    fn describe(&self) -> String {
        match self.kind {
            TokenKind::End => "the end of the statement".to_string(),
            TokenKind::Str(_) => format!("string {}", self.text),
            _ => format!("'{}'", self.text),
        }
    }
}

/// Reads the whole statement into tokens. The last token is `End`, or `Invalid` where the text
/// stops being readable; the parser only fails on it if it gets that far.
fn tokenize(text: &str) -> Vec<Token<'_>> {
    let mut lexer = Lexer {
        text,
        offset: 0,
        pos: Position { line: 1, column: 1 },
    };
    let mut tokens = Vec::new();
    loop {
        let token = lexer.next_token();
        let last = matches!(token.kind, TokenKind::End | TokenKind::Invalid(_));
        tokens.push(token);
        if last {
            return tokens;
        }
    }
}

struct Lexer<'a> {
    text: &'a str,
    /// Byte offset of the next character.
    offset: usize,
    /// Position of the next character.
    pos: Position,
}

impl<'a> Lexer<'a> {
    fn peek(&self) -> Option<char> {
        self.text[self.offset..].chars().next()
    }

    fn peek_second(&self) -> Option<char> {
        self.text[self.offset..].chars().nth(1)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.offset += c.len_utf8();
        if c == '\n' {
            self.pos.line += 1;
            self.pos.column = 1;
        } else {
            self.pos.column += 1;
        }
        Some(c)
    }

    fn bump_while(&mut self, keep: impl Fn(char) -> bool) {
        while self.peek().is_some_and(&keep) {
            self.bump();
        }
    }

    fn next_token(&mut self) -> Token<'a> {
        let skipped = self.skip_whitespace_and_comments();
        let (start, pos) = (self.offset, self.pos);
        let kind = match skipped.err() {
            Some(message) => TokenKind::Invalid(message),
            None => self.token_kind(pos),
        };
        Token {
            kind,
            text: &self.text[start..self.offset],
            pos,
        }
    }

    fn token_kind(&mut self, pos: Position) -> TokenKind {
        let Some(c) = self.bump() else {
            return TokenKind::End;
        };
        match c {
            '\'' => match self.quoted('\'') {
                Some(value) => TokenKind::Str(value),
                None => TokenKind::Invalid(format!(
                    "unterminated string starting at {pos}; close it with '"
                )),
            },
            '"' => match self.quoted('"') {
                Some(value) => TokenKind::Word {
                    value,
                    quoted: true,
                },
                None => TokenKind::Invalid(format!(
                    "unterminated quoted identifier starting at {pos}; close it with \""
                )),
            },
            c if c.is_alphabetic() || c == '_' => {
                let start = self.offset - c.len_utf8();
                self.bump_while(|c| c.is_alphanumeric() || c == '_');
                TokenKind::Word {
                    value: self.text[start..self.offset].to_string(),
                    quoted: false,
                }
            }
            c if c.is_ascii_digit() => {
                self.bump_while(|c| c.is_ascii_digit());
                if self.peek() == Some('.')
                    && self.peek_second().is_some_and(|c| c.is_ascii_digit())
                {
                    self.bump();
                    self.bump_while(|c| c.is_ascii_digit());
                }
                TokenKind::Number
            }
            c if c.is_ascii_punctuation() => TokenKind::Punct(c),
            c => TokenKind::Invalid(format!("unexpected character '{c}' at {pos}")),
        }
    }

    /// Reads up to the closing `quote` (a doubled quote stands for one); `None` if it never comes.
    fn quoted(&mut self, quote: char) -> Option<String> {
        let mut value = String::new();
        loop {
            let c = self.bump()?;
            if c == quote {
                if self.peek() != Some(quote) {
                    return Some(value);
                }
                self.bump();
            }
            value.push(c);
        }
    }

    /// Skips whitespace, `-- line` and (nested) `/* block */` comments; an unterminated block
    /// comment is an error message.
    fn skip_whitespace_and_comments(&mut self) -> Result<(), String> {
        loop {
            match (self.peek(), self.peek_second()) {
                (Some(c), _) if c.is_whitespace() => {
                    self.bump();
                }
                (Some('-'), Some('-')) => self.bump_while(|c| c != '\n'),
                (Some('/'), Some('*')) => {
                    let start = self.pos;
                    let mut depth = 0usize;
                    loop {
                        match (self.peek(), self.peek_second()) {
                            (Some('/'), Some('*')) => depth += 1,
                            (Some('*'), Some('/')) => depth -= 1,
                            (Some(_), _) => {
                                self.bump();
                                continue;
                            }
                            (None, _) => {
                                return Err(format!(
                                    "unterminated comment starting at {start}; close it with */"
                                ));
                            }
                        }
                        self.bump();
                        self.bump();
                        if depth == 0 {
                            break;
                        }
                    }
                }
                _ => return Ok(()),
            }
        }
    }
}

/// The valid `CREATE KEYSPACE` options, as error messages list them.
const KEYSPACE_OPTIONS: &str = "shards, replication_factor, nodes, replication and durable_writes";

/// The example error messages show for the replication map.
const REPLICATION_EXAMPLE: &str =
    "replication = {'class': 'SimpleStrategy', 'replication_factor': 3}";

/// A `PRIMARY KEY` as written: each column with where it was named.
#[derive(Debug)]
struct PrimaryKey {
    partition: Vec<(String, Position)>,
    clustering: Vec<(String, Position)>,
}

/// A recursive-descent parser over the tokens of one statement.
struct Parser<'a> {
    /// The statement, for the text of a query after `AS`.
    sql: &'a str,
    /// Never empty; the last token is `End` or `Invalid` and is never stepped past.
    tokens: Vec<Token<'a>>,
    next: usize,
    /// The keyspace of table names written without one.
    keyspace: Option<&'a str>,
}

impl<'a> Parser<'a> {
    fn new(sql: &'a str, keyspace: Option<&'a str>) -> Self {
        Parser {
            sql,
            tokens: tokenize(sql),
            next: 0,
            keyspace,
        }
    }

    fn peek_at(&self, n: usize) -> &Token<'a> {
        &self.tokens[(self.next + n).min(self.tokens.len() - 1)]
    }

    fn peek(&self) -> &Token<'a> {
        self.peek_at(0)
    }

    fn advance(&mut self) -> Token<'a> {
        let token = self.peek().clone();
        if self.next < self.tokens.len() - 1 {
            self.next += 1;
        }
        token
    }

    /// Nothing but whitespace, comments and at most one `;`.
    fn is_empty(&self) -> bool {
        let first = self.peek_at(0);
        first.kind == TokenKind::End
            || (first.is_punct(';') && self.peek_at(1).kind == TokenKind::End)
    }

    fn keyword_at(&self, n: usize, keyword: &str) -> bool {
        self.peek_at(n).is_keyword(keyword)
    }

    fn accept_keyword(&mut self, keyword: &str) -> bool {
        let found = self.peek().is_keyword(keyword);
        if found {
            self.advance();
        }
        found
    }

    fn expect_keyword(&mut self, keyword: &str, context: &str) -> Result<()> {
        if self.accept_keyword(keyword) {
            Ok(())
        } else {
            Err(self.unexpected(&format!("{keyword} {context}")))
        }
    }

    fn accept_punct(&mut self, c: char) -> bool {
        let found = self.peek().is_punct(c);
        if found {
            self.advance();
        }
        found
    }

    fn expect_punct(&mut self, c: char, context: &str) -> Result<Token<'a>> {
        if self.peek().is_punct(c) {
            Ok(self.advance())
        } else {
            Err(self.unexpected(&format!("'{c}' {context}")))
        }
    }

    /// `expected <expected> at line L column C, found <token>`, or the lexer's message when the
    /// next token could not be read.
    fn unexpected(&self, expected: &str) -> Error {
        let token = self.peek();
        match &token.kind {
            TokenKind::Invalid(message) => Error::syntax(message.clone()),
            _ => Error::syntax(format!(
                "expected {expected} at {}, found {}",
                token.pos,
                token.describe()
            )),
        }
    }

    /// Parses the statement if it is one of Quarry's; `None` leaves it to DataFusion.
    fn quarry_statement(&mut self) -> Option<Result<Statement>> {
        let second = |parser: &Self, keyword| parser.keyword_at(1, keyword);
        let statement = if self.keyword_at(0, "CREATE") {
            if second(self, "KEYSPACE") {
                self.create_keyspace()
            } else if second(self, "TABLE") {
                self.create_table()
            } else if self.creates_view() {
                self.create_view()
            } else {
                return None;
            }
        } else if self.keyword_at(0, "DROP") {
            if second(self, "KEYSPACE") {
                self.drop_keyspace()
            } else if second(self, "TABLE") {
                self.drop_table()
            } else if second(self, "VIEW") {
                self.drop_view()
            } else {
                return None;
            }
        } else if self.keyword_at(0, "USE") {
            self.use_keyspace()
        } else if self.keyword_at(0, "OPTIMIZE") {
            self.optimize()
        } else if self.keyword_at(0, "SHOW") {
            if second(self, "KEYSPACES") {
                self.list_keyspaces()
            } else if second(self, "TABLES") {
                self.show_tables()
            } else {
                return None;
            }
        } else if self.keyword_at(0, "DESCRIBE") || self.keyword_at(0, "DESC") {
            if second(self, "KEYSPACE") {
                self.describe_keyspace()
            } else if second(self, "KEYSPACES") {
                self.list_keyspaces()
            } else if second(self, "TABLES") {
                self.list_tables()
            } else if second(self, "TABLE") || second(self, "VIEW") || self.names_one_table(1) {
                self.describe_table()
            } else {
                return None;
            }
        } else {
            return None;
        };
        Some(statement)
    }

    /// Whether the tokens from `n` on are exactly `word [. word] [;]`: `DESCRIBE ks.t` and
    /// `DESCRIBE t` are Quarry's; anything longer is left to DataFusion.
    fn names_one_table(&self, n: usize) -> bool {
        let word = |i| matches!(self.peek_at(i).kind, TokenKind::Word { .. });
        let end = |i| {
            self.peek_at(i).kind == TokenKind::End
                || (self.peek_at(i).is_punct(';') && self.peek_at(i + 1).kind == TokenKind::End)
        };
        word(n) && (end(n + 1) || (self.peek_at(n + 1).is_punct('.') && word(n + 2) && end(n + 3)))
    }

    /// Whether this is `CREATE [OR REPLACE] [TEMPORARY | TEMP] VIEW`.
    fn creates_view(&self) -> bool {
        let mut n = 1;
        if self.keyword_at(n, "OR") && self.keyword_at(n + 1, "REPLACE") {
            n += 2;
        }
        if self.keyword_at(n, "TEMPORARY") || self.keyword_at(n, "TEMP") {
            n += 1;
        }
        self.keyword_at(n, "VIEW")
    }

    /// The text after the `AS` that is the next token: a query, kept as written for DataFusion.
    fn query_after_as(&mut self, statement: &str) -> Result<String> {
        let token = self.peek().clone();
        if !token.is_keyword("AS") {
            return Err(self.unexpected(&format!("AS and a query after {statement}")));
        }
        // Every token's text is a slice of `sql`, so the difference of their starts is the
        // token's byte offset.
        let end = token.text.as_ptr() as usize - self.sql.as_ptr() as usize + token.text.len();
        let query = passthrough_text(&self.sql[end..]);
        if query.is_empty() {
            return Err(Error::syntax(format!(
                "expected a query after AS at {}, found the end of the statement; write {statement} \
                 AS SELECT ...",
                token.pos
            )));
        }
        Ok(query.to_string())
    }

    /// The end of the statement, after an optional `;`.
    fn expect_end(&mut self) -> Result<()> {
        let semicolon = self.accept_punct(';');
        let token = self.peek();
        match token.kind {
            TokenKind::End => Ok(()),
            TokenKind::Punct(_)
            | TokenKind::Word { .. }
            | TokenKind::Number
            | TokenKind::Str(_)
                if semicolon =>
            {
                Err(Error::syntax(format!(
                    "found {} at {} after the end of the statement; run one statement at a time",
                    token.describe(),
                    token.pos
                )))
            }
            _ => Err(self.unexpected("the end of the statement")),
        }
    }

    /// `IF NOT EXISTS`, if present.
    fn if_not_exists(&mut self) -> Result<bool> {
        if !self.accept_keyword("IF") {
            return Ok(false);
        }
        self.expect_keyword("NOT", "after IF")?;
        self.expect_keyword("EXISTS", "after IF NOT")?;
        Ok(true)
    }

    /// `IF EXISTS`, if present.
    fn if_exists(&mut self) -> Result<bool> {
        if !self.accept_keyword("IF") {
            return Ok(false);
        }
        self.expect_keyword("EXISTS", "after IF")?;
        Ok(true)
    }

    /// A name of a `kind` (keyspace, table, column): bare words are lowercased, quoted ones kept
    /// as written; either way it must be a valid identifier.
    fn identifier(&mut self, kind: &str, expected: &str) -> Result<(String, Position)> {
        let token = self.peek();
        let TokenKind::Word { value, quoted } = &token.kind else {
            return Err(self.unexpected(expected));
        };
        let name = if *quoted {
            value.clone()
        } else {
            value.to_lowercase()
        };
        let pos = token.pos;
        validate_identifier(kind, &name)
            .map_err(|e| Error::definition(format!("{e} (at {pos})")))?;
        self.advance();
        Ok((name, pos))
    }

    /// `keyspace.table`; both parts are required.
    fn table_name(&mut self, context: &str) -> Result<TableName> {
        let first = self.peek().clone();
        if !matches!(first.kind, TokenKind::Word { .. }) {
            return Err(self.unexpected(&format!("a table name (keyspace.table) {context}")));
        }
        if !self.peek_at(1).is_punct('.') {
            let Some(keyspace) = self.keyspace else {
                return Err(Error::syntax(format!(
                    "table name {} at {} has no keyspace; write keyspace.table, for example \
                     iot.readings, or choose a keyspace first with USE keyspace",
                    first.describe(),
                    first.pos
                )));
            };
            let (table, _) = self.identifier("table", &format!("a table name {context}"))?;
            return Ok(TableName::new(keyspace, table));
        }
        let (keyspace, _) = self.identifier("keyspace", "a keyspace name")?;
        self.advance();
        let (table, _) = self.identifier("table", &format!("a table name after '{keyspace}.'"))?;
        if self.peek().is_punct('.') {
            return Err(Error::syntax(format!(
                "table name '{keyspace}.{table}.' at {} has too many parts; write keyspace.table",
                first.pos
            )));
        }
        Ok(TableName::new(keyspace, table))
    }

    /// `[keyspace.]name` of a `kind` (view, table), kept as written: see [`ObjectName`].
    fn object_name(&mut self, kind: &str, context: &str) -> Result<ObjectName> {
        let first = self.peek().clone();
        if !matches!(first.kind, TokenKind::Word { .. }) {
            return Err(self.unexpected(&format!("a {kind} name {context}")));
        }
        let (first_name, _) = self.identifier(
            if self.peek_at(1).is_punct('.') {
                "keyspace"
            } else {
                kind
            },
            &format!("a {kind} name {context}"),
        )?;
        if !self.accept_punct('.') {
            return Ok(ObjectName {
                keyspace: None,
                name: first_name,
            });
        }
        let (name, _) = self.identifier(kind, &format!("a {kind} name after '{first_name}.'"))?;
        if self.peek().is_punct('.') {
            return Err(Error::syntax(format!(
                "{kind} name '{first_name}.{name}.' at {} has too many parts; write \
                 keyspace.{kind}",
                first.pos
            )));
        }
        Ok(ObjectName {
            keyspace: Some(first_name),
            name,
        })
    }

    fn create_keyspace(&mut self) -> Result<Statement> {
        self.advance();
        self.advance();
        let if_not_exists = self.if_not_exists()?;
        let (name, _) = self.identifier("keyspace", "a keyspace name after CREATE KEYSPACE")?;
        let mut def = KeyspaceDef::new(name);
        if self.accept_keyword("WITH") {
            let mut seen = Vec::new();
            loop {
                self.keyspace_option(&mut def, &mut seen)?;
                if !self.accept_keyword("AND") {
                    break;
                }
            }
        }
        self.expect_end()?;
        def.validate()?;
        Ok(Statement::CreateKeyspace { def, if_not_exists })
    }

    /// One `option = value` of `CREATE KEYSPACE ... WITH`. `seen` holds the settings made so far
    /// (what they set, the option as written and where) so none is made twice.
    fn keyspace_option(
        &mut self,
        def: &mut KeyspaceDef,
        seen: &mut Vec<(&'static str, String, Position)>,
    ) -> Result<()> {
        let token = self.peek().clone();
        let TokenKind::Word { value, .. } = &token.kind else {
            return Err(self.unexpected(&format!("a keyspace option ({KEYSPACE_OPTIONS})")));
        };
        let option = value.to_lowercase();
        let setting = match option.as_str() {
            "shards" => "shards",
            "replication_factor" | "replication" => "replication_factor",
            "nodes" => "nodes",
            "durable_writes" => "durable_writes",
            _ => {
                return Err(Error::syntax(format!(
                    "unknown keyspace option {} at {}; valid options are {KEYSPACE_OPTIONS}",
                    token.describe(),
                    token.pos
                )));
            }
        };
        if let Some((_, first, first_pos)) = seen.iter().find(|(s, _, _)| *s == setting) {
            return Err(Error::syntax(format!(
                "keyspace option {} at {} sets {setting} again (already set by '{first}' at \
                 {first_pos}); give it once",
                token.describe(),
                token.pos
            )));
        }
        seen.push((setting, option.clone(), token.pos));
        self.advance();
        self.expect_punct('=', &format!("after keyspace option '{option}'"))?;
        match option.as_str() {
            "shards" => def.shards = self.whole_number("shards")?,
            "replication_factor" => def.replication_factor = self.whole_number(&option)?,
            "nodes" => def.nodes = Some(self.whole_number("nodes")?),
            "durable_writes" => self.durable_writes()?,
            _ => def.replication_factor = self.replication_map()?,
        }
        Ok(())
    }

    /// CQL's `durable_writes = true` (as DESCRIBE prints it): Quarry's stores always write
    /// through their log, so `false` is refused rather than ignored.
    fn durable_writes(&mut self) -> Result<()> {
        let token = self.peek().clone();
        let value = match &token.kind {
            TokenKind::Word {
                value,
                quoted: false,
            }
            | TokenKind::Str(value) => value.to_lowercase(),
            _ => String::new(),
        };
        match value.as_str() {
            "true" => {
                self.advance();
                Ok(())
            }
            "false" => Err(Error::syntax(format!(
                "durable_writes = false at {}: Quarry always writes through its log (and a \
                 cluster's keyspaces keep theirs); leave the option out or set it to true",
                token.pos
            ))),
            _ => Err(self.unexpected("true or false for durable_writes")),
        }
    }

    /// A non-negative integer literal that fits in `u32`.
    fn whole_number(&mut self, what: &str) -> Result<u32> {
        let token = self.peek();
        if token.kind != TokenKind::Number {
            return Err(self.unexpected(&format!("a whole number for {what}")));
        }
        let n = parse_u32(token, what)?;
        self.advance();
        Ok(n)
    }

    /// CQL's `{'class': 'SimpleStrategy', 'replication_factor': N}`; returns the factor.
    fn replication_map(&mut self) -> Result<u32> {
        let open = self.expect_punct(
            '{',
            &format!("after replication =, as in {REPLICATION_EXAMPLE}"),
        )?;
        let mut entries: Vec<(String, Token<'a>, Token<'a>)> = Vec::new();
        if !self.accept_punct('}') {
            loop {
                let key_token = self.peek().clone();
                let TokenKind::Str(key) = &key_token.kind else {
                    return Err(self.unexpected(
                        "a quoted key such as 'replication_factor' in the replication map",
                    ));
                };
                let key = key.clone();
                if entries.iter().any(|(k, _, _)| *k == key) {
                    return Err(Error::syntax(format!(
                        "'{key}' appears twice in the replication map (again at {}); give it once",
                        key_token.pos
                    )));
                }
                self.advance();
                self.expect_punct(':', &format!("after '{key}' in the replication map"))?;
                let value = self.peek().clone();
                if !matches!(value.kind, TokenKind::Str(_) | TokenKind::Number) {
                    return Err(
                        self.unexpected(&format!("a value for '{key}' in the replication map"))
                    );
                }
                self.advance();
                entries.push((key, key_token, value));
                if !self.accept_punct(',') {
                    self.expect_punct('}', "or ',' in the replication map")?;
                    break;
                }
            }
        }

        let mut network_topology = false;
        let mut factor = None;
        let mut others = Vec::new();
        for (key, key_token, value) in &entries {
            match key.as_str() {
                "class" => network_topology = replication_class(value)?,
                "replication_factor" => factor = Some(value),
                _ => others.push((key, key_token)),
            }
        }
        if let Some((key, key_token)) = others.first() {
            return Err(Error::syntax(if network_topology {
                format!(
                    "per-datacenter replication factor '{key}' at {} is not supported: Quarry \
                     has no datacenters; give one 'replication_factor': N instead",
                    key_token.pos
                )
            } else {
                format!(
                    "unknown replication option '{key}' at {}; the replication map takes 'class' \
                     and 'replication_factor', as in {REPLICATION_EXAMPLE}",
                    key_token.pos
                )
            }));
        }
        let Some(value) = factor else {
            return Err(Error::syntax(format!(
                "the replication map at {} has no 'replication_factor'; write {REPLICATION_EXAMPLE}",
                open.pos
            )));
        };
        parse_u32(value, "replication_factor")
    }

    fn drop_keyspace(&mut self) -> Result<Statement> {
        self.advance();
        self.advance();
        let if_exists = self.if_exists()?;
        let (name, _) = self.identifier("keyspace", "a keyspace name after DROP KEYSPACE")?;
        self.expect_end()?;
        Ok(Statement::DropKeyspace { name, if_exists })
    }

    fn create_table(&mut self) -> Result<Statement> {
        self.advance();
        self.advance();
        let if_not_exists = self.if_not_exists()?;
        let name_len = if self.peek_at(1).is_punct('.') { 3 } else { 1 };
        if self.keyword_at(name_len, "AS") {
            return Err(self.create_table_as_without_key(name_len));
        }
        let name = self.table_name("after CREATE TABLE")?;
        self.expect_punct('(', &format!("after {name} to open the column list"))?;

        let mut columns: Vec<(ColumnDef, Position)> = Vec::new();
        let mut keys: Vec<(PrimaryKey, Position)> = Vec::new();
        let close = loop {
            let entry = if self.keyword_at(0, "PRIMARY") && self.keyword_at(1, "KEY") {
                let at = self.advance().pos;
                self.advance();
                keys.push((self.primary_key()?, at));
                "the primary key".to_string()
            } else {
                let (column, at) =
                    self.identifier("column", "a column name or PRIMARY KEY in the column list")?;
                if let Some((_, first)) = columns.iter().find(|(c, _)| c.name == column) {
                    return Err(Error::syntax(format!(
                        "column '{column}' at {at} is already defined at {first} in table \
                         {name}; rename or remove one of them"
                    )));
                }
                let cql_type = self.column_type(&column)?;
                if self.keyword_at(0, "PRIMARY") && self.keyword_at(1, "KEY") {
                    let key_at = self.advance().pos;
                    self.advance();
                    if self.peek().is_punct('(') {
                        return Err(Error::syntax(format!(
                            "expected ',' before PRIMARY KEY at {key_at}: a table's PRIMARY KEY \
                             (...) is an entry of its own in the column list"
                        )));
                    }
                    let key = PrimaryKey {
                        partition: vec![(column.clone(), at)],
                        clustering: Vec::new(),
                    };
                    keys.push((key, key_at));
                }
                columns.push((ColumnDef::new(&column, cql_type), at));
                format!("column '{column}'")
            };
            if self.accept_punct(',') {
                continue;
            }
            if self.peek().is_punct(')') {
                break self.advance().pos;
            }
            return Err(self.unexpected(&format!("',' or ')' after {entry}")));
        };

        if self.peek().is_keyword("WITH") {
            return Err(Error::syntax(format!(
                "table options (WITH at {}) are not supported; remove the WITH clause",
                self.peek().pos
            )));
        }
        let query = if self.peek().is_keyword("AS") {
            Some(self.query_after_as(&format!("CREATE TABLE {name} (...)"))?)
        } else {
            self.expect_end()?;
            None
        };

        let key = match keys.as_slice() {
            [] if query.is_some() => {
                return Err(Error::syntax(format!(
                    "table {name} has no primary key (its column list ends at {close}); a table \
                     filled by a query needs one: write CREATE TABLE {name} (PRIMARY KEY \
                     ((partition_column), clustering_column, ...)) AS SELECT ..."
                )));
            }
            [] => {
                return Err(Error::syntax(format!(
                    "table {name} has no primary key (its column list ends at {close}); add \
                     PRIMARY KEY (partition_column, clustering_column, ...) to the column list, \
                     or write PRIMARY KEY after the type of the partition key column"
                )));
            }
            [(key, _)] => key,
            [(_, first), (_, second), ..] => {
                return Err(Error::syntax(format!(
                    "table {name} has two primary keys, at {first} and at {second}; keep one"
                )));
            }
        };
        if columns.is_empty() && query.is_none() {
            return Err(Error::syntax(format!(
                "table {name} lists no columns (its column list ends at {close}); give each \
                 column and its type, or fill the table from a query: CREATE TABLE {name} \
                 (PRIMARY KEY (...)) AS SELECT ..."
            )));
        }
        let mut in_key = HashSet::new();
        for (column, at) in key.partition.iter().chain(&key.clustering) {
            // Without columns, the query's columns are checked once it is planned.
            if !columns.is_empty() && !columns.iter().any(|(c, _)| c.name == *column) {
                let names: Vec<&str> = columns.iter().map(|(c, _)| c.name.as_str()).collect();
                return Err(Error::syntax(format!(
                    "primary key column '{column}' at {at} is not a column of table {name}; \
                     columns are {}",
                    names.join(", ")
                )));
            }
            if !in_key.insert(column) {
                return Err(Error::syntax(format!(
                    "column '{column}' appears twice in the primary key of table {name} (again \
                     at {at}); list it once"
                )));
            }
        }
        let names = |cols: &[(String, Position)]| -> Vec<String> {
            cols.iter().map(|(c, _)| c.clone()).collect()
        };
        let columns: Vec<ColumnDef> = columns.into_iter().map(|(c, _)| c).collect();
        let Some(query) = query else {
            let def = TableDef::new(
                name.keyspace,
                name.table,
                columns,
                names(&key.partition),
                names(&key.clustering),
            )?;
            return Ok(Statement::CreateTable { def, if_not_exists });
        };
        let (columns, partition_key, clustering) = if columns.is_empty() {
            (columns, names(&key.partition), names(&key.clustering))
        } else {
            // Checks the definition now, as for a table without a query.
            let def = TableDef::new(
                &name.keyspace,
                &name.table,
                columns,
                names(&key.partition),
                names(&key.clustering),
            )?;
            (def.columns, def.partition_key, def.clustering)
        };
        Ok(Statement::CreateTableAs {
            name,
            if_not_exists,
            columns,
            partition_key,
            clustering,
            query,
        })
    }

    /// The error for `CREATE TABLE name AS SELECT`, whose `AS` is `n` tokens ahead: a Quarry
    /// table needs a primary key.
    fn create_table_as_without_key(&self, n: usize) -> Error {
        let name = match n {
            3 => format!("{}.{}", self.peek_at(0).text, self.peek_at(2).text),
            _ => self.peek_at(0).text.to_string(),
        };
        Error::syntax(format!(
            "CREATE TABLE {name} AS (at {}) has no primary key, which every Quarry table needs: \
             give it in parentheses before AS, as in CREATE TABLE {name} (PRIMARY KEY \
             ((partition_column), clustering_column, ...)) AS SELECT ...; the columns and their \
             types come from the query",
            self.peek_at(n).pos
        ))
    }

    fn create_view(&mut self) -> Result<Statement> {
        self.advance();
        let or_replace = self.accept_keyword("OR");
        if or_replace {
            self.expect_keyword("REPLACE", "after CREATE OR")?;
        }
        let temporary = self.accept_keyword("TEMPORARY") || self.accept_keyword("TEMP");
        self.expect_keyword("VIEW", "after CREATE")?;
        let at = self.peek().pos;
        let if_not_exists = self.if_not_exists()?;
        if or_replace && if_not_exists {
            return Err(Error::syntax(format!(
                "CREATE OR REPLACE VIEW cannot also say IF NOT EXISTS (at {at}); keep one"
            )));
        }
        let name = self.object_name("view", "after CREATE VIEW")?;
        if temporary && name.keyspace.is_some() {
            return Err(Error::syntax(format!(
                "temporary view {name} names a keyspace, but a temporary view belongs to the \
                 session: write CREATE TEMPORARY VIEW {} AS ...",
                name.name
            )));
        }
        // `CREATE VIEW v (a, b) AS query` names the query's columns: kept as a query that
        // renames them, which every reader of the view's SQL (DataFusion, DESCRIBE) understands.
        let mut columns = Vec::new();
        if self.accept_punct('(') {
            loop {
                let (column, _) = self.identifier("column", "a column name in the view's list")?;
                columns.push(format!("\"{}\"", column.replace('"', "\"\"")));
                if !self.accept_punct(',') {
                    break;
                }
            }
            self.expect_punct(')', "after the view's column names")?;
        }
        let mut query = self.query_after_as(&format!("CREATE VIEW {name}"))?;
        if !columns.is_empty() {
            query = format!(
                "SELECT * FROM ({query}) AS \"{}\" ({})",
                name.name,
                columns.join(", ")
            );
        }
        Ok(Statement::CreateView {
            name,
            query,
            or_replace,
            temporary,
            if_not_exists,
        })
    }

    fn drop_view(&mut self) -> Result<Statement> {
        self.advance();
        self.advance();
        let if_exists = self.if_exists()?;
        let name = self.object_name("view", "after DROP VIEW")?;
        self.expect_end()?;
        Ok(Statement::DropView { name, if_exists })
    }

    fn use_keyspace(&mut self) -> Result<Statement> {
        self.advance();
        let (keyspace, _) = self.identifier("keyspace", "a keyspace name after USE")?;
        self.expect_end()?;
        Ok(Statement::Use { keyspace })
    }

    /// What follows `PRIMARY KEY`: `(p, c, ...)` or `((p1, p2, ...), c, ...)`.
    fn primary_key(&mut self) -> Result<PrimaryKey> {
        self.expect_punct('(', "after PRIMARY KEY")?;
        let partition = if self.accept_punct('(') {
            let mut columns = vec![self.identifier("column", "a partition key column")?];
            while self.accept_punct(',') {
                columns.push(self.identifier("column", "a partition key column after ','")?);
            }
            self.expect_punct(')', "after the partition key columns")?;
            columns
        } else {
            vec![self.identifier("column", "a partition key column after PRIMARY KEY (")?]
        };
        let mut clustering = Vec::new();
        while self.accept_punct(',') {
            clustering.push(self.identifier("column", "a clustering column after ','")?);
        }
        self.expect_punct(')', "after the primary key columns")?;
        Ok(PrimaryKey {
            partition,
            clustering,
        })
    }

    fn column_type(&mut self, column: &str) -> Result<CqlType> {
        let token = self.peek();
        let is_type_word = matches!(token.kind, TokenKind::Word { quoted: false, .. })
            && !(token.is_keyword("PRIMARY") && self.keyword_at(1, "KEY"));
        if !is_type_word {
            return Err(self.unexpected(&format!("a type for column '{column}'")));
        }
        if self.peek_at(1).is_punct('<') {
            return self.collection_type(column);
        }
        match token.text.parse::<CqlType>() {
            Ok(CqlType::Decimal { .. }) if self.peek_at(1).is_punct('(') => {
                self.advance();
                self.decimal_parameters(column)
            }
            Ok(cql_type) => {
                self.advance();
                Ok(cql_type)
            }
            Err(Error::UnknownType { supported, .. }) => Err(Error::syntax(format!(
                "unknown CQL type {} for column '{column}' at {}; supported types are {supported}",
                token.describe(),
                token.pos
            ))),
            Err(e) => Err(e),
        }
    }

    /// `list<T>`, `set<T>`, `map<K, V>`, `frozen<...>`: the tokens up to the matching `>`, read
    /// as one type name.
    fn collection_type(&mut self, column: &str) -> Result<CqlType> {
        let start = self.peek().pos;
        let kind = self.peek().text;
        if !["list", "set", "map", "frozen"]
            .iter()
            .any(|k| kind.eq_ignore_ascii_case(k))
        {
            return Err(Error::syntax(format!(
                "unknown CQL type '{kind}' for column '{column}' at {start}; supported types are {}",
                CqlType::supported_list()
            )));
        }
        let mut text = String::new();
        let mut depth = 0usize;
        loop {
            let token = self.advance();
            if matches!(token.kind, TokenKind::End) {
                return Err(Error::syntax(format!(
                    "the type of column '{column}' at {start} is missing its closing '>'"
                )));
            }
            text.push_str(token.text);
            if token.is_punct('<') {
                depth += 1;
            } else if token.is_punct('>') {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
        }
        text.parse::<CqlType>().map_err(|e| match e {
            Error::UnknownType { name, supported } => Error::syntax(format!(
                "unknown CQL type '{name}' in the type of column '{column}' at {start}; \
                 supported types are {supported}"
            )),
            other => Error::definition(format!("column '{column}' at {start}: {other}")),
        })
    }

    /// `(precision[, scale])` after `decimal`, as SQL writes it (a Quarry extension of CQL).
    fn decimal_parameters(&mut self, column: &str) -> Result<CqlType> {
        let open = self.expect_punct('(', "after decimal")?;
        let context = format!("in the type of column '{column}'");
        let precision = self.whole_number(&format!("the decimal precision {context}"))?;
        let scale = if self.accept_punct(',') {
            self.whole_number(&format!("the decimal scale {context}"))?
        } else {
            0
        };
        self.expect_punct(')', &format!("after decimal({precision}, {scale}"))?;
        let precision = u8::try_from(precision).unwrap_or(u8::MAX);
        let scale = i8::try_from(scale).unwrap_or(i8::MAX);
        CqlType::decimal(precision, scale)
            .map_err(|e| Error::definition(format!("column '{column}' at {}: {e}", open.pos)))
    }

    fn drop_table(&mut self) -> Result<Statement> {
        self.advance();
        self.advance();
        let if_exists = self.if_exists()?;
        let name = self.table_name("after DROP TABLE")?;
        self.expect_end()?;
        Ok(Statement::DropTable { name, if_exists })
    }

    /// `OPTIMIZE [TABLE] ks.t`.
    fn optimize(&mut self) -> Result<Statement> {
        self.advance();
        let _ = self.accept_keyword("TABLE");
        let name = self.table_name("after OPTIMIZE")?;
        self.expect_end()?;
        Ok(Statement::Optimize { name })
    }

    /// `SHOW KEYSPACES` or `DESCRIBE KEYSPACES`.
    fn list_keyspaces(&mut self) -> Result<Statement> {
        self.advance();
        self.advance();
        self.expect_end()?;
        Ok(Statement::ShowKeyspaces)
    }

    /// `SHOW TABLES [VERBOSE] [IN ks] [VERBOSE]`.
    fn show_tables(&mut self) -> Result<Statement> {
        self.advance();
        self.advance();
        let mut verbose = self.accept_keyword("VERBOSE");
        let keyspace = if self.accept_keyword("IN") || self.accept_keyword("FROM") {
            Some(
                self.identifier("keyspace", "a keyspace name after SHOW TABLES IN")?
                    .0,
            )
        } else {
            None
        };
        verbose |= self.accept_keyword("VERBOSE");
        self.expect_end()?;
        Ok(Statement::ShowTables { keyspace, verbose })
    }

    /// `DESCRIBE TABLES`: every keyspace's tables.
    fn list_tables(&mut self) -> Result<Statement> {
        self.advance();
        self.advance();
        self.expect_end()?;
        Ok(Statement::ShowTables {
            keyspace: None,
            verbose: false,
        })
    }

    fn describe_keyspace(&mut self) -> Result<Statement> {
        self.advance();
        self.advance();
        let (name, _) = self.identifier("keyspace", "a keyspace name after DESCRIBE KEYSPACE")?;
        self.expect_end()?;
        Ok(Statement::DescribeKeyspace { name })
    }

    fn describe_table(&mut self) -> Result<Statement> {
        self.advance();
        let _ = self.accept_keyword("TABLE") || self.accept_keyword("VIEW");
        let name = self.object_name("table", "after DESCRIBE")?;
        self.expect_end()?;
        Ok(Statement::DescribeTable { name })
    }
}

/// A `u32` from a number token, or from a string token holding one (CQL writes
/// `'replication_factor': '3'`).
fn parse_u32(token: &Token<'_>, what: &str) -> Result<u32> {
    let digits = match &token.kind {
        TokenKind::Str(s) => s.trim(),
        _ => token.text,
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::syntax(format!(
            "{what} must be a whole number, found {} at {}",
            token.describe(),
            token.pos
        )));
    }
    digits.parse().map_err(|_| {
        Error::syntax(format!(
            "{what} {} at {} is too large; the largest accepted is {}",
            token.describe(),
            token.pos,
            u32::MAX
        ))
    })
}

/// Reads a replication `'class'`: `true` for NetworkTopologyStrategy, `false` for
/// SimpleStrategy (with or without the `org.apache.cassandra.locator.` prefix).
fn replication_class(value: &Token<'_>) -> Result<bool> {
    let class = match &value.kind {
        TokenKind::Str(s) => s.rsplit('.').next().unwrap_or_default(),
        _ => "",
    };
    match class {
        "SimpleStrategy" => Ok(false),
        "NetworkTopologyStrategy" => Ok(true),
        _ => Err(Error::syntax(format!(
            "replication class {} at {} is not supported; use 'SimpleStrategy' or \
             'NetworkTopologyStrategy'",
            value.describe(),
            value.pos
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(sql: &str) -> Statement {
        parse_statement(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    fn error(sql: &str) -> String {
        match parse_statement(sql) {
            Ok(statement) => panic!("{sql} parsed as {statement:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn assert_contains(message: &str, parts: &[&str]) {
        for part in parts {
            assert!(message.contains(part), "{message:?} lacks {part:?}");
        }
    }

    fn table(sql: &str) -> TableDef {
        match parse(sql) {
            Statement::CreateTable { def, .. } => def,
            other => panic!("{sql} parsed as {other:?}"),
        }
    }

    fn keyspace(sql: &str) -> KeyspaceDef {
        match parse(sql) {
            Statement::CreateKeyspace { def, .. } => def,
            other => panic!("{sql} parsed as {other:?}"),
        }
    }

    #[test]
    fn create_keyspace_takes_defaults_and_options_in_any_order() {
        assert_eq!(
            parse("CREATE KEYSPACE iot"),
            Statement::CreateKeyspace {
                def: KeyspaceDef::new("iot"),
                if_not_exists: false
            }
        );
        let def = keyspace(
            "create keyspace if not exists IoT with NODES = 2 and shards = 16 AND \
             replication_factor = 3;",
        );
        assert_eq!(
            def,
            KeyspaceDef {
                name: "iot".into(),
                shards: 16,
                replication_factor: 3,
                nodes: Some(2),
            }
        );
        assert!(matches!(
            parse("CREATE KEYSPACE IF NOT EXISTS iot"),
            Statement::CreateKeyspace {
                if_not_exists: true,
                ..
            }
        ));
    }

    #[test]
    fn create_keyspace_reads_durable_writes_as_describe_prints_it() {
        let def = keyspace(
            "CREATE KEYSPACE iot WITH replication = {'class': 'SimpleStrategy', \
             'replication_factor': '1'}  AND durable_writes = true;",
        );
        assert_eq!(def.replication_factor, 1);
        let e = error("CREATE KEYSPACE iot WITH durable_writes = false");
        assert_contains(
            &e,
            &[
                "durable_writes = false at line 1 column 43",
                "leave the option out",
            ],
        );
        let e = error("CREATE KEYSPACE iot WITH durable_writes = 1");
        assert_contains(&e, &["true or false for durable_writes"]);
    }

    #[test]
    fn create_keyspace_accepts_cql_replication_maps() {
        let def = keyspace(
            "CREATE KEYSPACE iot WITH replication = {'class': 'SimpleStrategy', \
             'replication_factor': 3} AND shards = 64",
        );
        assert_eq!((def.replication_factor, def.shards), (3, 64));
        let def = keyspace(
            "CREATE KEYSPACE iot WITH replication = {'class': \
             'org.apache.cassandra.locator.NetworkTopologyStrategy', 'replication_factor': '2'}",
        );
        assert_eq!(def.replication_factor, 2);
    }

    #[test]
    fn create_keyspace_errors_name_the_fix() {
        let e = error("CREATE KEYSPACE iot WITH shard = 8");
        assert_contains(
            &e,
            &[
                "unknown keyspace option 'shard' at line 1 column 26",
                "shards, replication_factor, nodes, replication and durable_writes",
            ],
        );
        let e = error("CREATE KEYSPACE iot WITH shards = 8 AND shards = 9");
        assert_contains(&e, &["'shards' at line 1 column 41", "give it once"]);
        let e = error(
            "CREATE KEYSPACE iot WITH replication_factor = 2 AND replication = \
             {'class': 'SimpleStrategy', 'replication_factor': 3}",
        );
        assert_contains(&e, &["already set by 'replication_factor'"]);
        let e = error(
            "CREATE KEYSPACE iot WITH replication = {'class': 'NetworkTopologyStrategy', \
             'dc1': 3}",
        );
        assert_contains(&e, &["per-datacenter", "'dc1'", "'replication_factor': N"]);
        let e = error("CREATE KEYSPACE iot WITH replication = {'class': 'LocalStrategy'}");
        assert_contains(&e, &["'LocalStrategy'", "SimpleStrategy"]);
        let e = error("CREATE KEYSPACE iot WITH replication = {'class': 'SimpleStrategy'}");
        assert_contains(&e, &["no 'replication_factor'"]);
        let e = error("CREATE KEYSPACE iot WITH shards = -1");
        assert_contains(&e, &["expected a whole number for shards", "found '-'"]);
        let e = error("CREATE KEYSPACE iot WITH shards = 1.5");
        assert_contains(&e, &["shards must be a whole number, found '1.5'"]);
        let e = error("CREATE KEYSPACE iot WITH shards = 0");
        assert_contains(&e, &["shards must be between 1 and"]);
        let e = error("CREATE KEYSPACE \"IoT\"");
        assert_contains(
            &e,
            &["'IoT' is not a valid keyspace name", "line 1 column 17"],
        );
        let e = error("CREATE KEYSPACE IF EXISTS iot");
        assert_contains(
            &e,
            &["expected NOT after IF at line 1 column 20, found 'EXISTS'"],
        );
    }

    #[test]
    fn drop_keyspace() {
        assert_eq!(
            parse("drop keyspace IOT;"),
            Statement::DropKeyspace {
                name: "iot".into(),
                if_exists: false
            }
        );
        assert_eq!(
            parse("DROP KEYSPACE IF EXISTS \"iot\""),
            Statement::DropKeyspace {
                name: "iot".into(),
                if_exists: true
            }
        );
    }

    #[test]
    fn create_table_follows_cql_primary_keys() {
        let def = table(
            "CREATE TABLE iot.readings (
                device_id bigint,
                ts timestamp,
                sensor text,
                value double,
                PRIMARY KEY (device_id, ts, sensor)
            );",
        );
        assert_eq!(def.table_name(), TableName::new("iot", "readings"));
        assert_eq!(def.partition_key, vec!["device_id"]);
        assert_eq!(def.clustering, vec!["ts", "sensor"]);
        assert_eq!(
            def.column_names(),
            vec!["device_id", "ts", "sensor", "value"]
        );
        assert_eq!(def.columns[3].cql_type, CqlType::Double);

        let def =
            table("CREATE TABLE iot.t (a int, b text, c uuid, d blob, PRIMARY KEY ((a, b), c))");
        assert_eq!(def.partition_key, vec!["a", "b"]);
        assert_eq!(def.clustering, vec!["c"]);

        let def = table("CREATE TABLE iot.t (a int, PRIMARY KEY ((a)))");
        assert_eq!(def.partition_key, vec!["a"]);
        assert!(def.clustering.is_empty());
    }

    #[test]
    fn decimals_take_precision_and_scale() {
        let def = table(
            "CREATE TABLE tpch.t (k bigint PRIMARY KEY, price DECIMAL(15, 2), qty decimal(9), \
             plain decimal)",
        );
        assert_eq!(def.columns[1].cql_type, CqlType::decimal(15, 2).unwrap());
        assert_eq!(def.columns[2].cql_type, CqlType::decimal(9, 0).unwrap());
        assert_eq!(def.columns[3].cql_type, CqlType::DECIMAL);
        assert!(
            def.to_cql().contains("price decimal(15, 2),"),
            "{}",
            def.to_cql()
        );
        for (sql, expected) in [
            (
                "CREATE TABLE ks.t (k bigint PRIMARY KEY, v decimal(40, 2))",
                "column 'v' at line 1 column 51: decimal(40, 2) has precision 40",
            ),
            (
                "CREATE TABLE ks.t (k bigint PRIMARY KEY, v decimal(4, 6))",
                "decimal(4, 6) has scale 6",
            ),
            (
                "CREATE TABLE ks.t (k bigint PRIMARY KEY, v decimal(x))",
                "expected a whole number for the decimal precision in the type of column 'v'",
            ),
            (
                "CREATE TABLE ks.t (k bigint PRIMARY KEY, v decimal(10, 2)",
                "expected ',' or ')' after column 'v' at line 1 column 58",
            ),
        ] {
            let err = parse_statement(sql).unwrap_err().to_string();
            assert!(err.contains(expected), "{sql}: {err}");
        }
    }

    #[test]
    fn create_table_accepts_inline_keys_case_and_quoting() {
        let sql = "Create Table If Not Exists IoT.\"devices\" (\n\
                   \"id\" UUID Primary Key, -- the device\n\
                   Name VARCHAR /* shown in the UI */, \"seen_at\" TimeStamp\n)";
        match parse(sql) {
            Statement::CreateTable { def, if_not_exists } => {
                assert!(if_not_exists);
                assert_eq!(def.table_name(), TableName::new("iot", "devices"));
                assert_eq!(def.partition_key, vec!["id"]);
                assert!(def.clustering.is_empty());
                assert_eq!(def.column_names(), vec!["id", "name", "seen_at"]);
                assert_eq!(def.columns[1].cql_type, CqlType::Text);
            }
            other => panic!("{other:?}"),
        }
        let e = error("CREATE TABLE iot.t (\"Id\" int PRIMARY KEY)");
        assert_contains(&e, &["'Id' is not a valid column name", "line 1 column 21"]);
    }

    #[test]
    fn create_table_round_trips_through_to_cql() {
        for sql in [
            "CREATE TABLE iot.readings (device_id bigint, ts timestamp, sensor text, \
             value double, PRIMARY KEY (device_id, ts, sensor))",
            "CREATE TABLE iot.t (a int, b text, c date, PRIMARY KEY ((a, b), c))",
            "CREATE TABLE iot.devices (id bigint PRIMARY KEY, tags map<text, text>, \
             readings list<double>, owners frozen<set<uuid>>)",
        ] {
            let def = table(sql);
            assert_eq!(table(&def.to_cql()), def);
        }
    }

    #[test]
    fn create_table_errors_say_where_and_how_to_fix() {
        let e = error("CREATE TABLE iot.t (a int, b varint2, PRIMARY KEY (a))");
        assert_contains(
            &e,
            &[
                "unknown CQL type 'varint2' for column 'b' at line 1 column 30",
                "supported types are boolean",
            ],
        );
        let e = error("CREATE TABLE iot.t (a int, b text)");
        assert_contains(&e, &["table iot.t has no primary key", "PRIMARY KEY ("]);
        let e = error("CREATE TABLE iot.t (a int PRIMARY KEY, b text, PRIMARY KEY (b))");
        assert_contains(
            &e,
            &[
                "two primary keys, at line 1 column 27 and at line 1 column 48",
                "keep one",
            ],
        );
        let e = error("CREATE TABLE readings (a int PRIMARY KEY)");
        assert_contains(
            &e,
            &[
                "'readings' at line 1 column 14 has no keyspace",
                "write keyspace.table",
            ],
        );
        let e = error("CREATE TABLE iot.t (a int PRIMARY KEY, b list<text)");
        assert_contains(
            &e,
            &["column 'b' at line 1 column 42", "missing its closing '>'"],
        );
        let e = error("CREATE TABLE iot.t (a int PRIMARY KEY, b map<text, list<int>>)");
        assert_contains(&e, &["column 'b'", "collections of collections"]);
        let e = error("CREATE TABLE iot.t (a int PRIMARY KEY, b set<varint>)");
        assert_contains(&e, &["unknown CQL type 'varint'", "column 'b'"]);
        let e = error("CREATE TABLE iot.t (a set<int> PRIMARY KEY)");
        assert_contains(&e, &["primary-key column 'a' is a set<int>"]);
        let e = error("CREATE TABLE a.b.c (x int PRIMARY KEY)");
        assert_contains(&e, &["too many parts"]);
        let e = error("CREATE TABLE iot.t (a int, PRIMARY KEY (a, z))");
        assert_contains(
            &e,
            &[
                "primary key column 'z' at line 1 column 44",
                "columns are a",
            ],
        );
        let e = error("CREATE TABLE iot.t (a int, PRIMARY KEY (a, a))");
        assert_contains(&e, &["'a' appears twice in the primary key"]);
        let e = error("CREATE TABLE iot.t (a int, a text, PRIMARY KEY (a))");
        assert_contains(&e, &["column 'a' at line 1 column 28 is already defined"]);
        let e = error("CREATE TABLE iot.t (a int PRIMARY KEY) WITH CLUSTERING ORDER BY (a DESC)");
        assert_contains(&e, &["table options", "line 1 column 40", "not supported"]);
        let e = error("CREATE TABLE iot.t (a int PRIMARY KEY) garbage");
        assert_eq!(
            e,
            "expected the end of the statement at line 1 column 40, found 'garbage'"
        );
        let e = error("CREATE TABLE iot.t (a int PRIMARY KEY); DROP TABLE iot.t");
        assert_contains(
            &e,
            &[
                "found 'DROP' at line 1 column 41",
                "one statement at a time",
            ],
        );
        let e = error("CREATE TABLE iot.t (a int, PRIMARY KEY (a),)");
        assert_contains(&e, &["expected a column name or PRIMARY KEY", "found ')'"]);
        let e = error("CREATE TABLE iot.t (a int)) ");
        assert_contains(&e, &["expected the end of the statement", "found ')'"]);
        let e = error("CREATE TABLE iot.t (a int, PRIMARY KEY ((a), b)");
        assert_contains(
            &e,
            &["expected ',' or ')' after the primary key", "the end"],
        );
        let e = error("CREATE TABLE iot.t (a int, b text, PRIMARY KEY ()");
        assert_contains(&e, &["expected a partition key column after PRIMARY KEY ("]);
        let e = error("CREATE TABLE iot.t (a, b int)");
        assert_contains(
            &e,
            &["expected a type for column 'a' at line 1 column 22, found ','"],
        );
        let e = error("CREATE TABLE iot.t (a tuple<int, int> PRIMARY KEY)");
        assert_contains(&e, &["unknown CQL type 'tuple'"]);
        let e = error("CREATE TABLE iot.t (a int 'x')");
        assert_contains(&e, &["after column 'a'", "found string 'x'"]);
        let e = error("CREATE TABLE iot.t (a int, b text PRIMARY KEY (a))");
        assert_contains(&e, &["expected ',' before PRIMARY KEY at line 1 column 35"]);
    }

    #[test]
    fn errors_give_line_and_column_in_multi_line_statements() {
        let e = error("CREATE TABLE iot.t (\n    a int,\n    b text\n    PRIMARY KEY (a)\n)");
        assert_eq!(
            e,
            "expected ',' before PRIMARY KEY at line 4 column 5: a table's PRIMARY KEY (...) \
             is an entry of its own in the column list"
        );
        let e = error("CREATE TABLE iot.t (\n    a int,\n    b text;\n)");
        assert_eq!(
            e,
            "expected ',' or ')' after column 'b' at line 3 column 11, found ';'"
        );
    }

    #[test]
    fn create_table_as_select_needs_a_primary_key_before_as() {
        for sql in [
            "CREATE TABLE iot.t AS SELECT 1",
            "create table t as select 1",
            "CREATE TABLE IF NOT EXISTS iot.t AS SELECT 1",
        ] {
            assert_contains(
                &error(sql),
                &[
                    "has no primary key",
                    "(PRIMARY KEY ((partition_column)",
                    "AS SELECT",
                ],
            );
        }
        assert_contains(
            &error("CREATE TABLE iot.t (a int, b int) AS SELECT 1, 2"),
            &[
                "table iot.t has no primary key",
                "a table filled by a query needs one",
            ],
        );
        assert_contains(
            &error("CREATE TABLE iot.t (PRIMARY KEY (a))"),
            &["lists no columns", "AS SELECT"],
        );
        assert_contains(
            &error("CREATE TABLE iot.t (PRIMARY KEY (a)) AS"),
            &["expected a query after AS at line 1 column 38"],
        );
    }

    #[test]
    fn create_table_as_select_takes_the_key_and_optionally_the_columns() {
        let sql = "CREATE TABLE IF NOT EXISTS iot.hourly (PRIMARY KEY ((device_id), hour)) AS\n\
                   SELECT device_id, date_trunc('hour', ts) AS hour FROM readings;";
        assert_eq!(
            parse(sql),
            Statement::CreateTableAs {
                name: TableName::new("iot", "hourly"),
                if_not_exists: true,
                columns: Vec::new(),
                partition_key: vec!["device_id".into()],
                clustering: vec!["hour".into()],
                query: "SELECT device_id, date_trunc('hour', ts) AS hour FROM readings".into(),
            }
        );
        match parse("CREATE TABLE iot.t (a int PRIMARY KEY, b text) AS SELECT 1, 'x'") {
            Statement::CreateTableAs {
                columns,
                partition_key,
                query,
                ..
            } => {
                assert_eq!(columns.len(), 2);
                assert_eq!(columns[1].cql_type, CqlType::Text);
                assert_eq!(partition_key, vec!["a"]);
                assert_eq!(query, "SELECT 1, 'x'");
            }
            other => panic!("{other:?}"),
        }
        // With columns, the key is checked against them at once.
        assert_contains(
            &error("CREATE TABLE iot.t (a int, PRIMARY KEY (b)) AS SELECT 1"),
            &["primary key column 'b'", "columns are a"],
        );
        assert_contains(
            &error("CREATE TABLE iot.t (PRIMARY KEY (a, a)) AS SELECT 1 AS a"),
            &["'a' appears twice in the primary key"],
        );
    }

    #[test]
    fn views_keep_their_query_as_written() {
        assert_eq!(
            parse("create view IOT.Hot as\n  SELECT *  FROM readings WHERE value > 30 ;"),
            Statement::CreateView {
                name: ObjectName {
                    keyspace: Some("iot".into()),
                    name: "hot".into()
                },
                query: "SELECT *  FROM readings WHERE value > 30".into(),
                or_replace: false,
                temporary: false,
                if_not_exists: false,
            }
        );
        assert_eq!(
            parse("CREATE OR REPLACE TEMP VIEW recent AS WITH x AS (SELECT 1) SELECT * FROM x"),
            Statement::CreateView {
                name: ObjectName {
                    keyspace: None,
                    name: "recent".into()
                },
                query: "WITH x AS (SELECT 1) SELECT * FROM x".into(),
                or_replace: true,
                temporary: true,
                if_not_exists: false,
            }
        );
        assert!(matches!(
            parse("CREATE TEMPORARY VIEW IF NOT EXISTS v AS SELECT 1"),
            Statement::CreateView {
                temporary: true,
                if_not_exists: true,
                ..
            }
        ));
        // A column list renames the query's columns.
        assert!(matches!(
            parse("CREATE VIEW ks.rev (supplier_no, Total) AS SELECT a, sum(b) FROM t GROUP BY a"),
            Statement::CreateView { query, .. } if query == "SELECT * FROM (SELECT a, sum(b) FROM t GROUP BY a) AS \"rev\" (\"supplier_no\", \"total\")"
        ));
        // The query is not this parser's business: DataFusion reads it.
        assert!(matches!(
            parse("CREATE VIEW ks.v AS SELECT 'it''s' €"),
            Statement::CreateView { query, .. } if query == "SELECT 'it''s' €"
        ));
        assert_eq!(
            parse("DROP VIEW IF EXISTS ks.v"),
            Statement::DropView {
                name: ObjectName {
                    keyspace: Some("ks".into()),
                    name: "v".into()
                },
                if_exists: true
            }
        );
        assert_contains(
            &error("CREATE TEMPORARY VIEW ks.v AS SELECT 1"),
            &["belongs to the session", "CREATE TEMPORARY VIEW v AS"],
        );
        assert_contains(
            &error("CREATE VIEW ks.v (a, ) AS SELECT 1, 2"),
            &["a column name in the view's list"],
        );
        assert_contains(
            &error("CREATE OR REPLACE VIEW IF NOT EXISTS v AS SELECT 1"),
            &["keep one"],
        );
        assert_contains(
            &error("CREATE VIEW ks.v SELECT 1"),
            &["expected AS and a query after CREATE VIEW ks.v at line 1 column 18"],
        );
        assert_contains(
            &error("CREATE VIEW ks.v AS ;"),
            &["expected a query after AS"],
        );
        assert_contains(&error("CREATE VIEW a.b.c AS SELECT 1"), &["too many parts"]);
    }

    #[test]
    fn use_sets_the_keyspace_of_bare_table_names() {
        assert_eq!(
            parse("use IoT;"),
            Statement::Use {
                keyspace: "iot".into()
            }
        );
        assert_contains(&error("USE"), &["expected a keyspace name after USE"]);
        assert_contains(&error("USE a b"), &["expected the end of the statement"]);
        let in_iot = |sql| parse_statement_in(sql, Some("iot")).unwrap();
        assert!(matches!(
            in_iot("CREATE TABLE t (a int PRIMARY KEY)"),
            Statement::CreateTable { def, .. } if def.table_name() == TableName::new("iot", "t")
        ));
        assert_eq!(
            in_iot("DROP TABLE IF EXISTS t"),
            Statement::DropTable {
                name: TableName::new("iot", "t"),
                if_exists: true
            }
        );
        // A name with its own keyspace keeps it.
        assert_eq!(
            in_iot("DROP TABLE other.t"),
            Statement::DropTable {
                name: TableName::new("other", "t"),
                if_exists: false
            }
        );
        assert!(matches!(
            in_iot("CREATE TABLE t (PRIMARY KEY (a)) AS SELECT 1 AS a"),
            Statement::CreateTableAs { name, .. } if name == TableName::new("iot", "t")
        ));
        assert_contains(
            &error("DROP TABLE t"),
            &["has no keyspace", "write keyspace.table", "USE keyspace"],
        );
    }

    #[test]
    fn lexer_errors_are_reported_for_ddl_only() {
        let e = error("CREATE KEYSPACE iot WITH replication = {'class: 3}");
        assert_contains(&e, &["unterminated string starting at line 1 column 41"]);
        let e = error("DROP TABLE iot.t /* never closed");
        assert_contains(&e, &["unterminated comment starting at line 1 column 18"]);
        let e = error("DROP KEYSPACE iot €");
        assert_contains(&e, &["unexpected character '€' at line 1 column 19"]);
        assert_eq!(
            parse("SELECT 'never closed"),
            Statement::Sql("SELECT 'never closed".into())
        );
    }

    #[test]
    fn drop_table() {
        assert_eq!(
            parse("DROP TABLE iot.readings"),
            Statement::DropTable {
                name: TableName::new("iot", "readings"),
                if_exists: false
            }
        );
        assert_eq!(
            parse("drop table if exists IOT.Readings;"),
            Statement::DropTable {
                name: TableName::new("iot", "readings"),
                if_exists: true
            }
        );
        assert_contains(&error("DROP TABLE readings"), &["write keyspace.table"]);
    }

    #[test]
    fn optimize() {
        let readings = Statement::Optimize {
            name: TableName::new("iot", "readings"),
        };
        assert_eq!(parse("OPTIMIZE iot.readings"), readings);
        assert_eq!(parse("optimize table IOT.Readings;"), readings);
        assert_eq!(
            parse_statement_in("OPTIMIZE readings", Some("iot")).unwrap(),
            readings
        );
        assert_contains(&error("OPTIMIZE readings"), &["write keyspace.table"]);
        assert_contains(
            &error("OPTIMIZE iot.readings ZORDER BY (sensor)"),
            &["ZORDER", "line 1 column 23"],
        );
    }

    #[test]
    fn show_and_describe() {
        assert_eq!(parse("SHOW KEYSPACES"), Statement::ShowKeyspaces);
        assert_eq!(parse("describe keyspaces;"), Statement::ShowKeyspaces);
        let all = Statement::ShowTables {
            keyspace: None,
            verbose: false,
        };
        assert_eq!(parse("show tables"), all);
        assert_eq!(parse("DESC TABLES"), all);
        for sql in ["SHOW TABLES IN iot", "show tables from IOT;"] {
            assert_eq!(
                parse(sql),
                Statement::ShowTables {
                    keyspace: Some("iot".into()),
                    verbose: false,
                }
            );
        }
        for sql in ["SHOW TABLES VERBOSE IN iot", "show tables in iot verbose"] {
            assert_eq!(
                parse(sql),
                Statement::ShowTables {
                    keyspace: Some("iot".into()),
                    verbose: true,
                }
            );
        }
        assert_eq!(
            parse("SHOW TABLES VERBOSE"),
            Statement::ShowTables {
                keyspace: None,
                verbose: true,
            }
        );
        assert_eq!(
            parse("DESCRIBE KEYSPACE iot"),
            Statement::DescribeKeyspace { name: "iot".into() }
        );
        let readings = Statement::DescribeTable {
            name: ObjectName {
                keyspace: Some("iot".into()),
                name: "readings".into(),
            },
        };
        for sql in [
            "DESCRIBE TABLE iot.readings",
            "desc table iot.readings;",
            "DESCRIBE iot.readings",
            "DESC Iot.Readings ;",
            "DESCRIBE VIEW iot.readings",
        ] {
            assert_eq!(parse(sql), readings, "{sql}");
        }
        // A bare name is the session's to resolve: a temporary view, or a table of its keyspace.
        let bare = Statement::DescribeTable {
            name: ObjectName {
                keyspace: None,
                name: "readings".into(),
            },
        };
        for sql in ["DESCRIBE TABLE readings", "desc Readings;"] {
            assert_eq!(parse(sql), bare, "{sql}");
        }
        assert_eq!(
            parse("DESCRIBE SELECT 1"),
            Statement::Sql("DESCRIBE SELECT 1".into())
        );
        assert_contains(
            &error("DESCRIBE KEYSPACE"),
            &[
                "expected a keyspace name after DESCRIBE KEYSPACE",
                "the end of the statement",
            ],
        );
        assert_contains(
            &error("SHOW TABLES LIKE 'r%'"),
            &["expected the end of the statement", "found 'LIKE'"],
        );
    }

    #[test]
    fn everything_else_passes_through_as_written() {
        for (sql, expected) in [
            (
                "SELECT * FROM iot.readings WHERE ts > now();",
                "SELECT * FROM iot.readings WHERE ts > now()",
            ),
            (
                "  insert into iot.readings values (1, 'a;b') ",
                "insert into iot.readings values (1, 'a;b')",
            ),
            ("EXPLAIN SELECT 1", "EXPLAIN SELECT 1"),
            (
                "EXPLAIN CREATE TABLE iot.t (a int)",
                "EXPLAIN CREATE TABLE iot.t (a int)",
            ),
            (
                "SET datafusion.execution.batch_size = 1024",
                "SET datafusion.execution.batch_size = 1024",
            ),
            (
                "WITH x AS (SELECT 1) SELECT * FROM x",
                "WITH x AS (SELECT 1) SELECT * FROM x",
            ),
            (
                "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION 'x.csv'",
                "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION 'x.csv'",
            ),
            (
                "SHOW COLUMNS FROM iot.readings",
                "SHOW COLUMNS FROM iot.readings",
            ),
            ("-- keep me\nSELECT $1::int", "-- keep me\nSELECT $1::int"),
            (
                "CREATE MATERIALIZED VIEW v AS SELECT 1",
                "CREATE MATERIALIZED VIEW v AS SELECT 1",
            ),
            ("\"CREATE\" KEYSPACE x", "\"CREATE\" KEYSPACE x"),
        ] {
            assert_eq!(parse(sql), Statement::Sql(expected.into()), "{sql}");
        }
    }

    #[test]
    fn comments_are_skipped_in_ddl() {
        assert_eq!(
            parse("-- make it\n/* a /* nested */ comment */ SHOW -- here\n KEYSPACES"),
            Statement::ShowKeyspaces
        );
    }

    #[test]
    fn empty_statements_are_errors() {
        for sql in ["", "  ;  ", "-- only a comment"] {
            assert_contains(&error(sql), &["the statement is empty"]);
        }
    }

    #[test]
    fn a_split_script_parses_statement_by_statement() {
        let script = "CREATE KEYSPACE iot WITH shards = 8; -- first; the keyspace\n\
                      CREATE TABLE iot.t (k text PRIMARY KEY, note text);\n\
                      INSERT INTO iot.t VALUES ('a;b', 'it''s; fine');\n\
                      /* done; */";
        let statements: Vec<Statement> =
            split_statements(script).iter().map(|s| parse(s)).collect();
        assert_eq!(statements.len(), 3);
        assert!(matches!(&statements[0], Statement::CreateKeyspace { def, .. } if def.shards == 8));
        assert!(matches!(&statements[1], Statement::CreateTable { def, .. } if def.name == "t"));
        assert_eq!(
            statements[2],
            Statement::Sql("INSERT INTO iot.t VALUES ('a;b', 'it''s; fine')".into())
        );
    }
}
