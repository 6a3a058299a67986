//! TLS to the cluster's nodes.
//!
//! The driver checks each node's certificate against the node's IP address (the address the ring
//! names it by), so node certificates must carry their IP addresses as subject alternative names,
//! as ScyllaDB's and Cassandra's client-encryption guides set them up. A client certificate and key
//! are sent when given, for clusters that require client authentication.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use quarry_store::{Error, Failure, Result};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Where the TLS material for the cluster is (PEM files).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScyllaTls {
    /// The CA that signed the nodes' certificates.
    pub ca: PathBuf,
    /// This client's certificate chain, for clusters that require client certificates.
    pub cert: Option<PathBuf>,
    /// The private key of `cert`.
    pub key: Option<PathBuf>,
}

fn user_error(message: String) -> Error {
    Error::Cluster {
        message,
        failure: Failure::USER,
    }
}

fn certificates(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let read_error = |e: &dyn std::fmt::Display| {
        user_error(format!(
            "reading the cluster TLS {what} {}: {e}",
            path.display()
        ))
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| read_error(&e))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| read_error(&e))?;
    if certs.is_empty() {
        return Err(user_error(format!(
            "the cluster TLS {what} {} holds no certificate (expected a -----BEGIN \
             CERTIFICATE----- block)",
            path.display()
        )));
    }
    Ok(certs)
}

/// The driver's TLS configuration for `tls`, or an error naming the file that is wrong.
pub fn client_config(tls: &ScyllaTls) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(&tls.ca, "CA")? {
        roots.add(cert).map_err(|e| {
            user_error(format!(
                "the cluster TLS CA {} is not a usable CA certificate: {e}",
                tls.ca.display()
            ))
        })?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| user_error(format!("TLS to the cluster: {e}")))?
        .with_root_certificates(roots);
    let config = match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            let chain = certificates(cert, "client certificate")?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                user_error(format!(
                    "reading the cluster TLS client key {}: {e}",
                    key.display()
                ))
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| user_error(format!("the cluster TLS client certificate: {e}")))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(user_error(
                "a cluster TLS client certificate and its key go together: give both or neither"
                    .into(),
            ));
        }
    };
    Ok(Arc::new(config))
}
