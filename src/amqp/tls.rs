//! The TLS side of a connection attempt: the CA file, the client
//! certificate (mutual TLS), the server-name override and `tls-verify no`.
//! The files are read at every attempt, so a renewed certificate is picked
//! up by the next connect.

use crate::config::AmqpSettings;
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig, RustlsConnector};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::sync::Arc;

/// What the TLS handshake of one attempt uses.
#[derive(Default)]
pub(super) struct Tls {
    /// CA and client identity, for the verifying connector.
    pub config: OwnedTLSConfig,
    /// The name to check and send as SNI; empty: the entry's host.
    pub server_name: String,
    /// `tls-verify no`: a connector that accepts any certificate.
    pub unverified: Option<RustlsConnector>,
}

fn read(what: &str, path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{what} '{path}': {e}"))
}

/// A client certificate chain and its key, both PEM.
type Pem = (Vec<u8>, Vec<u8>);

/// The client certificate and key, if both files are set.
fn identity(s: &AmqpSettings) -> Result<Option<Pem>, String> {
    match (s.tls_cert_file.is_empty(), s.tls_key_file.is_empty()) {
        (true, true) => Ok(None),
        (false, false) => Ok(Some((
            read("tls-cert-file", &s.tls_cert_file)?,
            read("tls-key-file", &s.tls_key_file)?,
        ))),
        _ => Err("tls-cert-file and tls-key-file go together: set both or neither".into()),
    }
}

/// Builds the TLS side for the settings `s`.
pub(super) fn client(s: &AmqpSettings) -> Result<Tls, String> {
    let mut tls = Tls {
        server_name: s.tls_server_name.clone(),
        ..Tls::default()
    };
    let id = identity(s)?;
    if !s.tls_verify {
        tls.unverified = Some(unverified(id)?);
        return Ok(tls);
    }
    if !s.tls_ca_file.is_empty() {
        let pem = std::fs::read_to_string(&s.tls_ca_file)
            .map_err(|e| format!("tls-ca-file '{}': {e}", s.tls_ca_file))?;
        tls.config.cert_chain = Some(pem);
    }
    tls.config.identity = id.map(|(pem, key)| OwnedIdentity::PKCS8 { pem, key });
    Ok(tls)
}

/// A connector that checks the handshake's signatures but not who signed
/// the certificate, nor its name.
fn unverified(id: Option<Pem>) -> Result<RustlsConnector, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)));
    let config = match id {
        None => builder.with_no_client_auth(),
        Some((pem, key)) => {
            let certs = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("tls-cert-file: {e}"))?;
            let key =
                PrivateKeyDer::from_pem_slice(&key).map_err(|e| format!("tls-key-file: {e}"))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("client certificate: {e}"))?
        }
    };
    Ok(RustlsConnector::from(config))
}

/// `tls-verify no`.
#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
