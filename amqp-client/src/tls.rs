//! TLS settings shared by every runtime adapter (feature `tls`).
//!
//! This is the I/O-free half of `amqps://`: it turns [`TlsOptions`] (built in code, or from an
//! [`AmqpUri`]'s `cacertfile`, `certfile`, `keyfile`, `verify` and `server_name_indication`)
//! into a rustls [`ClientConfig`] and the [`ServerName`] to verify. Adapters only wrap their
//! socket with it (`tokio-rustls`, `futures-rustls`) and report failures with
//! [`TlsError::from_handshake`].
//!
//! * Cryptography is rustls with the `ring` provider, TLS 1.2 and 1.3.
//! * Trust: the CA certificates of `cacertfile` (PEM), else the Mozilla roots bundled by
//!   `webpki-roots`; [`TlsOptions::with_platform_roots`] uses the operating system's store.
//! * The server's host name (or IP address) is always verified against its certificate: the
//!   URI's host, or `server_name_indication=NAME`. `server_name_indication=disable` only stops
//!   sending SNI.
//! * A client certificate (`certfile` + `keyfile`, PEM; PKCS#8, PKCS#1 or SEC1 key) is
//!   presented when the broker asks, which is what SASL `EXTERNAL`
//!   (`auth_mechanism=external`) logs in with.
//! * Verification is turned off only by [`TlsOptions::danger_accept_invalid_certs`] (or
//!   `verify=verify_none` in the URI), which logs a warning on every connect.
//!
//! Files are read when connecting (they are small), not when the options are built, so a
//! certificate rotated on disk is picked up by the next connection.
//!
//! ```
//! use amqp_client::{ConnectOptions, TlsOptions};
//!
//! // From a URI: CA file, client certificate, EXTERNAL login.
//! let options = ConnectOptions::parse(
//!     "amqps://rabbit.example:5671/%2f?cacertfile=/etc/ca.pem&certfile=/etc/client.pem\
//!      &keyfile=/etc/client.key&auth_mechanism=external",
//! ).unwrap();
//! assert_eq!(options.config.sasl.name(), "EXTERNAL");
//!
//! // In code.
//! let options = ConnectOptions::parse("amqps://app:secret@rabbit.example/%2f")
//!     .unwrap()
//!     .with_tls(
//!         TlsOptions::new()
//!             .with_ca_file("/etc/ca.pem")
//!             .with_client_cert_files("/etc/client.pem", "/etc/client.key"),
//!     );
//! assert!(!format!("{options:?}").contains("secret"));
//! ```

use std::fmt;
use std::io::{self, IoSlice};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::task::{Context, Poll};

use amqp_proto::uri::{AmqpUri, ServerNameIndication, Verify};
use bytes::BytesMut;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::error::{TlsError, TlsErrorKind};
use crate::io::Transport;

pub use rustls;

/// Where the trusted CA certificates come from.
#[derive(Clone, Default)]
enum Roots {
    /// The Mozilla root program, as bundled by `webpki-roots`.
    #[default]
    WebPki,
    /// The operating system's store (`rustls-native-certs`).
    Platform,
    /// A PEM file with one or more CA certificates.
    File(PathBuf),
    /// PEM text with one or more CA certificates.
    Pem(Vec<u8>),
    /// DER certificates given in code.
    Der(Vec<CertificateDer<'static>>),
}

impl fmt::Debug for Roots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Roots::WebPki => f.write_str("WebPki"),
            Roots::Platform => f.write_str("Platform"),
            Roots::File(p) => f.debug_tuple("File").field(p).finish(),
            Roots::Pem(pem) => write!(f, "Pem({} bytes)", pem.len()),
            Roots::Der(certs) => write!(f, "Der({} certificates)", certs.len()),
        }
    }
}

/// A PEM source: a file, or the text itself.
#[derive(Clone)]
enum Pem {
    File(PathBuf),
    Bytes(Vec<u8>),
}

impl Pem {
    fn describe(&self) -> String {
        match self {
            Pem::File(p) => p.display().to_string(),
            Pem::Bytes(_) => "the PEM given in code".to_owned(),
        }
    }
}

/// The client certificate chain and its private key. The key is never shown by `Debug`.
#[derive(Clone)]
struct ClientIdentity {
    chain: Pem,
    key: Pem,
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let chain = match &self.chain {
            Pem::File(p) => p.display().to_string(),
            Pem::Bytes(b) => format!("<{} bytes of PEM>", b.len()),
        };
        let key = match &self.key {
            Pem::File(p) => p.display().to_string(),
            Pem::Bytes(_) => "<redacted>".to_owned(),
        };
        f.debug_struct("ClientIdentity")
            .field("chain", &chain)
            .field("key", &key)
            .finish()
    }
}

/// How to set up TLS for an `amqps://` connection. The default verifies the broker against
/// the `webpki-roots` CAs and the URI's host name, and presents no client certificate.
///
/// `Debug` shows file paths but never key material.
#[derive(Clone, Debug, Default)]
pub struct TlsOptions {
    roots: Roots,
    extra_roots: Vec<CertificateDer<'static>>,
    client_cert: Option<ClientIdentity>,
    /// `certfile` or `keyfile` alone (from a URI): reported when connecting.
    half_identity: Option<&'static str>,
    server_name: Option<String>,
    disable_sni: bool,
    accept_invalid_certs: bool,
    custom: Option<Arc<ClientConfig>>,
}

/// What an adapter needs to run the handshake: the rustls configuration and the name the
/// broker's certificate must match (also sent as SNI unless disabled).
#[derive(Debug, Clone)]
pub struct TlsClient {
    /// The rustls client configuration.
    pub config: Arc<ClientConfig>,
    /// The name the certificate is verified against.
    pub server_name: ServerName<'static>,
}

impl TlsOptions {
    /// Verify against the `webpki-roots` CAs and the host name; no client certificate.
    pub fn new() -> Self {
        Self::default()
    }

    /// The TLS settings of a URI: `cacertfile`, `certfile`/`keyfile`,
    /// `server_name_indication`, and `verify=verify_none` (which means
    /// [`TlsOptions::danger_accept_invalid_certs`]).
    pub fn from_uri(uri: &AmqpUri) -> Self {
        let tls = &uri.tls;
        let mut options = TlsOptions::new();
        if let Some(ca) = &tls.cacertfile {
            options = options.with_ca_file(ca);
        }
        match (&tls.certfile, &tls.keyfile) {
            (Some(cert), Some(key)) => options = options.with_client_cert_files(cert, key),
            (Some(_), None) => options.half_identity = Some("certfile is given without keyfile"),
            (None, Some(_)) => options.half_identity = Some("keyfile is given without certfile"),
            (None, None) => {}
        }
        match &tls.server_name_indication {
            Some(ServerNameIndication::Disable) => options.disable_sni = true,
            Some(ServerNameIndication::Name(name)) => options.server_name = Some(name.clone()),
            None => {}
        }
        if tls.verify == Some(Verify::VerifyNone) {
            options.accept_invalid_certs = true;
        }
        options
    }

    /// Trust the CA certificate(s) in this PEM file instead of the default roots.
    #[must_use]
    pub fn with_ca_file(mut self, path: impl AsRef<Path>) -> Self {
        self.roots = Roots::File(path.as_ref().to_path_buf());
        self
    }

    /// Trust the CA certificate(s) in this PEM text instead of the default roots.
    #[must_use]
    pub fn with_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.roots = Roots::Pem(pem.into());
        self
    }

    /// Trust exactly these DER certificates instead of the default roots.
    #[must_use]
    pub fn with_ca_certificates(mut self, certs: Vec<CertificateDer<'static>>) -> Self {
        self.roots = Roots::Der(certs);
        self
    }

    /// Trust the Mozilla roots bundled by `webpki-roots` (the default).
    #[must_use]
    pub fn with_webpki_roots(mut self) -> Self {
        self.roots = Roots::WebPki;
        self
    }

    /// Trust the operating system's CA store.
    #[must_use]
    pub fn with_platform_roots(mut self) -> Self {
        self.roots = Roots::Platform;
        self
    }

    /// Also trust this certificate, on top of whichever roots are chosen.
    #[must_use]
    pub fn add_root_certificate(mut self, cert: CertificateDer<'static>) -> Self {
        self.extra_roots.push(cert);
        self
    }

    /// Present this client certificate (PEM chain, leaf first) with this private key (PEM:
    /// PKCS#8, PKCS#1 or SEC1), for mutual TLS and SASL `EXTERNAL`.
    #[must_use]
    pub fn with_client_cert_files(
        mut self,
        cert_chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Self {
        self.client_cert = Some(ClientIdentity {
            chain: Pem::File(cert_chain.as_ref().to_path_buf()),
            key: Pem::File(key.as_ref().to_path_buf()),
        });
        self.half_identity = None;
        self
    }

    /// Like [`TlsOptions::with_client_cert_files`], with the PEM text itself.
    #[must_use]
    pub fn with_client_cert_pem(
        mut self,
        cert_chain: impl Into<Vec<u8>>,
        key: impl Into<Vec<u8>>,
    ) -> Self {
        self.client_cert = Some(ClientIdentity {
            chain: Pem::Bytes(cert_chain.into()),
            key: Pem::Bytes(key.into()),
        });
        self.half_identity = None;
        self
    }

    /// Verify the certificate against (and send as SNI) this name instead of the URI's host,
    /// e.g. when connecting to an IP address or through a tunnel.
    #[must_use]
    pub fn with_server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// Do not send the SNI extension. The certificate is still verified against the name.
    #[must_use]
    pub fn without_sni(mut self) -> Self {
        self.disable_sni = true;
        self
    }

    /// **Dangerous**: accept any server certificate — unknown issuer, wrong host name,
    /// expired. The connection is encrypted but anyone on the path can impersonate the
    /// broker and read the credentials. A warning is logged on every connect. For tests
    /// against throw-away brokers only.
    #[must_use]
    pub fn danger_accept_invalid_certs(mut self) -> Self {
        self.accept_invalid_certs = true;
        self
    }

    /// Whether [`TlsOptions::danger_accept_invalid_certs`] (or `verify=verify_none`) is set.
    pub fn accepts_invalid_certs(&self) -> bool {
        self.accept_invalid_certs
    }

    /// Use this rustls configuration as it is (roots, client certificate, verification and
    /// SNI come from it); only the server name is still taken from the URI or
    /// [`TlsOptions::with_server_name`].
    #[must_use]
    pub fn with_rustls_config(mut self, config: Arc<ClientConfig>) -> Self {
        self.custom = Some(config);
        self
    }

    /// Reads the files and builds the rustls configuration and the server name for a
    /// connection to `host`. Errors are [`TlsErrorKind::Config`].
    pub fn client_for(&self, host: &str) -> Result<TlsClient, TlsError> {
        let name = self.server_name.as_deref().unwrap_or(host);
        let server_name = ServerName::try_from(name.to_owned())
            .map_err(|e| config_error(format!("{name:?} is not a valid TLS server name: {e}")))?;
        if let Some(config) = &self.custom {
            return Ok(TlsClient {
                config: config.clone(),
                server_name,
            });
        }
        if let Some(problem) = self.half_identity {
            return Err(config_error(format!(
                "a client certificate needs both certfile and keyfile: {problem}"
            )));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| config_error(format!("unusable TLS provider: {e}")))?;
        let builder = if self.accept_invalid_certs {
            tracing::warn!(
                server = name,
                "amqp: TLS certificate verification is DISABLED (danger_accept_invalid_certs / \
                 verify=verify_none): anyone on the network path can impersonate the broker"
            );
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
        } else {
            builder.with_root_certificates(self.root_store()?)
        };
        let mut config = match &self.client_cert {
            None => builder.with_no_client_auth(),
            Some(identity) => {
                let (chain, key) = load_identity(identity)?;
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    config_error(format!(
                        "the client certificate {} and its key {} cannot be used together: {e}",
                        identity.chain.describe(),
                        identity.key.describe(),
                    ))
                })?
            }
        };
        config.enable_sni = !self.disable_sni;
        Ok(TlsClient {
            config: Arc::new(config),
            server_name,
        })
    }

    fn root_store(&self) -> Result<RootCertStore, TlsError> {
        let mut store = RootCertStore::empty();
        match &self.roots {
            Roots::WebPki => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            Roots::Platform => {
                let found = rustls_native_certs::load_native_certs();
                let (added, _) = store.add_parsable_certificates(found.certs);
                if added == 0 {
                    let why = found
                        .errors
                        .first()
                        .map_or_else(|| "none found".to_owned(), ToString::to_string);
                    return Err(config_error(format!(
                        "no usable CA certificate in the platform store ({why}); give a \
                         cacertfile"
                    )));
                }
            }
            Roots::File(path) => add_pem_roots(
                &mut store,
                &format!("CA file {}", path.display()),
                CertificateDer::pem_file_iter(path),
            )?,
            Roots::Pem(pem) => add_pem_roots(
                &mut store,
                "the CA PEM",
                Ok(CertificateDer::pem_slice_iter(pem)),
            )?,
            Roots::Der(certs) => add_roots(&mut store, certs.iter().cloned(), "the given CA")?,
        }
        add_roots(&mut store, self.extra_roots.iter().cloned(), "the added CA")?;
        Ok(store)
    }
}

fn config_error(message: String) -> TlsError {
    TlsError::new(TlsErrorKind::Config, message, None)
}

fn add_roots(
    store: &mut RootCertStore,
    certs: impl Iterator<Item = CertificateDer<'static>>,
    what: &str,
) -> Result<(), TlsError> {
    for cert in certs {
        store
            .add(cert)
            .map_err(|e| config_error(format!("{what} certificate is not usable: {e}")))?;
    }
    Ok(())
}

fn add_pem_roots<I>(
    store: &mut RootCertStore,
    what: &str,
    certs: Result<I, rustls::pki_types::pem::Error>,
) -> Result<(), TlsError>
where
    I: Iterator<Item = Result<CertificateDer<'static>, rustls::pki_types::pem::Error>>,
{
    let certs = certs.map_err(|e| config_error(format!("cannot read {what}: {e}")))?;
    let mut count = 0;
    for cert in certs {
        let cert = cert.map_err(|e| config_error(format!("cannot read {what}: {e}")))?;
        store.add(cert).map_err(|e| {
            config_error(format!(
                "{what} holds a certificate that is not usable: {e}"
            ))
        })?;
        count += 1;
    }
    if count == 0 {
        return Err(config_error(format!(
            "{what} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        )));
    }
    Ok(())
}

fn load_identity(
    identity: &ClientIdentity,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let chain_name = identity.chain.describe();
    let chain: Result<Vec<_>, _> = match &identity.chain {
        Pem::File(path) => CertificateDer::pem_file_iter(path).and_then(Iterator::collect),
        Pem::Bytes(pem) => CertificateDer::pem_slice_iter(pem).collect(),
    };
    let chain = chain.map_err(|e| {
        config_error(format!(
            "cannot read the client certificate {chain_name}: {e}"
        ))
    })?;
    if chain.is_empty() {
        return Err(config_error(format!(
            "the client certificate {chain_name} holds no PEM certificate"
        )));
    }
    let key_name = identity.key.describe();
    let key = match &identity.key {
        Pem::File(path) => PrivateKeyDer::from_pem_file(path),
        Pem::Bytes(pem) => PrivateKeyDer::from_pem_slice(pem),
    }
    // The pem error names the section kind or the I/O problem, never key bytes.
    .map_err(|e| config_error(format!("cannot read the client key {key_name}: {e}")))?;
    Ok((chain, key))
}

/// Verifies handshake signatures (so the peer must hold the key it presents) but accepts any
/// certificate. Only reachable through `danger_accept_invalid_certs` / `verify=verify_none`.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
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

impl TlsError {
    /// Classifies an I/O error from a TLS handshake (as `tokio-rustls` and `futures-rustls`
    /// return them, with the [`rustls::Error`] inside): certificate rejected, rejected by the
    /// broker, not a TLS port, or the connection broke.
    pub fn from_handshake(error: io::Error) -> TlsError {
        let inner = error
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
            .cloned();
        let Some(tls) = inner else {
            let (kind, message) = match error.kind() {
                io::ErrorKind::UnexpectedEof
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe => (
                    TlsErrorKind::Handshake,
                    format!(
                        "the broker closed the connection during the TLS handshake ({error}); \
                         is this its TLS port, and does it require a client certificate?"
                    ),
                ),
                _ => (
                    TlsErrorKind::Handshake,
                    format!("the TLS handshake failed: {error}"),
                ),
            };
            return TlsError::new(kind, message, Some(Box::new(error)));
        };
        let (kind, hint) = match &tls {
            rustls::Error::InvalidCertificate(_) => (
                TlsErrorKind::CertificateRejected,
                "the broker's certificate was rejected; check cacertfile and the host name \
                 (or server_name_indication)",
            ),
            rustls::Error::AlertReceived(_) => (
                TlsErrorKind::RejectedByServer,
                "the broker refused the handshake (client certificate missing or not trusted?)",
            ),
            rustls::Error::InvalidMessage(_)
            | rustls::Error::InappropriateMessage { .. }
            | rustls::Error::InappropriateHandshakeMessage { .. } => (
                TlsErrorKind::NotTls,
                "the peer does not speak TLS here (a plain amqp:// port?)",
            ),
            _ => (TlsErrorKind::Handshake, "the TLS handshake failed"),
        };
        TlsError::new(kind, format!("{hint}: {tls}"), Some(Box::new(tls)))
    }

    /// The rustls error behind this failure, if rustls reported one.
    pub fn rustls_error(&self) -> Option<&rustls::Error> {
        self.source_ref()?.downcast_ref::<rustls::Error>()
    }
}

/// A plain or a TLS transport: what [`connect_with_tls_transport`](crate::connect_with_tls_transport) hands to the driver.
///
/// With TLS 1.3 the broker checks the client certificate after the client considers the
/// handshake done, so a rejected (or missing but required) certificate shows up as the
/// session ending before the broker sent anything; such failures get a hint saying so.
#[derive(Debug)]
pub struct MaybeTls<P, S>(Inner<P, S>);

#[derive(Debug)]
enum Inner<P, S> {
    Plain(P),
    Tls { io: S, received: bool },
}

impl<P, S> MaybeTls<P, S> {
    /// A plain (`amqp://`) transport.
    pub fn plain(io: P) -> Self {
        MaybeTls(Inner::Plain(io))
    }

    /// A TLS (`amqps://`) transport whose handshake is done.
    pub fn tls(io: S) -> Self {
        MaybeTls(Inner::Tls {
            io,
            received: false,
        })
    }

    /// Whether this is the TLS one.
    pub fn is_tls(&self) -> bool {
        matches!(self.0, Inner::Tls { .. })
    }
}

const EARLY_END_HINT: &str = "the broker ended the TLS session before sending anything: did it \
                              reject the client certificate, or require one?";

/// Adds [`EARLY_END_HINT`] to a failure before anything was received.
fn early_end(e: io::Error, received: bool) -> io::Error {
    if received || e.kind() == io::ErrorKind::Interrupted || e.kind() == io::ErrorKind::WouldBlock {
        return e;
    }
    io::Error::new(e.kind(), format!("{e}; {EARLY_END_HINT}"))
}

impl<P: Transport, S: Transport> Transport for MaybeTls<P, S> {
    fn poll_read_buf(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        max: usize,
    ) -> Poll<io::Result<usize>> {
        match &mut self.0 {
            Inner::Plain(t) => t.poll_read_buf(cx, buf, max),
            Inner::Tls { io, received } => {
                let result = std::task::ready!(io.poll_read_buf(cx, buf, max));
                Poll::Ready(match result {
                    Ok(0) if !*received => {
                        Err(io::Error::new(io::ErrorKind::UnexpectedEof, EARLY_END_HINT))
                    }
                    Ok(n) => {
                        *received = true;
                        Ok(n)
                    }
                    Err(e) => Err(early_end(e, *received)),
                })
            }
        }
    }

    fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.0 {
            Inner::Plain(t) => t.poll_write_vectored(cx, bufs),
            Inner::Tls { io, received } => io
                .poll_write_vectored(cx, bufs)
                .map_err(|e| early_end(e, *received)),
        }
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.0 {
            Inner::Plain(t) => t.poll_flush(cx),
            Inner::Tls { io, received } => io.poll_flush(cx).map_err(|e| early_end(e, *received)),
        }
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.0 {
            Inner::Plain(t) => t.poll_shutdown(cx),
            Inner::Tls { io, .. } => io.poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> AmqpUri {
        AmqpUri::parse(s).unwrap()
    }

    #[test]
    fn uri_parameters_map_to_options() {
        let options = TlsOptions::from_uri(&uri("amqps://h/?verify=verify_none"));
        assert!(options.accepts_invalid_certs());
        let client = options.client_for("h").unwrap();
        assert!(client.config.enable_sni);

        let options = TlsOptions::from_uri(&uri("amqps://h/?server_name_indication=disable"));
        assert!(!options.accepts_invalid_certs());
        let client = options.client_for("h").unwrap();
        assert!(!client.config.enable_sni);
        assert_eq!(client.server_name, ServerName::try_from("h").unwrap());

        let options = TlsOptions::from_uri(&uri("amqps://10.0.0.1/?server_name_indication=rabbit"));
        let client = options.client_for("10.0.0.1").unwrap();
        assert_eq!(client.server_name, ServerName::try_from("rabbit").unwrap());

        let client = TlsOptions::new().client_for("::1").unwrap();
        assert!(matches!(client.server_name, ServerName::IpAddress(_)));
    }

    #[test]
    fn bad_settings_are_config_errors() {
        for (options, needle) in [
            (
                TlsOptions::new().with_ca_pem("not a certificate"),
                "no PEM certificate",
            ),
            (
                TlsOptions::new().with_ca_file("/nonexistent/ca.pem"),
                "/nonexistent/ca.pem",
            ),
            (
                TlsOptions::from_uri(&uri("amqps://h/?keyfile=/k.pem")),
                "keyfile is given without certfile",
            ),
            (
                TlsOptions::new().with_client_cert_pem("", "-----BEGIN PRIVATE KEY-----"),
                "holds no PEM certificate",
            ),
            (
                TlsOptions::new().with_server_name("bad name!"),
                "not a valid TLS server name",
            ),
        ] {
            let err = options.client_for("h").unwrap_err();
            assert_eq!(err.kind(), TlsErrorKind::Config);
            assert!(err.to_string().contains(needle), "{err}");
        }
    }

    #[test]
    fn debug_never_shows_key_material() {
        let options = TlsOptions::new()
            .with_client_cert_pem("CERT-PEM-TEXT", "KEY-PEM-TEXT-hunter2")
            .with_ca_pem("CA-PEM-TEXT");
        let shown = format!("{options:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("PEM-TEXT"), "{shown}");
        let shown = format!(
            "{:?}",
            TlsOptions::new().with_client_cert_files("/c.pem", "/k.pem")
        );
        assert!(shown.contains("/k.pem"), "{shown}");
    }

    #[test]
    fn handshake_errors_are_classified() {
        let wrap = |e: rustls::Error| io::Error::new(io::ErrorKind::InvalidData, e);
        let err = TlsError::from_handshake(wrap(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        )));
        assert_eq!(err.kind(), TlsErrorKind::CertificateRejected);
        assert!(err.to_string().contains("UnknownIssuer"), "{err}");
        assert!(err.rustls_error().is_some());
        let err = TlsError::from_handshake(wrap(rustls::Error::AlertReceived(
            rustls::AlertDescription::CertificateRequired,
        )));
        assert_eq!(err.kind(), TlsErrorKind::RejectedByServer);
        let err = TlsError::from_handshake(wrap(rustls::Error::InvalidMessage(
            rustls::InvalidMessage::InvalidContentType,
        )));
        assert_eq!(err.kind(), TlsErrorKind::NotTls);
        let err = TlsError::from_handshake(io::ErrorKind::UnexpectedEof.into());
        assert_eq!(err.kind(), TlsErrorKind::Handshake);
        assert!(err.to_string().contains("closed the connection"), "{err}");
    }
}
