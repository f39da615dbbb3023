//! The listener's TLS: the server certificate (PEM, full chain) that STARTTLS (RFC 3207) and
//! the implicit-TLS listener (RFC 8314) present, TLS 1.2 and 1.3 only, through rustls with
//! aws-lc-rs. SIGHUP reads the files again: a new connection gets the new certificate, one
//! already open keeps its session, and a broken new file keeps the running certificate.

use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::config::TlsFiles;
use crate::model::TlsSession;

pub struct ServerTls {
    files: TlsFiles,
    acceptor: RwLock<TlsAcceptor>,
}

impl ServerTls {
    /// Reads the certificate and key; the error says which file is wrong and how.
    pub fn load(files: &TlsFiles) -> Result<ServerTls, String> {
        Ok(ServerTls {
            files: files.clone(),
            acceptor: RwLock::new(acceptor(files)?),
        })
    }

    /// SIGHUP: the files again. On failure the running certificate stays, and the log says
    /// why.
    pub fn reload(&self) {
        match acceptor(&self.files) {
            Ok(new) => {
                *self.acceptor.write().unwrap_or_else(|e| e.into_inner()) = new;
                tracing::info!(certificate = %self.files.certificate.display(), "TLS certificate reloaded");
            }
            Err(error) => {
                tracing::error!(%error, "TLS certificate not reloaded; keeping the running one")
            }
        }
    }

    /// The handshake, on the current certificate.
    pub async fn accept<S>(&self, stream: S) -> std::io::Result<TlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let acceptor = self
            .acceptor
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        acceptor.accept(stream).await
    }
}

/// What the handshake negotiated.
pub fn session_of<S>(stream: &TlsStream<S>) -> TlsSession {
    let connection = stream.get_ref().1;
    let version = match connection.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
        Some(other) => format!("{other:?}"),
        None => "TLS".to_string(),
    };
    let cipher = connection
        .negotiated_cipher_suite()
        .and_then(|suite| suite.suite().as_str())
        .unwrap_or("unknown")
        .to_string();
    TlsSession { version, cipher }
}

fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, String> {
    let certificate = files.certificate.display();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.certificate)
        .map_err(|e| format!("smtp.tls.certificate {certificate}: {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("smtp.tls.certificate {certificate}: {e}"))?;
    if chain.is_empty() {
        return Err(format!(
            "smtp.tls.certificate {certificate}: no CERTIFICATE in it (PEM, the certificate first, then its chain)"
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| format!("smtp.tls.key {}: {e}", files.key.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            format!(
                "smtp.tls.certificate {certificate} and smtp.tls.key {}: {e}",
                files.key.display()
            )
        })?;
    // Our order (rustls's: AES-256-GCM, AES-128-GCM, ChaCha20-Poly1305, forward secret only),
    // not the client's, picks the cipher: an old client that lists a weaker one first does not
    // get it (testssl.sh rates a missing server order HIGH).
    config.ignore_client_order = true;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
