//! TLS on the listener through rustls: the certificate and key from PEM files, optionally a
//! client CA that every client certificate must chain to (mutual TLS), all re-read on reload.

use std::io;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;

use crate::config::TlsConfig;
use crate::connections::{self, Connections, Tracked};

/// Connections handshaken but not yet taken by the server.
const ACCEPTED_BACKLOG: usize = 128;

/// The TLS configuration in force, swapped on reload.
pub struct Tls {
    paths: RwLock<TlsConfig>,
    config: RwLock<Arc<ServerConfig>>,
}

impl Tls {
    /// Reads the certificate, key and client CA named by `paths`.
    pub fn load(paths: &TlsConfig) -> Result<Arc<Self>, String> {
        Ok(Arc::new(Tls {
            config: RwLock::new(Arc::new(build(paths)?)),
            paths: RwLock::new(paths.clone()),
        }))
    }

    /// Reads the files again (from `paths`, which may have changed). On error the TLS
    /// configuration in force stays.
    pub fn reload(&self, paths: &TlsConfig) -> Result<(), String> {
        let config = build(paths)?;
        *self
            .config
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(config);
        *self
            .paths
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = paths.clone();
        Ok(())
    }

    fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(
            self.config
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        )
    }

    /// Accepts and admits connections on `listener` (see [`connections::accept_loop`]) and
    /// yields those whose TLS handshake completed within the handshake deadline. A failed
    /// handshake (no, expired or foreign client certificate, not TLS at all) is logged (a few
    /// a time: a client can cause them at will) and dropped; it never reaches a service.
    pub fn incoming(
        self: Arc<Self>,
        listener: TcpListener,
        connections: Arc<Connections>,
    ) -> ReceiverStream<io::Result<Tracked<TlsStream<TcpStream>>>> {
        let (sender, receiver) = mpsc::channel(ACCEPTED_BACKLOG);
        let closed = {
            let sender = sender.clone();
            async move { sender.closed().await }
        };
        let limits = connections.limits().clone();
        tokio::spawn(connections::accept_loop(
            listener,
            connections,
            closed,
            move |stream, conn| {
                let accepted = Instant::now();
                let acceptor = self.acceptor();
                let sender = sender.clone();
                let limits = limits.clone();
                tokio::spawn(async move {
                    let remote = conn.remote;
                    let due = tokio::time::Instant::from(accepted + limits.handshake_timeout);
                    match tokio::time::timeout_at(due, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let tracked = Tracked::new(tls, conn, &limits, accepted);
                            let _ = sender.send(Ok(tracked)).await;
                        }
                        Ok(Err(error)) => crate::logging::throttled_warn(
                            "TLS handshake failed",
                            Some(remote.ip()),
                            &format!("TLS handshake with {remote} failed: {error}"),
                        ),
                        Err(_) => {
                            crate::metrics::connection_closed("handshake_timeout");
                            crate::logging::throttled_warn(
                                "handshake timeout",
                                Some(remote.ip()),
                                &format!("TLS handshake with {remote} timed out (limits.handshake_timeout_secs)"),
                            )
                        }
                    }
                });
            },
        ));
        ReceiverStream::new(receiver)
    }
}

fn build(paths: &TlsConfig) -> Result<ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = read_certs(&paths.cert)?;
    let key = PrivateKeyDer::from_pem_file(&paths.key)
        .map_err(|e| format!("tls.key {}: {e}", paths.key.display()))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = if paths.client_ca.as_os_str().is_empty() {
        builder.with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        for cert in read_certs(&paths.client_ca)? {
            roots
                .add(cert)
                .map_err(|e| format!("tls.client_ca {}: {e}", paths.client_ca.display()))?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| format!("tls.client_ca {}: {e}", paths.client_ca.display()))?;
        builder.with_client_cert_verifier(verifier)
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls.cert and tls.key do not make a usable identity: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

/// The names a client certificate gives its holder: the subject's common names and the DNS
/// names of its subject alternative name extension.
pub fn certificate_names(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let mut names: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_owned))
        .collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                names.push((*dns).to_owned());
            }
        }
    }
    names
}
