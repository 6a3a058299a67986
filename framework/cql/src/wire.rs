//! The CQL native protocol, version 4: frames, the notation's primitive types, request bodies
//! and response bodies.
//!
//! ```text
//!   frame: version(1) flags(1) stream(2) opcode(1) length(4) body(length)
//!   [short] u16  [int] i32  [long] i64  [string] short+UTF-8  [long string] int+UTF-8
//!   [bytes] int+bytes (negative: null)  [value] as bytes, -2: not set  [short bytes] short+bytes
//! ```
//!
//! Requests are decoded into owned structs; responses are built with [`Body`]. Everything here
//! is bounds-checked: a malformed body is a [`WireError`], never a panic.

use std::fmt;

/// The protocol version served; responses carry it with the direction bit set.
pub const VERSION: u8 = 0x04;
/// The largest body accepted, as Cassandra's default `native_transport_max_frame_size`.
pub const MAX_BODY: usize = 256 << 20;
/// Bytes in a frame header.
pub const HEADER: usize = 9;

/// Frame flag: the body starts with a custom payload (a bytes map).
pub const FLAG_CUSTOM_PAYLOAD: u8 = 0x04;

pub mod opcode {
    pub const ERROR: u8 = 0x00;
    pub const STARTUP: u8 = 0x01;
    pub const READY: u8 = 0x02;
    pub const AUTHENTICATE: u8 = 0x03;
    pub const OPTIONS: u8 = 0x05;
    pub const SUPPORTED: u8 = 0x06;
    pub const QUERY: u8 = 0x07;
    pub const RESULT: u8 = 0x08;
    pub const PREPARE: u8 = 0x09;
    pub const EXECUTE: u8 = 0x0A;
    pub const REGISTER: u8 = 0x0B;
    pub const EVENT: u8 = 0x0C;
    pub const BATCH: u8 = 0x0D;
    pub const AUTH_RESPONSE: u8 = 0x0F;
}

/// Error codes of an ERROR response.
pub mod code {
    pub const SERVER: i32 = 0x0000;
    pub const PROTOCOL: i32 = 0x000A;
    pub const OVERLOADED: i32 = 0x1001;
    pub const SYNTAX: i32 = 0x2000;
    pub const UNAUTHORIZED: i32 = 0x2100;
    pub const INVALID: i32 = 0x2200;
    pub const CONFIG: i32 = 0x2300;
    pub const ALREADY_EXISTS: i32 = 0x2400;
    pub const UNPREPARED: i32 = 0x2500;
}

/// A request body that does not follow the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError(pub String);

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub type WireResult<T> = Result<T, WireError>;

/// A frame header.
#[derive(Debug, Clone, Copy)]
pub struct Header {
    pub version: u8,
    pub flags: u8,
    pub stream: i16,
    pub opcode: u8,
    pub length: usize,
}

impl Header {
    pub fn parse(bytes: &[u8; HEADER]) -> Header {
        Header {
            version: bytes[0],
            flags: bytes[1],
            stream: i16::from_be_bytes([bytes[2], bytes[3]]),
            opcode: bytes[4],
            length: u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) as usize,
        }
    }
}

/// A whole response frame for `stream`.
pub fn response_frame(version: u8, stream: i16, opcode: u8, body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(HEADER + body.len());
    frame.push(0x80 | version);
    frame.push(0);
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.push(opcode);
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(body);
    frame
}

/// Reads the notation's types from a request body.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn take(&mut self, n: usize, what: &str) -> WireResult<&'a [u8]> {
        if self.buf.len() < n {
            return Err(WireError(format!(
                "the body ends inside {what} ({n} bytes needed, {} left)",
                self.buf.len()
            )));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub fn byte(&mut self) -> WireResult<u8> {
        Ok(self.take(1, "a byte")?[0])
    }

    pub fn short(&mut self) -> WireResult<u16> {
        let b = self.take(2, "a [short]")?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub fn int(&mut self) -> WireResult<i32> {
        let b = self.take(4, "an [int]")?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn long(&mut self) -> WireResult<i64> {
        let b = self.take(8, "a [long]")?;
        let mut a = [0; 8];
        a.copy_from_slice(b);
        Ok(i64::from_be_bytes(a))
    }

    fn utf8(bytes: &[u8], what: &str) -> WireResult<String> {
        String::from_utf8(bytes.to_vec()).map_err(|_| WireError(format!("{what} is not UTF-8")))
    }

    pub fn string(&mut self) -> WireResult<String> {
        let n = self.short()? as usize;
        Self::utf8(self.take(n, "a [string]")?, "a [string]")
    }

    pub fn long_string(&mut self) -> WireResult<String> {
        let n = self.int()?;
        let n = usize::try_from(n).map_err(|_| WireError("a negative [long string]".into()))?;
        Self::utf8(self.take(n, "a [long string]")?, "a [long string]")
    }

    /// `[bytes]`: `None` for null.
    pub fn bytes(&mut self) -> WireResult<Option<Vec<u8>>> {
        let n = self.int()?;
        if n < 0 {
            return Ok(None);
        }
        Ok(Some(self.take(n as usize, "a [bytes]")?.to_vec()))
    }

    /// `[value]`: a bound value, null, or not set.
    pub fn value(&mut self) -> WireResult<Value> {
        let n = self.int()?;
        Ok(match n {
            -2 => Value::NotSet,
            n if n < 0 => Value::Null,
            n => Value::Set(self.take(n as usize, "a [value]")?.to_vec()),
        })
    }

    pub fn short_bytes(&mut self) -> WireResult<Vec<u8>> {
        let n = self.short()? as usize;
        Ok(self.take(n, "a [short bytes]")?.to_vec())
    }

    pub fn string_map(&mut self) -> WireResult<Vec<(String, String)>> {
        let n = self.short()?;
        (0..n)
            .map(|_| Ok((self.string()?, self.string()?)))
            .collect()
    }

    pub fn string_list(&mut self) -> WireResult<Vec<String>> {
        let n = self.short()?;
        (0..n).map(|_| self.string()).collect()
    }

    /// Skips a `[bytes map]` (a custom payload).
    pub fn skip_bytes_map(&mut self) -> WireResult<()> {
        let n = self.short()?;
        for _ in 0..n {
            self.string()?;
            self.bytes()?;
        }
        Ok(())
    }
}

/// A bound value of a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Set(Vec<u8>),
    Null,
    /// Protocol v4's "unset": leave the column alone.
    NotSet,
}

/// The query parameters of QUERY and EXECUTE.
#[derive(Debug, Clone, Default)]
pub struct QueryParameters {
    pub consistency: u16,
    pub values: Vec<Value>,
    /// Names of the values, when the client sent them by name.
    pub names: Option<Vec<String>>,
    pub skip_metadata: bool,
    pub page_size: Option<i32>,
    pub paging_state: Option<Vec<u8>>,
}

impl QueryParameters {
    pub fn read(r: &mut Reader<'_>) -> WireResult<Self> {
        let consistency = r.short()?;
        let flags = r.byte()?;
        let mut p = QueryParameters {
            consistency,
            ..QueryParameters::default()
        };
        if flags & 0x01 != 0 {
            let n = r.short()?;
            let named = flags & 0x40 != 0;
            let mut names = Vec::new();
            for _ in 0..n {
                if named {
                    names.push(r.string()?);
                }
                p.values.push(r.value()?);
            }
            if named {
                p.names = Some(names);
            }
        }
        p.skip_metadata = flags & 0x02 != 0;
        if flags & 0x04 != 0 {
            p.page_size = Some(r.int()?).filter(|&n| n > 0);
        }
        if flags & 0x08 != 0 {
            p.paging_state = r.bytes()?;
        }
        if flags & 0x10 != 0 {
            r.short()?;
        }
        if flags & 0x20 != 0 {
            r.long()?;
        }
        Ok(p)
    }
}

/// One statement of a BATCH.
#[derive(Debug, Clone)]
pub enum BatchStatement {
    Query(String),
    Prepared(Vec<u8>),
}

/// A BATCH request.
#[derive(Debug, Clone)]
pub struct BatchRequest {
    /// 0 logged, 1 unlogged, 2 counter.
    pub kind: u8,
    pub statements: Vec<(BatchStatement, Vec<Value>)>,
    pub consistency: u16,
}

impl BatchRequest {
    pub fn read(r: &mut Reader<'_>) -> WireResult<Self> {
        let kind = r.byte()?;
        let n = r.short()?;
        let mut statements = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let statement = match r.byte()? {
                0 => BatchStatement::Query(r.long_string()?),
                1 => BatchStatement::Prepared(r.short_bytes()?),
                other => {
                    return Err(WireError(format!(
                        "batch statement kind {other} (expected 0 or 1)"
                    )));
                }
            };
            let count = r.short()?;
            let values = (0..count).map(|_| r.value()).collect::<WireResult<_>>()?;
            statements.push((statement, values));
        }
        let consistency = r.short()?;
        let flags = r.byte()?;
        if flags & 0x10 != 0 {
            r.short()?;
        }
        if flags & 0x20 != 0 {
            r.long()?;
        }
        Ok(BatchRequest {
            kind,
            statements,
            consistency,
        })
    }
}

/// A response body under construction.
#[derive(Debug, Default)]
pub struct Body(pub Vec<u8>);

impl Body {
    pub fn new() -> Self {
        Body(Vec::new())
    }

    pub fn short(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn int(&mut self, v: i32) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn string(&mut self, s: &str) -> &mut Self {
        // [string]s are names and messages; cut (on a character boundary) rather than overflow.
        let mut end = s.len().min(u16::MAX as usize);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.short(end as u16);
        self.0.extend_from_slice(&s.as_bytes()[..end]);
        self
    }

    pub fn bytes(&mut self, b: Option<&[u8]>) -> &mut Self {
        match b {
            Some(b) => {
                self.int(b.len() as i32);
                self.0.extend_from_slice(b);
            }
            None => {
                self.int(-1);
            }
        }
        self
    }

    pub fn short_bytes(&mut self, b: &[u8]) -> &mut Self {
        self.short(b.len() as u16);
        self.0.extend_from_slice(b);
        self
    }

    pub fn string_multimap(&mut self, entries: &[(&str, Vec<&str>)]) -> &mut Self {
        self.short(entries.len() as u16);
        for (key, values) in entries {
            self.string(key);
            self.short(values.len() as u16);
            for v in values {
                self.string(v);
            }
        }
        self
    }
}

/// An ERROR body.
pub fn error_body(code: i32, message: &str) -> Vec<u8> {
    let mut b = Body::new();
    b.int(code).string(message);
    b.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_read_every_flag() {
        let mut body = Body::new();
        body.short(0x0001); // ONE
        body.0.push(0x01 | 0x02 | 0x04 | 0x08 | 0x20);
        body.short(3);
        body.bytes(Some(&[1, 2]));
        body.int(-1);
        body.int(-2);
        body.int(100);
        body.bytes(Some(b"state"));
        body.0.extend_from_slice(&7i64.to_be_bytes());
        let p = QueryParameters::read(&mut Reader::new(&body.0)).unwrap();
        assert_eq!(
            p.values,
            vec![Value::Set(vec![1, 2]), Value::Null, Value::NotSet]
        );
        assert!(p.skip_metadata);
        assert_eq!(p.page_size, Some(100));
        assert_eq!(p.paging_state.as_deref(), Some(&b"state"[..]));
    }

    #[test]
    fn truncated_bodies_are_errors_not_panics() {
        let mut body = Body::new();
        body.short(1);
        body.0.push(0x01);
        body.short(2);
        body.int(10);
        let err = QueryParameters::read(&mut Reader::new(&body.0)).unwrap_err();
        assert!(err.0.contains("ends inside"), "{err}");
        assert!(
            Reader::new(&[0xff, 0xff, 0xff, 0xfe])
                .long_string()
                .is_err()
        );
    }
}
