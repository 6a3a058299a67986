//! TLS to the cluster: the connector reaches a 3-node CQL server that serves only TLS, checks each
//! node's certificate against the node's IP address and its CA, and reads and writes as it does in
//! the clear. Without TLS, or trusting another CA, it is refused with an error that says so.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use quarry_cql::{CqlServer, ServerOptions, tls_config};
use quarry_scylla::tls::ScyllaTls;
use quarry_scylla::{ScyllaOptions, ScyllaStore};
use quarry_sql::QuarrySession;
use quarry_store::{EmbeddedOptions, EmbeddedStore};

struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// A CA, and a certificate it signed naming the nodes' addresses 127.0.0.1-3, as PEM files.
fn pki(dir: &Path, name: &str) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    for last in 1..=3 {
        params
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::new(
                127, 0, 0, last,
            ))));
    }
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let write = |file: &str, pem: String| {
        let path = dir.join(format!("{name}-{file}"));
        std::fs::write(&path, pem).unwrap();
        path
    };
    Pki {
        ca: write("ca.pem", ca.pem()),
        cert: write("cert.pem", cert.pem()),
        key: write("key.pem", key.serialize_pem()),
    }
}

async fn connect(server: &CqlServer, tls: Option<ScyllaTls>) -> quarry_store::Result<ScyllaStore> {
    ScyllaStore::connect(ScyllaOptions {
        nodes: vec![server.addresses()[0].to_string()],
        tls,
        ..ScyllaOptions::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connector_reads_and_writes_over_tls_and_refuses_an_unknown_ca() {
    let dir = tempfile::tempdir().unwrap();
    let node = pki(dir.path(), "node");
    let other = pki(dir.path(), "other");
    let backing =
        Arc::new(EmbeddedStore::open(dir.path().join("data"), EmbeddedOptions::default()).unwrap());
    let server = CqlServer::start(
        backing,
        ServerOptions {
            nodes: 3,
            replication: 2,
            vnodes: 4,
            port: 0,
            tls: Some(tls_config(&node.cert, &node.key).unwrap()),
            ..ServerOptions::default()
        },
    )
    .await
    .unwrap();

    let trusted = ScyllaTls {
        ca: node.ca.clone(),
        cert: None,
        key: None,
    };
    let store = connect(&server, Some(trusted)).await.unwrap();
    let session = QuarrySession::new(Arc::new(store));
    for sql in [
        "CREATE KEYSPACE ks WITH replication_factor = 2",
        "CREATE TABLE ks.t (k bigint PRIMARY KEY, v text, tags set<text>)",
        "INSERT INTO ks.t SELECT value, 'v' || value, ['a', 'b'] FROM generate_series(1, 500)",
    ] {
        session
            .execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let out = session
        .execute("SELECT count(*), sum(k), sum(cardinality(tags)) FROM ks.t")
        .await
        .unwrap();
    let text = arrow::util::pretty::pretty_format_batches(&out.batches)
        .unwrap()
        .to_string();
    assert!(
        text.contains("| 500 ") && text.contains("| 125250 ") && text.contains("| 1000 "),
        "{text}"
    );
    // Every node served requests: the driver reached all three over TLS.
    assert!(
        server.stats().iter().all(|s| s.requests > 0),
        "{:?}",
        server.stats()
    );

    let err = connect(&server, None).await.unwrap_err().to_string();
    assert!(err.contains("connecting to the cluster"), "{err}");
    let untrusted = ScyllaTls {
        ca: other.ca.clone(),
        cert: None,
        key: None,
    };
    let err = connect(&server, Some(untrusted))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.to_lowercase().contains("certificate"), "{err}");

    let missing = ScyllaTls {
        ca: dir.path().join("nope.pem"),
        cert: None,
        key: None,
    };
    let err = connect(&server, Some(missing))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("reading the cluster TLS CA") && err.contains("nope.pem"),
        "{err}"
    );
}
