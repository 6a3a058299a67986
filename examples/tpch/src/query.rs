//! The 22 TPC-H queries, with the specification's validation parameters.

use crate::answer::Order;

/// One TPC-H query: `queries/qNN.sql`, its leading comment saying what it asks and with which
/// substitution parameters.
#[derive(Debug, Clone, Copy)]
pub struct Query {
    /// 1 to 22.
    pub number: u8,
    text: &'static str,
}

/// Q1 to Q22, in order, as the standard writes them (Q15 creates and drops a view).
pub const QUERIES: [Query; 22] = [
    Query::new(1, include_str!("../queries/q01.sql")),
    Query::new(2, include_str!("../queries/q02.sql")),
    Query::new(3, include_str!("../queries/q03.sql")),
    Query::new(4, include_str!("../queries/q04.sql")),
    Query::new(5, include_str!("../queries/q05.sql")),
    Query::new(6, include_str!("../queries/q06.sql")),
    Query::new(7, include_str!("../queries/q07.sql")),
    Query::new(8, include_str!("../queries/q08.sql")),
    Query::new(9, include_str!("../queries/q09.sql")),
    Query::new(10, include_str!("../queries/q10.sql")),
    Query::new(11, include_str!("../queries/q11.sql")),
    Query::new(12, include_str!("../queries/q12.sql")),
    Query::new(13, include_str!("../queries/q13.sql")),
    Query::new(14, include_str!("../queries/q14.sql")),
    Query::new(15, include_str!("../queries/q15.sql")),
    Query::new(16, include_str!("../queries/q16.sql")),
    Query::new(17, include_str!("../queries/q17.sql")),
    Query::new(18, include_str!("../queries/q18.sql")),
    Query::new(19, include_str!("../queries/q19.sql")),
    Query::new(20, include_str!("../queries/q20.sql")),
    Query::new(21, include_str!("../queries/q21.sql")),
    Query::new(22, include_str!("../queries/q22.sql")),
];

impl Query {
    const fn new(number: u8, text: &'static str) -> Query {
        Query { number, text }
    }

    /// `q1` to `q22`.
    pub fn name(&self) -> String {
        format!("q{}", self.number)
    }

    /// The query's statements, without the leading comment and the `;` between them: one
    /// `SELECT`, except Q15, which creates a view, selects from it and drops it.
    pub fn statements(&self) -> Vec<String> {
        let body: Vec<&str> = self
            .text
            .lines()
            .skip_while(|line| line.trim_start().starts_with("--"))
            .collect();
        // No query text holds a `;` inside a literal.
        body.join("\n")
            .split(';')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// The statement that answers: the one `SELECT` (or `WITH ... SELECT`).
    pub fn sql(&self) -> String {
        self.statements()
            .into_iter()
            .find(|s| is_query(s))
            .expect("every TPC-H query has a SELECT")
    }

    /// The statements to run before [`sql`](Self::sql) and after it.
    pub fn setup_and_teardown(&self) -> (Vec<String>, Vec<String>) {
        let statements = self.statements();
        let at = statements
            .iter()
            .position(|s| is_query(s))
            .expect("every TPC-H query has a SELECT");
        (statements[..at].to_vec(), statements[at + 1..].to_vec())
    }

    /// How rows of the answer are ordered: by the query's final `ORDER BY` (every TPC-H query
    /// with one orders its whole result), or not at all.
    pub fn order(&self) -> Order {
        if self.sql().to_ascii_lowercase().contains("order by") {
            Order::Rows
        } else {
            Order::Any
        }
    }
}

fn is_query(statement: &str) -> bool {
    let first = statement.split_whitespace().next().unwrap_or_default();
    first.eq_ignore_ascii_case("select") || first.eq_ignore_ascii_case("with")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_query_answers_with_one_select() {
        for (i, query) in QUERIES.iter().enumerate() {
            assert_eq!(usize::from(query.number), i + 1);
            let sql = query.sql();
            assert!(is_query(&sql), "{}", query.name());
            assert!(!sql.contains(';'), "{}", query.name());
            let (setup, teardown) = query.setup_and_teardown();
            let expected = if query.number == 15 { 1 } else { 0 };
            assert_eq!((setup.len(), teardown.len()), (expected, expected));
        }
        let (setup, teardown) = QUERIES[14].setup_and_teardown();
        assert!(setup[0].starts_with("create view revenue0"));
        assert_eq!(teardown, ["drop view revenue0"]);
        assert_eq!(QUERIES[5].order(), Order::Any, "q6 is one row");
        assert_eq!(QUERIES[0].order(), Order::Rows);
    }
}
