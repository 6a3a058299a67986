//! Rows that could not be loaded, kept so the rest of an input can be.
//!
//! With `--reject-file PATH`, `quarry load` writes one [`Reject`] per line of NDJSON, so the file
//! can be read by a person, by `jq`, or fixed and loaded again.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A record of an input that was not loaded, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reject {
    /// The input's name: its path, or `<stdin>`.
    pub source: String,
    /// The 1-based line of the record in a CSV or NDJSON input (a CSV header is line 1), or the
    /// 1-based row number in a Parquet input.
    pub line: u64,
    /// The column at fault, when one column is.
    pub column: Option<String>,
    /// The offending value; for a record that could not be split into columns, its raw text.
    pub value: Option<String>,
    /// The CQL type the column expected, when a column is at fault.
    pub expected: Option<String>,
    /// What is wrong, in the words the error would have used.
    pub reason: String,
    /// The record as read, column name (as the input spells it) to text; NULLs are JSON nulls.
    /// Empty when the record could not be split into columns.
    pub record: Map<String, Value>,
}

impl Reject {
    /// The reject as one line of NDJSON, without the trailing newline.
    pub fn to_json_line(&self) -> String {
        // Serializing strings, integers and a string-keyed map into a String cannot fail.
        serde_json::to_string(self).unwrap_or_else(|e| {
            format!(
                r#"{{"source":{},"line":{},"reason":"cannot encode reject: {e}"}}"#,
                Value::String(self.source.clone()),
                self.line
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_are_one_json_line_that_reads_back() {
        let mut record = Map::new();
        record.insert("value".into(), Value::String("abc\n".into()));
        record.insert("status".into(), Value::Null);
        let reject = Reject {
            source: "readings.csv".into(),
            line: 17,
            column: Some("value".into()),
            value: Some("abc\n".into()),
            expected: Some("double".into()),
            reason: "column 'value' has 'abc', expected double".into(),
            record,
        };
        let line = reject.to_json_line();
        assert!(!line.contains('\n'), "{line}");
        let back: Reject = serde_json::from_str(&line).unwrap();
        assert_eq!(back, reject);
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["line"], 17);
        assert_eq!(v["record"]["status"], Value::Null);
    }
}
