//! Cutting a SQL script into statements.
//!
//! A script is split on `;` that stand outside string literals, quoted identifiers and comments,
//! so `SELECT ';'` and `-- a; b` stay whole. The quoting rules are those of DataFusion's default
//! (generic) dialect:
//!
//! | form                  | ends at                        |
//! |-----------------------|--------------------------------|
//! | `'...'`               | `'` (a doubled `''` is a quote) |
//! | `"..."`, `` `...` ``  | the same quote, doubled to escape |
//! | `$$...$$`, `$tag$...$tag$` | the same dollar tag       |
//! | `-- ...`              | end of line                    |
//! | `/* ... */`           | the matching `*/` (they nest)  |
//!
//! Only ASCII bytes delimit anything, so the scan walks bytes and every cut lands on a character
//! boundary.

/// Splits a script into its statements.
///
/// Each statement is returned trimmed, without its terminating `;`. Statements that are empty or
/// hold nothing but comments are dropped. An unterminated quote or comment runs to the end of the
/// script, so the parser of that statement reports it.
pub fn split_statements(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let mut statements = Vec::new();
    let mut start = 0;
    // Whether anything but whitespace and comments has been seen since `start`.
    let mut has_code = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b';' => {
                push_statement(&mut statements, &text[start..i], has_code);
                start = i + 1;
                has_code = false;
                i += 1;
            }
            quote @ (b'\'' | b'"' | b'`') => {
                has_code = true;
                i = skip_quoted(bytes, i, quote);
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => i = skip_line_comment(bytes, i),
            b'/' if bytes.get(i + 1) == Some(&b'*') => i = skip_block_comment(bytes, i),
            b'$' => {
                has_code = true;
                i = skip_dollar_quoted(text, i);
            }
            b if b.is_ascii_whitespace() => i += 1,
            _ => {
                has_code = true;
                i += 1;
            }
        }
    }
    push_statement(&mut statements, &text[start..], has_code);
    statements
}

fn push_statement(statements: &mut Vec<String>, text: &str, has_code: bool) {
    if has_code {
        statements.push(text.trim().to_string());
    }
}

/// `bytes[open]` is an opening quote; returns the index just past its closing quote (a doubled
/// quote is part of the text), or the end of the input when it is never closed.
fn skip_quoted(bytes: &[u8], open: usize, quote: u8) -> usize {
    let mut i = open + 1;
    while i < bytes.len() {
        if bytes[i] == quote {
            if bytes.get(i + 1) == Some(&quote) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    bytes.len()
}

/// Returns the index of the newline that ends the `--` comment at `start` (or the end of input).
fn skip_line_comment(bytes: &[u8], start: usize) -> usize {
    bytes[start..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(bytes.len(), |n| start + n)
}

/// Returns the index just past the `*/` that closes the (possibly nested) comment at `start`.
fn skip_block_comment(bytes: &[u8], start: usize) -> usize {
    let mut depth = 0usize;
    let mut i = start;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1)) {
            (b'/', Some(b'*')) => {
                depth += 1;
                i += 2;
            }
            (b'*', Some(b'/')) => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return i;
                }
            }
            _ => i += 1,
        }
    }
    bytes.len()
}

/// `text[start]` is a `$`. When it opens a dollar-quoted string (`$$` or `$tag$`, the tag an
/// identifier that does not start with a digit) returns the index just past the closing tag;
/// otherwise (a placeholder such as `$1`) returns the index after the `$`.
fn skip_dollar_quoted(text: &str, start: usize) -> usize {
    let bytes = text.as_bytes();
    let tag_len = bytes[start + 1..]
        .iter()
        .position(|&b| !(b.is_ascii_alphanumeric() || b == b'_'))
        .unwrap_or(bytes.len() - start - 1);
    let tag_end = start + 1 + tag_len;
    let starts_with_digit = tag_len > 0 && bytes[start + 1].is_ascii_digit();
    if bytes.get(tag_end) != Some(&b'$') || starts_with_digit {
        return start + 1;
    }
    let delimiter = &text[start..=tag_end];
    let body = tag_end + 1;
    text[body..]
        .find(delimiter)
        .map_or(text.len(), |n| body + n + delimiter.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_semicolons_and_trims() {
        assert_eq!(
            split_statements("  SELECT 1 ;\n\nSELECT 2;SELECT 3  "),
            vec!["SELECT 1", "SELECT 2", "SELECT 3"]
        );
    }

    #[test]
    fn drops_empty_and_comment_only_statements() {
        assert_eq!(
            split_statements(";; SELECT 1;  ; -- the end\n /* really */ ;"),
            vec!["SELECT 1"]
        );
        assert!(split_statements("").is_empty());
        assert!(split_statements("   \n-- nothing").is_empty());
    }

    #[test]
    fn keeps_semicolons_inside_strings_identifiers_and_comments() {
        let script = "SELECT 'a;b', 'it''s; fine' FROM \"we;ird\";\n\
                      -- a comment; with a semicolon\n\
                      SELECT `x;y` /* one; /* nested; */ still; */ FROM t;\n\
                      SELECT $$dollar; quoted$$, $tag$ more; $tag$, $1";
        assert_eq!(
            split_statements(script),
            vec![
                "SELECT 'a;b', 'it''s; fine' FROM \"we;ird\"",
                "-- a comment; with a semicolon\n\
                 SELECT `x;y` /* one; /* nested; */ still; */ FROM t",
                "SELECT $$dollar; quoted$$, $tag$ more; $tag$, $1",
            ]
        );
    }

    #[test]
    fn placeholders_are_not_dollar_quotes() {
        assert_eq!(
            split_statements("SELECT $1; SELECT $2$"),
            vec!["SELECT $1", "SELECT $2$"]
        );
    }

    #[test]
    fn unterminated_quotes_run_to_the_end() {
        assert_eq!(
            split_statements("SELECT 1; SELECT 'open; SELECT 2"),
            vec!["SELECT 1", "SELECT 'open; SELECT 2"]
        );
        assert_eq!(
            split_statements("SELECT 1 /* open; SELECT 2"),
            vec!["SELECT 1 /* open; SELECT 2"]
        );
    }

    #[test]
    fn non_ascii_text_is_cut_on_character_boundaries() {
        assert_eq!(
            split_statements("SELECT 'größe;' ; SELECT 'ü'"),
            vec!["SELECT 'größe;'", "SELECT 'ü'"]
        );
    }
}
