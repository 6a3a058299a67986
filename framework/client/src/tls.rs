//! TLS on every listener and every connection between Quarry's processes, when certificates are
//! given.
//!
//! A process serves TLS when it has a certificate and key (`--tls-cert`, `--tls-key`): its
//! endpoints are then `https://`. It connects to `https://` endpoints trusting the CA it is given
//! (`--tls-ca`), checking that the peer's certificate names the host of the URL. One CA signing
//! every daemon's certificate is the usual setup; the bearer secrets still authenticate callers
//! (see `auth`), TLS keeps them and the data private on the wire.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, Server, ServerTlsConfig};

/// Makes ring the process's TLS crypto provider, once.
///
/// tonic builds a server's TLS configuration from the process default. The ScyllaDB driver's TLS
/// pulls in rustls's second provider (aws-lc-rs), and with two compiled in, rustls has no default
/// until one is installed: every listener and connection of Quarry uses ring.
pub fn install_crypto_provider() {
    // Err means a provider is installed already (by an earlier call, or by the embedding program).
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Where a process's TLS material is. All optional: without them it speaks plain HTTP/2.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsFiles {
    /// This process's certificate chain (PEM); with `key`, its listeners serve TLS.
    pub cert: Option<PathBuf>,
    /// The private key of `cert` (PEM).
    pub key: Option<PathBuf>,
    /// The CA (PEM) whose certificates this process trusts when it connects to `https://`.
    pub ca: Option<PathBuf>,
}

/// TLS material, read.
#[derive(Debug, Clone, Default)]
pub struct Tls {
    identity: Option<Identity>,
    ca: Option<Certificate>,
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path)
        .map_err(|e| format!("reading the TLS {what} {}: {e}", path.display()))?;
    if !String::from_utf8_lossy(&bytes).contains("-----BEGIN ") {
        return Err(format!(
            "the TLS {what} {} is not PEM (expected a -----BEGIN ...----- block)",
            path.display()
        ));
    }
    Ok(bytes)
}

impl Tls {
    /// Reads `files`; a certificate without its key (or the other way round) is an error.
    pub fn load(files: &TlsFiles) -> Result<Tls, String> {
        let identity = match (&files.cert, &files.key) {
            (Some(cert), Some(key)) => Some(Identity::from_pem(
                read(cert, "certificate")?,
                read(key, "key")?,
            )),
            (None, None) => None,
            (Some(_), None) => return Err("--tls-cert needs --tls-key (its private key)".into()),
            (None, Some(_)) => return Err("--tls-key needs --tls-cert (its certificate)".into()),
        };
        let ca = match &files.ca {
            Some(ca) => Some(Certificate::from_pem(read(ca, "CA certificate")?)),
            None => None,
        };
        Ok(Tls { identity, ca })
    }

    /// Whether this process's listeners serve TLS.
    pub fn serves_tls(&self) -> bool {
        self.identity.is_some()
    }

    /// The scheme of this process's endpoints.
    pub fn scheme(&self) -> &'static str {
        if self.serves_tls() { "https" } else { "http" }
    }

    /// A server builder that serves TLS when this process has a certificate.
    pub fn server(&self) -> Result<Server, tonic::transport::Error> {
        install_crypto_provider();
        let builder = Server::builder();
        match &self.identity {
            Some(identity) => builder.tls_config(ServerTlsConfig::new().identity(identity.clone())),
            None => Ok(builder),
        }
    }

    /// An endpoint for `url`: over TLS, trusting this process's CA, when the URL is `https://`.
    pub fn endpoint(&self, url: &str) -> Result<Endpoint, String> {
        let endpoint = Endpoint::from_shared(url.to_string()).map_err(|e| e.to_string())?;
        if !url.starts_with("https://") {
            return Ok(endpoint);
        }
        let Some(ca) = &self.ca else {
            return Err(format!(
                "{url} serves TLS: pass --tls-ca FILE (or set QUARRY_TLS_CA), the CA that signed \
                 its certificate"
            ));
        };
        endpoint
            .tls_config(ClientTlsConfig::new().ca_certificate(ca.clone()))
            .map_err(|e| format!("TLS for {url}: {e}"))
    }
}
