//! "Does not exist" and "already exists" errors that say what does exist, the same for every
//! store: a store hands over the names its catalog holds.

use quarry_core::schema::TableName;

use crate::error::Error;

/// The error for creating keyspace `name`, which exists.
pub fn keyspace_exists(name: &str) -> Error {
    Error::AlreadyExists {
        what: format!("keyspace '{name}'"),
        hint: String::new(),
    }
}

/// The names of a catalog: keyspaces, tables and views.
#[derive(Debug, Clone, Copy)]
pub struct Names<'a> {
    pub keyspaces: &'a [String],
    pub tables: &'a [TableName],
    pub views: &'a [TableName],
}

impl Names<'_> {
    fn has_keyspace(&self, keyspace: &str) -> bool {
        self.keyspaces.iter().any(|k| k == keyspace)
    }

    pub fn no_such_keyspace(&self, name: &str) -> Error {
        let hint = if self.keyspaces.is_empty() {
            "; there are no keyspaces yet: CREATE KEYSPACE ... first".to_string()
        } else {
            format!("; keyspaces are {}", self.keyspaces.join(", "))
        };
        Error::NoSuchKeyspace {
            name: name.to_string(),
            hint,
        }
    }

    pub fn no_such_table(&self, name: &TableName) -> Error {
        let hint = if self.views.contains(name) {
            format!(" ({name} is a view; DROP VIEW {name} drops it)")
        } else {
            self.what_keyspace_has(&name.keyspace)
        };
        Error::NoSuchTable {
            name: name.to_string(),
            hint,
        }
    }

    pub fn no_such_view(&self, name: &TableName) -> Error {
        let hint = if self.tables.contains(name) {
            format!(" ({name} is a table; DROP TABLE {name} drops it)")
        } else {
            self.what_keyspace_has(&name.keyspace)
        };
        Error::NoSuchView {
            name: name.to_string(),
            hint,
        }
    }

    /// The end of a "does not exist" message: what the keyspace holds, or that it does not exist.
    fn what_keyspace_has(&self, keyspace: &str) -> String {
        let in_keyspace = |names: &[TableName]| -> String {
            names
                .iter()
                .filter(|t| t.keyspace == keyspace)
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (tables, views) = (in_keyspace(self.tables), in_keyspace(self.views));
        if !self.has_keyspace(keyspace) {
            format!(" (there is no keyspace '{keyspace}')")
        } else if tables.is_empty() && views.is_empty() {
            format!(" (keyspace '{keyspace}' has no tables yet)")
        } else if views.is_empty() {
            format!("; tables in '{keyspace}' are {tables}")
        } else if tables.is_empty() {
            format!("; keyspace '{keyspace}' has no tables, and its views are {views}")
        } else {
            format!("; tables in '{keyspace}' are {tables}, and views {views}")
        }
    }

    /// The error for a new table or view whose name is taken, or `None` when it is free.
    pub fn name_taken(&self, name: &TableName) -> Option<Error> {
        if self.tables.contains(name) {
            Some(Error::AlreadyExists {
                what: format!("table {name}"),
                hint: "; a table and a view cannot share a name".into(),
            })
        } else if self.views.contains(name) {
            Some(Error::AlreadyExists {
                what: format!("view {name}"),
                hint: "; a table and a view cannot share a name (CREATE OR REPLACE VIEW replaces \
                       a view)"
                    .into(),
            })
        } else {
            None
        }
    }
}
