//! The input formats `quarry load` reads, and telling them from a file name.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use crate::error::Error;

/// The file extensions [`Format::from_path`] knows, as messages list them.
pub const KNOWN_EXTENSIONS: [&str; 6] = [".csv", ".ndjson", ".jsonl", ".json", ".parquet", ".parq"];

/// An input format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// Comma-separated values with a header row naming the columns. Empty fields are NULL.
    Csv,
    /// Newline-delimited JSON: one object per line, keys naming columns.
    NdJson,
    /// Apache Parquet; columns are matched by name and cast to the table's types.
    Parquet,
}

impl Format {
    /// The format a file's extension names (case-insensitively), or `None` when it names none of
    /// [`KNOWN_EXTENSIONS`].
    pub fn from_path(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "csv" => Some(Format::Csv),
            "ndjson" | "jsonl" | "json" => Some(Format::NdJson),
            "parquet" | "parq" => Some(Format::Parquet),
            _ => None,
        }
    }

    /// The name `--format` takes; also what `Display` prints, so the two round-trip.
    pub fn name(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::NdJson => "ndjson",
            Format::Parquet => "parquet",
        }
    }

    /// The name prose uses ("not valid CSV").
    pub fn label(self) -> &'static str {
        match self {
            Format::Csv => "CSV",
            Format::NdJson => "NDJSON",
            Format::Parquet => "Parquet",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Format {
    type Err = Error;

    /// Parses `csv`, `ndjson` (also `jsonl` and `json`) or `parquet` (also `parq`), ignoring case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "csv" => Ok(Format::Csv),
            "ndjson" | "jsonl" | "json" => Ok(Format::NdJson),
            "parquet" | "parq" => Ok(Format::Parquet),
            _ => Err(Error::UnknownFormatName {
                name: s.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_pick_formats() {
        assert_eq!(Format::from_path(Path::new("a/b.csv")), Some(Format::Csv));
        assert_eq!(Format::from_path(Path::new("b.CSV")), Some(Format::Csv));
        for ext in ["ndjson", "jsonl", "json"] {
            let path = format!("x.{ext}");
            assert_eq!(Format::from_path(Path::new(&path)), Some(Format::NdJson));
        }
        assert_eq!(
            Format::from_path(Path::new("x.parq")),
            Some(Format::Parquet)
        );
        assert_eq!(
            Format::from_path(Path::new("x.parquet")),
            Some(Format::Parquet)
        );
        assert_eq!(Format::from_path(Path::new("x.txt")), None);
        assert_eq!(Format::from_path(Path::new("noext")), None);
    }

    #[test]
    fn names_parse_and_unknown_names_list_the_formats() {
        assert_eq!("CSV".parse::<Format>().unwrap(), Format::Csv);
        assert_eq!("jsonl".parse::<Format>().unwrap(), Format::NdJson);
        assert_eq!("parquet".parse::<Format>().unwrap(), Format::Parquet);
        for f in [Format::Csv, Format::NdJson, Format::Parquet] {
            assert_eq!(f.to_string().parse::<Format>().unwrap(), f);
        }
        let err = "xls".parse::<Format>().unwrap_err().to_string();
        assert!(err.contains("'xls'") && err.contains("ndjson"), "{err}");
    }
}
