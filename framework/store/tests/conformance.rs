//! Behaviour every [`Store`] must share, written against the trait alone.
//!
//! Each check is a function over `&dyn Store` (or over a way to open the same store again); the
//! tests at the bottom run them on the embedded store. A second store (ScyllaDB) adds its own
//! tests calling the same functions. So far the suite covers views.

mod common;

use std::sync::Arc;

use quarry_core::schema::{KeyspaceDef, TableName, ViewDef};
use quarry_store::{EmbeddedStore, Error, Store};

fn view(keyspace: &str, name: &str, sql: &str) -> ViewDef {
    ViewDef::new(keyspace, name, sql).unwrap()
}

fn names(views: &[ViewDef]) -> Vec<String> {
    views.iter().map(|v| v.view_name().to_string()).collect()
}

/// A fresh store with keyspaces `iot` and `other` and the table `iot.r` of the fixtures.
async fn prepare(store: &dyn Store) {
    for ks in ["iot", "other"] {
        store
            .create_keyspace(KeyspaceDef::new(ks), false)
            .await
            .unwrap();
    }
    store.create_table(common::table(), false).await.unwrap();
}

/// Views are kept, listed, replaced and dropped; names are shared with tables; errors say what
/// exists and change nothing.
pub async fn views_live_in_the_catalog(store: &dyn Store) {
    prepare(store).await;
    let hot = view("iot", "hot", "SELECT * FROM r WHERE value > 30");
    assert!(!store.create_view(hot.clone(), false).await.unwrap());
    store
        .create_view(view("other", "a", "SELECT 1"), false)
        .await
        .unwrap();
    assert_eq!(store.view(&TableName::new("iot", "hot")).unwrap(), hot);
    assert_eq!(names(&store.views(Some("iot")).unwrap()), ["iot.hot"]);
    assert_eq!(names(&store.views(None).unwrap()), ["iot.hot", "other.a"]);
    // A view is not a table.
    assert_eq!(store.tables(Some("iot")).unwrap().len(), 1);
    assert!(matches!(
        store.table(&TableName::new("iot", "hot")),
        Err(Error::NoSuchTable { .. })
    ));

    // Without OR REPLACE an existing view is refused and kept; with it, it is replaced.
    let again = view("iot", "hot", "SELECT 2");
    let e = store.create_view(again.clone(), false).await.unwrap_err();
    assert!(matches!(e, Error::AlreadyExists { .. }), "{e}");
    assert!(e.to_string().contains("view iot.hot already exists"), "{e}");
    assert_eq!(store.view(&hot.view_name()).unwrap(), hot);
    assert!(store.create_view(again.clone(), true).await.unwrap());
    assert_eq!(store.view(&hot.view_name()).unwrap(), again);

    // Tables and views share names, both ways, even with OR REPLACE or IF NOT EXISTS.
    let e = store
        .create_view(view("iot", "r", "SELECT 1"), true)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("table iot.r already exists"), "{e}");
    let mut clash = common::table();
    clash.name = "hot".into();
    let e = store.create_table(clash, true).await.unwrap_err();
    assert!(e.to_string().contains("view iot.hot already exists"), "{e}");

    // A missing keyspace or a bad name is refused.
    let e = store
        .create_view(view("nope", "v", "SELECT 1"), false)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NoSuchKeyspace { .. }), "{e}");
    let bad = ViewDef {
        keyspace: "iot".into(),
        name: "Bad Name".into(),
        sql: "SELECT 1".into(),
    };
    assert!(store.create_view(bad, false).await.is_err());

    // DROP TABLE and DROP VIEW say which one a name is, IF EXISTS or not.
    let e = store
        .drop_table(&TableName::new("iot", "hot"), true)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("iot.hot is a view"), "{e}");
    let e = store
        .drop_view(&TableName::new("iot", "r"), true)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("iot.r is a table"), "{e}");
    let e = store
        .view(&TableName::new("iot", "nope"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("view iot.nope does not exist") && e.contains("views iot.hot"),
        "{e}"
    );

    assert!(store.drop_view(&hot.view_name(), false).await.unwrap());
    assert!(!store.drop_view(&hot.view_name(), true).await.unwrap());
    assert!(matches!(
        store.drop_view(&hot.view_name(), false).await,
        Err(Error::NoSuchView { .. })
    ));
    assert_eq!(names(&store.views(None).unwrap()), ["other.a"]);

    // Dropping a keyspace drops its views; a keyspace of the same name starts empty.
    store.drop_keyspace("other", false).await.unwrap();
    store
        .create_keyspace(KeyspaceDef::new("other"), false)
        .await
        .unwrap();
    assert!(store.views(None).unwrap().is_empty());
    assert!(matches!(
        store.views(Some("gone")),
        Err(Error::NoSuchKeyspace { .. })
    ));
}

/// Views, replaced and dropped ones included, are as they were after the store is opened again.
/// `reopen` closes the store it is given and opens the same one again.
pub async fn views_survive_reopening(
    store: Arc<dyn Store>,
    reopen: impl FnOnce(Arc<dyn Store>) -> Arc<dyn Store>,
) {
    prepare(store.as_ref()).await;
    for (name, sql) in [("a", "SELECT 1"), ("b", "SELECT 2"), ("c", "SELECT 3")] {
        store
            .create_view(view("iot", name, sql), false)
            .await
            .unwrap();
    }
    store
        .create_view(view("iot", "b", "SELECT 'replaced'"), true)
        .await
        .unwrap();
    store
        .drop_view(&TableName::new("iot", "c"), false)
        .await
        .unwrap();
    let before = store.views(None).unwrap();

    let store = reopen(store);
    assert_eq!(store.views(None).unwrap(), before);
    assert_eq!(
        store.view(&TableName::new("iot", "b")).unwrap().sql,
        "SELECT 'replaced'"
    );
    assert_eq!(store.tables(None).unwrap(), [common::table()]);
}

#[tokio::test]
async fn embedded_views_live_in_the_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), common::small_options()).unwrap();
    views_live_in_the_catalog(&store).await;
}

#[tokio::test]
async fn embedded_views_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let open = || -> Arc<dyn Store> {
        Arc::new(EmbeddedStore::open(dir.path(), common::small_options()).unwrap())
    };
    views_survive_reopening(open(), |store| {
        drop(store);
        open()
    })
    .await;
}
