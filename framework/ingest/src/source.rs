//! Where rows come from: a file, or standard input.

use std::fmt;
use std::fs::File;
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::Format;

/// One input of `quarry load`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Source {
    File(PathBuf),
    /// Standard input, read to its end into memory before parsing.
    Stdin,
}

impl Source {
    /// `-` stands for standard input, as in most command-line tools; anything else is a path.
    pub fn from_arg(arg: &str) -> Source {
        if arg == "-" {
            Source::Stdin
        } else {
            Source::File(PathBuf::from(arg))
        }
    }

    /// The format this source's name implies, if any (standard input implies none).
    pub fn format_from_name(&self) -> Option<Format> {
        match self {
            Source::File(path) => Format::from_path(path),
            Source::Stdin => None,
        }
    }

    /// The file's path, if this is a file.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Source::File(path) => Some(path),
            Source::Stdin => None,
        }
    }

    /// A reader over the source's bytes. Files are streamed; standard input is read to the end
    /// first, so a slow producer never holds a half-parsed batch.
    pub(crate) fn open_stream(&self) -> Result<Box<dyn Read + Send>> {
        let name = self.to_string();
        match self {
            Source::File(path) => {
                let file = File::open(path).map_err(|e| Error::io(&name, e))?;
                Ok(Box::new(file))
            }
            Source::Stdin => Ok(Box::new(Cursor::new(read_stdin(&name)?))),
        }
    }
}

/// Reads all of standard input.
pub(crate) fn read_stdin(name: &str) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    std::io::stdin()
        .lock()
        .read_to_end(&mut buf)
        .map_err(|e| Error::io(name, e))?;
    Ok(buf)
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(path) => write!(f, "{}", path.display()),
            Source::Stdin => f.write_str("<stdin>"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_display_as_users_name_them() {
        assert_eq!(Source::from_arg("-"), Source::Stdin);
        assert_eq!(Source::Stdin.to_string(), "<stdin>");
        let file = Source::from_arg("data/readings.csv");
        assert_eq!(file.to_string(), "data/readings.csv");
        assert_eq!(file.format_from_name(), Some(Format::Csv));
        assert_eq!(Source::Stdin.format_from_name(), None);
    }

    #[test]
    fn missing_files_name_the_path() {
        let err = Source::File("/nonexistent/quarry/x.csv".into())
            .open_stream()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("cannot read /nonexistent/quarry/x.csv"),
            "{err}"
        );
    }
}
