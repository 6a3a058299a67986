//! How the CLI says what went wrong: an error and its causes on one line, each said once.
//!
//! DataFusion and Arrow errors repeat their sources in their own text, so printing the chain as
//! it is (`{:#}`) says the same thing three times. A cause whose text the line already holds, or
//! that only restates the line with more wrapping, is left out.

/// The message of `error` and the causes that add something.
pub fn describe(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        let text = text.trim();
        if text.is_empty() || line.contains(text) || (!line.is_empty() && text.contains(&line)) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(text);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_part_is_said_once() {
        let root = std::io::Error::other("no field named nope");
        let wrapped = anyhow::Error::new(root).context("schema error: no field named nope");
        assert_eq!(describe(&wrapped), "schema error: no field named nope");

        let restated = anyhow::anyhow!("cannot cast 'x' to Int32")
            .context("optimizer rule failed, caused by: cannot cast 'x' to Int32");
        assert_eq!(
            describe(&restated),
            "optimizer rule failed, caused by: cannot cast 'x' to Int32"
        );

        let missing = anyhow::Error::new(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "No such file or directory",
        ))
        .context("reading the config file /etc/quarry.toml");
        assert_eq!(
            describe(&missing),
            "reading the config file /etc/quarry.toml: No such file or directory"
        );
    }
}
