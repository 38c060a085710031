//! Parsing of `amqp://` and `amqps://` connection URIs.
//!
//! The accepted syntax follows the RabbitMQ URI specification:
//!
//! ```text
//! amqp[s]://[username[:password]@]host[:port][/vhost][?name=value&...]
//! ```
//!
//! Username, password, host and vhost are percent-decoded. Query
//! parameters are the ones the RabbitMQ documentation lists for its own
//! clients (`heartbeat`, `frame_max`, `channel_max`, `connection_timeout`,
//! `auth_mechanism` and the TLS file/verification settings), and this client's
//! `request_timeout`.
//!
//! Parsing is pure: nothing is resolved, opened or read. Passwords are held
//! in a [`Secret`], so neither `Debug` nor `Display` of an [`AmqpUri`]
//! reveals them.
//!
//! Choices made where the specification leaves room:
//!
//! * An absent host (`amqp://`, `amqp://:5673`) means [`DEFAULT_HOST`].
//! * An absent username or password stays `None`; [`AmqpUri::username`] and
//!   [`AmqpUri::expose_password`] fall back to `guest`. A present but empty
//!   one (`amqp://:@host`) is kept as the empty string.
//! * An absent path means the vhost `/`; a bare trailing `/` means the empty
//!   vhost; an unencoded `/` inside the vhost is an error.
//! * An empty port (`amqp://host:`) means the scheme's default port; port 0
//!   is rejected.
//! * Characters that RFC 3986 does not allow unencoded in a component are
//!   rejected rather than passed through, so a password with a stray `@` or
//!   space is reported instead of being mis-split.
//! * In the query, `+` is a literal plus (not a space): the values are file
//!   paths and names, not HTML form data.
//! * A known single-valued parameter given twice is an error; unknown
//!   parameters are kept in [`AmqpUri::unknown`], in order, because other
//!   clients define extra ones (for example `ssl_options`) and a URI shared
//!   between clients should still parse.
//! * TLS parameters on an `amqp://` URI are an error, since silently
//!   connecting without TLS is the likely outcome of a typo in the scheme.

use core::net::Ipv6Addr;
use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

/// Username used by [`AmqpUri::username`] when the URI gives none.
pub const DEFAULT_USERNAME: &str = "guest";
/// Password used by [`AmqpUri::expose_password`] when the URI gives none.
pub const DEFAULT_PASSWORD: &str = "guest";
/// Host used when the URI's host is empty.
pub const DEFAULT_HOST: &str = "localhost";
/// Vhost used when the URI has no path at all.
pub const DEFAULT_VHOST: &str = "/";

/// Placeholder written wherever a secret would otherwise be shown.
const REDACTED: &str = "***";

/// AMQP short strings, which carry the vhost in `connection.open`, hold at
/// most this many bytes.
const MAX_VHOST_LEN: usize = 255;

/// Everything except RFC 3986 "unreserved" is escaped, which is valid in
/// every component we write.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Query values are often file paths; leaving `/` and `:` readable is still
/// valid RFC 3986 query syntax.
const QUERY_VALUE: &AsciiSet = &COMPONENT.remove(b'/').remove(b':');

/// A string that must not end up in logs: `Debug` and `Display` print
/// `***`, and the value is reached only through [`Secret::expose`].
///
/// ```
/// use amqp_proto::uri::Secret;
///
/// let s = Secret::new("hunter2");
/// assert_eq!(format!("{s} {s:?}"), "*** Secret(***)");
/// assert_eq!(s.expose(), "hunter2");
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Secret(String);

impl Secret {
    /// Wraps a sensitive value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// Returns the sensitive value. Callers take responsibility for not
    /// logging it.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Unwraps the sensitive value.
    #[must_use]
    pub fn into_exposed(self) -> String {
        self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({REDACTED})")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// URI scheme: plain TCP or TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Scheme {
    /// `amqp://`, plain TCP.
    #[default]
    Amqp,
    /// `amqps://`, TLS.
    Amqps,
}

impl Scheme {
    /// Port used when the URI gives none: 5672 for `amqp`, 5671 for `amqps`.
    #[must_use]
    pub const fn default_port(self) -> u16 {
        match self {
            Self::Amqp => 5672,
            Self::Amqps => 5671,
        }
    }

    /// Whether the connection must use TLS.
    #[must_use]
    pub const fn is_tls(self) -> bool {
        matches!(self, Self::Amqps)
    }

    /// The scheme name as written in a URI, lowercase.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Amqp => "amqp",
            Self::Amqps => "amqps",
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `verify` query parameter: whether to check the server certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verify {
    /// `verify_peer`: check the server's certificate chain.
    VerifyPeer,
    /// `verify_none`: accept any server certificate. Dangerous: the adapters log a warning
    /// on every connect (it is `TlsOptions::danger_accept_invalid_certs` in code).
    VerifyNone,
}

impl Verify {
    /// The value as written in a URI.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::VerifyPeer => "verify_peer",
            Self::VerifyNone => "verify_none",
        }
    }
}

impl fmt::Display for Verify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `server_name_indication` query parameter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ServerNameIndication {
    /// `disable`: send no SNI extension.
    Disable,
    /// Send this name (and, where the TLS layer does so, verify against it)
    /// instead of the URI's host.
    Name(String),
}

/// TLS settings from the query; only allowed on `amqps://` URIs.
///
/// Parsing only records them; the adapters (feature `tls`, through
/// `amqp_client::tls::TlsOptions::from_uri`) apply them when connecting:
///
/// | parameter | effect |
/// | --- | --- |
/// | `cacertfile=PATH` | trust the PEM CA certificate(s) in `PATH` instead of the bundled `webpki-roots` |
/// | `certfile=PATH&keyfile=PATH` | present this PEM client certificate (chain) and key (PKCS#8, PKCS#1 or SEC1); both or neither |
/// | `auth_mechanism=external` | log in with that certificate (SASL EXTERNAL; RabbitMQ needs `rabbitmq_auth_mechanism_ssl`) |
/// | `server_name_indication=NAME` | send `NAME` as SNI **and verify the certificate against it** instead of the host |
/// | `server_name_indication=disable` | send no SNI; the certificate is still verified against the host |
/// | `verify=verify_peer` | the default: verify the chain and the host name |
/// | `verify=verify_none` | accept any certificate (logged as a warning on every connect); tests only |
///
/// Files are read when connecting. The host name (or IP address) is always verified unless
/// `verify=verify_none`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsParams {
    /// `cacertfile`: path to the PEM CA certificate(s) to trust.
    pub cacertfile: Option<String>,
    /// `certfile`: path to the PEM client certificate (chain, leaf first).
    pub certfile: Option<String>,
    /// `keyfile`: path to the PEM client private key.
    pub keyfile: Option<String>,
    /// `verify`: peer verification mode.
    pub verify: Option<Verify>,
    /// `server_name_indication`: SNI (and verified name) override, or `disable`.
    pub server_name_indication: Option<ServerNameIndication>,
}

impl TlsParams {
    /// Whether no TLS parameter was given.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// A parsed AMQP URI with defaults applied where the client has no choice
/// to make (host, port, vhost).
///
/// `Debug` and `Display` never show the password: `Display` writes a URI
/// with `***` in its place. Use [`AmqpUri::expose_uri_with_password`] for a
/// URI that can be parsed back into the same value. Values of unknown query
/// parameters whose name contains `password`, `passwd`, `secret` or `token`
/// are hidden the same way.
#[derive(Clone, PartialEq, Eq)]
pub struct AmqpUri {
    /// `amqp` or `amqps`.
    pub scheme: Scheme,
    /// Decoded username; `None` when the URI has no userinfo.
    pub username: Option<String>,
    /// Decoded password; `None` when the userinfo has no `:`.
    pub password: Option<Secret>,
    /// Decoded host, without brackets for IPv6 literals;
    /// [`DEFAULT_HOST`] when the URI's host is empty.
    pub host: String,
    /// Port, or the scheme's default port.
    pub port: u16,
    /// Decoded vhost; [`DEFAULT_VHOST`] when the URI has no path.
    pub vhost: String,
    /// `heartbeat`, in seconds.
    pub heartbeat: Option<u16>,
    /// `frame_max`, in bytes.
    pub frame_max: Option<u32>,
    /// `channel_max`.
    pub channel_max: Option<u16>,
    /// `connection_timeout` (given in milliseconds).
    pub connection_timeout: Option<Duration>,
    /// `request_timeout` (given in milliseconds; 0: no limit), this client's own: see
    /// [`ConnectionConfig::request_timeout`](crate::ConnectionConfig::request_timeout).
    pub request_timeout: Option<Duration>,
    /// Every `auth_mechanism` value, lowercased, in the order given.
    pub auth_mechanisms: Vec<String>,
    /// TLS query parameters.
    pub tls: TlsParams,
    /// Query parameters this parser does not know, decoded, in order.
    pub unknown: Vec<(String, String)>,
}

impl Default for AmqpUri {
    /// The equivalent of `amqp://localhost:5672` with the default vhost.
    fn default() -> Self {
        Self {
            scheme: Scheme::Amqp,
            username: None,
            password: None,
            host: DEFAULT_HOST.to_owned(),
            port: Scheme::Amqp.default_port(),
            vhost: DEFAULT_VHOST.to_owned(),
            heartbeat: None,
            frame_max: None,
            channel_max: None,
            connection_timeout: None,
            request_timeout: None,
            auth_mechanisms: Vec::new(),
            tls: TlsParams::default(),
            unknown: Vec::new(),
        }
    }
}

/// The part of a URI that an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum UriPart {
    /// The username in the userinfo.
    Username,
    /// The password in the userinfo.
    Password,
    /// The host.
    Host,
    /// The vhost (the path).
    Vhost,
    /// A query parameter's name.
    QueryName,
    /// A query parameter's value.
    QueryValue,
}

impl fmt::Display for UriPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Username => "username",
            Self::Password => "password",
            Self::Host => "host",
            Self::Vhost => "vhost",
            Self::QueryName => "query parameter name",
            Self::QueryValue => "query parameter value",
        })
    }
}

/// Why a URI was rejected.
///
/// Messages never quote the password, nor the port text (which is where a
/// password holding an unencoded `/` or `?` ends up).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UriError {
    /// The input does not start with `scheme://`.
    #[error("not a URI: expected it to start with amqp:// or amqps://")]
    MissingScheme,
    /// The scheme is neither `amqp` nor `amqps`.
    #[error("unsupported URI scheme {scheme:?}: expected amqp or amqps")]
    UnsupportedScheme {
        /// The scheme as written.
        scheme: String,
    },
    /// A character that must be percent-encoded appears as is.
    #[error("{}", invalid_character_message(*.part, *.ch))]
    InvalidCharacter {
        /// Where it was found.
        part: UriPart,
        /// The character; `None` when it is part of the password.
        ch: Option<char>,
    },
    /// A `%` escape is malformed, or the decoded bytes are not UTF-8.
    #[error("bad percent-encoding in {part}: {reason}")]
    PercentEncoding {
        /// Where it was found.
        part: UriPart,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The host is malformed (bad IPv6 literal or brackets).
    #[error("invalid host: {reason}")]
    Host {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The port is not a usable TCP port number.
    #[error("invalid port: {reason}")]
    Port {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The vhost cannot be used.
    #[error("invalid vhost: {reason}")]
    Vhost {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The URI has a `#fragment`, which AMQP URIs do not have.
    #[error("AMQP URIs have no fragment: '#' must be percent-encoded as %23")]
    Fragment,
    /// A query parameter has an empty name (as in `?=5`).
    #[error("query parameter with an empty name")]
    EmptyParamName,
    /// A known query parameter has a value it cannot take.
    #[error("invalid value {value:?} for query parameter {name}: {reason}")]
    InvalidParamValue {
        /// The parameter's name.
        name: String,
        /// The decoded value.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A single-valued query parameter appears more than once.
    #[error("query parameter {name} is given more than once")]
    DuplicateParam {
        /// The parameter's name.
        name: String,
    },
    /// A TLS query parameter appears on an `amqp://` (non-TLS) URI.
    #[error("query parameter {name} needs TLS: use an amqps:// URI")]
    TlsParamWithoutTls {
        /// The parameter's name.
        name: String,
    },
}

fn invalid_character_message(part: UriPart, ch: Option<char>) -> String {
    match ch {
        Some(c) => format!("invalid character {c:?} in {part}: percent-encode it"),
        None => format!("invalid character in {part}: percent-encode reserved characters"),
    }
}

impl AmqpUri {
    /// Parses an `amqp://` or `amqps://` URI.
    ///
    /// # Errors
    ///
    /// Returns a [`UriError`] naming the part of the URI that is malformed
    /// or holds an unusable value.
    ///
    /// ```
    /// use std::time::Duration;
    /// use amqp_proto::uri::{AmqpUri, Scheme};
    ///
    /// let uri = AmqpUri::parse(
    ///     "amqps://app:s%3Acret@rabbit.example:5673/prod%2Fa?heartbeat=30&connection_timeout=5000",
    /// )?;
    /// assert_eq!(uri.scheme, Scheme::Amqps);
    /// assert_eq!(uri.username(), "app");
    /// assert_eq!(uri.expose_password(), "s:cret");
    /// assert_eq!(uri.host, "rabbit.example");
    /// assert_eq!(uri.port, 5673);
    /// assert_eq!(uri.vhost, "prod/a");
    /// assert_eq!(uri.heartbeat, Some(30));
    /// assert_eq!(uri.connection_timeout, Some(Duration::from_secs(5)));
    ///
    /// // The password never shows up when formatting.
    /// assert_eq!(
    ///     uri.to_string(),
    ///     "amqps://app:***@rabbit.example:5673/prod%2Fa?heartbeat=30&connection_timeout=5000",
    /// );
    ///
    /// // Defaults: localhost, the scheme's port, vhost "/", guest/guest.
    /// let uri: AmqpUri = "amqp://".parse()?;
    /// assert_eq!((uri.host.as_str(), uri.port, uri.vhost.as_str()), ("localhost", 5672, "/"));
    /// assert_eq!((uri.username(), uri.expose_password()), ("guest", "guest"));
    /// # Ok::<(), amqp_proto::uri::UriError>(())
    /// ```
    pub fn parse(input: &str) -> Result<Self, UriError> {
        let (scheme, rest) = split_scheme(input)?;
        if rest.contains('#') {
            return Err(UriError::Fragment);
        }
        let (before_query, query) = match rest.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = match before_query.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (before_query, None),
        };
        // The last '@' ends the userinfo, so an unencoded '@' in a password
        // is reported as an invalid password character, not as a bad host.
        let (userinfo, host_port) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };

        let (username, password) = match userinfo {
            None => (None, None),
            Some(info) => match info.split_once(':') {
                Some((user, pass)) => (
                    Some(decode(UriPart::Username, user)?),
                    Some(Secret(decode(UriPart::Password, pass)?)),
                ),
                None => (Some(decode(UriPart::Username, info)?), None),
            },
        };
        let (host, port) = parse_host_port(host_port, scheme)?;
        let vhost = match path {
            None => DEFAULT_VHOST.to_owned(),
            Some(segment) => parse_vhost(segment)?,
        };

        let mut uri = Self {
            scheme,
            username,
            password,
            host,
            port,
            vhost,
            ..Self::default()
        };
        if let Some(query) = query {
            uri.apply_query(query)?;
        }
        Ok(uri)
    }

    /// The username to authenticate with: the URI's, or `guest`.
    #[must_use]
    pub fn username(&self) -> &str {
        self.username.as_deref().unwrap_or(DEFAULT_USERNAME)
    }

    /// The password to authenticate with: the URI's, or `guest`.
    ///
    /// The name is a reminder that the result must not be logged.
    #[must_use]
    pub fn expose_password(&self) -> &str {
        self.password
            .as_ref()
            .map_or(DEFAULT_PASSWORD, |secret| secret.expose())
    }

    /// Writes the URI with the real password, such that
    /// [`AmqpUri::parse`] gives back an equal value (for values that
    /// parsing can produce). The result is sensitive.
    #[must_use]
    pub fn expose_uri_with_password(&self) -> String {
        self.render(true)
    }

    fn apply_query(&mut self, query: &str) -> Result<(), UriError> {
        // Empty pieces (`a=1&&b=2`, a trailing `&`) carry nothing.
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = decode(UriPart::QueryName, raw_name)?;
            let value = decode(UriPart::QueryValue, raw_value)?;
            if name.is_empty() {
                return Err(UriError::EmptyParamName);
            }
            self.apply_param(name, value)?;
        }
        Ok(())
    }

    fn apply_param(&mut self, name: String, value: String) -> Result<(), UriError> {
        let is_tls_param = matches!(
            name.as_str(),
            "cacertfile" | "certfile" | "keyfile" | "verify" | "server_name_indication"
        );
        if is_tls_param && !self.scheme.is_tls() {
            return Err(UriError::TlsParamWithoutTls { name });
        }
        match name.as_str() {
            "heartbeat" => set_once(&mut self.heartbeat, parse_number(&name, &value)?, &name),
            "frame_max" => set_once(&mut self.frame_max, parse_number(&name, &value)?, &name),
            "channel_max" => set_once(&mut self.channel_max, parse_number(&name, &value)?, &name),
            "connection_timeout" => {
                let millis: u64 = parse_number(&name, &value)?;
                set_once(
                    &mut self.connection_timeout,
                    Duration::from_millis(millis),
                    &name,
                )
            }
            "request_timeout" => {
                let millis: u64 = parse_number(&name, &value)?;
                set_once(
                    &mut self.request_timeout,
                    Duration::from_millis(millis),
                    &name,
                )
            }
            "auth_mechanism" => {
                if value.is_empty() {
                    return Err(invalid_value(name, value, "must not be empty"));
                }
                self.auth_mechanisms.push(value.to_ascii_lowercase());
                Ok(())
            }
            "cacertfile" => set_once(&mut self.tls.cacertfile, non_empty(&name, value)?, &name),
            "certfile" => set_once(&mut self.tls.certfile, non_empty(&name, value)?, &name),
            "keyfile" => set_once(&mut self.tls.keyfile, non_empty(&name, value)?, &name),
            "verify" => {
                let verify = match value.as_str() {
                    "verify_peer" => Verify::VerifyPeer,
                    "verify_none" => Verify::VerifyNone,
                    _ => {
                        return Err(invalid_value(
                            name,
                            value,
                            "expected verify_peer or verify_none",
                        ));
                    }
                };
                set_once(&mut self.tls.verify, verify, &name)
            }
            "server_name_indication" => {
                let sni = match non_empty(&name, value)? {
                    v if v == "disable" => ServerNameIndication::Disable,
                    v => ServerNameIndication::Name(v),
                };
                set_once(&mut self.tls.server_name_indication, sni, &name)
            }
            _ => {
                self.unknown.push((name, value));
                Ok(())
            }
        }
    }

    /// Builds the URI text; `expose` chooses between the real password and
    /// the placeholder.
    fn render(&self, expose: bool) -> String {
        let mut out = String::new();
        out.push_str(self.scheme.as_str());
        out.push_str("://");
        if self.username.is_some() || self.password.is_some() {
            out.extend(utf8_percent_encode(
                self.username.as_deref().unwrap_or(""),
                COMPONENT,
            ));
            if let Some(password) = &self.password {
                out.push(':');
                if expose {
                    out.extend(utf8_percent_encode(password.expose(), COMPONENT));
                } else {
                    out.push_str(REDACTED);
                }
            }
            out.push('@');
        }
        // A host that reads as an IPv6 address must be bracketed, or its
        // colons would be taken for the port separator.
        if self.host.parse::<Ipv6Addr>().is_ok() {
            out.push('[');
            out.push_str(&self.host);
            out.push(']');
        } else {
            out.extend(utf8_percent_encode(&self.host, COMPONENT));
        }
        out.push(':');
        out.push_str(&self.port.to_string());
        // No path stands for the default vhost; anything else, including
        // the empty vhost, needs the slash.
        if self.vhost != DEFAULT_VHOST {
            out.push('/');
            out.extend(utf8_percent_encode(&self.vhost, COMPONENT));
        }

        let mut params: Vec<(&str, Cow<'_, str>)> = Vec::new();
        if let Some(v) = self.heartbeat {
            params.push(("heartbeat", v.to_string().into()));
        }
        if let Some(v) = self.frame_max {
            params.push(("frame_max", v.to_string().into()));
        }
        if let Some(v) = self.channel_max {
            params.push(("channel_max", v.to_string().into()));
        }
        if let Some(v) = self.connection_timeout {
            params.push(("connection_timeout", v.as_millis().to_string().into()));
        }
        if let Some(v) = self.request_timeout {
            params.push(("request_timeout", v.as_millis().to_string().into()));
        }
        for mechanism in &self.auth_mechanisms {
            params.push(("auth_mechanism", mechanism.as_str().into()));
        }
        let tls = &self.tls;
        for (name, path) in [
            ("cacertfile", &tls.cacertfile),
            ("certfile", &tls.certfile),
            ("keyfile", &tls.keyfile),
        ] {
            if let Some(path) = path {
                params.push((name, path.as_str().into()));
            }
        }
        if let Some(v) = tls.verify {
            params.push(("verify", v.as_str().into()));
        }
        match &tls.server_name_indication {
            Some(ServerNameIndication::Disable) => {
                params.push(("server_name_indication", "disable".into()));
            }
            Some(ServerNameIndication::Name(name)) => {
                params.push(("server_name_indication", name.as_str().into()));
            }
            None => {}
        }
        for (name, value) in &self.unknown {
            let value = if !expose && is_sensitive_param(name) {
                REDACTED
            } else {
                value.as_str()
            };
            params.push((name.as_str(), value.into()));
        }

        for (i, (name, value)) in params.iter().enumerate() {
            out.push(if i == 0 { '?' } else { '&' });
            out.extend(utf8_percent_encode(name, COMPONENT));
            out.push('=');
            if value == REDACTED {
                // Written raw so it reads as a placeholder, not as `%2A%2A%2A`.
                out.push_str(REDACTED);
            } else {
                out.extend(utf8_percent_encode(value, QUERY_VALUE));
            }
        }
        out
    }
}

impl FromStr for AmqpUri {
    type Err = UriError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for AmqpUri {
    /// Writes the URI with the password replaced by `***`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(false))
    }
}

impl fmt::Debug for AmqpUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpUri")
            .field("scheme", &self.scheme)
            .field("username", &self.username)
            .field("password", &self.password)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("vhost", &self.vhost)
            .field("heartbeat", &self.heartbeat)
            .field("frame_max", &self.frame_max)
            .field("channel_max", &self.channel_max)
            .field("connection_timeout", &self.connection_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("auth_mechanisms", &self.auth_mechanisms)
            .field("tls", &self.tls)
            .field("unknown", &RedactedParams(&self.unknown))
            .finish()
    }
}

/// Debug view of unknown parameters that hides password-like values
/// (the Erlang client, for one, takes a key `password` in the query).
struct RedactedParams<'a>(&'a [(String, String)]);

impl fmt::Debug for RedactedParams<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(name, value)| {
                let shown = if is_sensitive_param(name) {
                    REDACTED
                } else {
                    value.as_str()
                };
                (name.as_str(), shown)
            }))
            .finish()
    }
}

fn is_sensitive_param(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["password", "passwd", "secret", "token"]
        .iter()
        .any(|word| name.contains(word))
}

fn split_scheme(input: &str) -> Result<(Scheme, &str), UriError> {
    let Some((name, rest)) = input.split_once("://") else {
        return Err(UriError::MissingScheme);
    };
    // RFC 3986: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ). Anything else
    // means "://" came later in the text, e.g. inside a query value.
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !valid {
        return Err(UriError::MissingScheme);
    }
    let scheme = if name.eq_ignore_ascii_case("amqp") {
        Scheme::Amqp
    } else if name.eq_ignore_ascii_case("amqps") {
        Scheme::Amqps
    } else {
        return Err(UriError::UnsupportedScheme {
            scheme: name.to_owned(),
        });
    };
    Ok((scheme, rest))
}

fn parse_host_port(host_port: &str, scheme: Scheme) -> Result<(String, u16), UriError> {
    let (host, port) = if let Some(bracketed) = host_port.strip_prefix('[') {
        let Some((literal, tail)) = bracketed.split_once(']') else {
            return Err(UriError::Host {
                reason: "IPv6 literal is missing its closing ']'",
            });
        };
        if literal.parse::<Ipv6Addr>().is_err() {
            return Err(UriError::Host {
                reason: "text in brackets is not an IPv6 address",
            });
        }
        let port = if tail.is_empty() {
            None
        } else if let Some(port) = tail.strip_prefix(':') {
            Some(port)
        } else {
            return Err(UriError::Host {
                reason: "unexpected text after the IPv6 literal",
            });
        };
        (literal.to_owned(), port)
    } else {
        let (raw_host, port) = match host_port.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        };
        let host = decode(UriPart::Host, raw_host)?;
        let host = if host.is_empty() {
            DEFAULT_HOST.to_owned()
        } else {
            host
        };
        (host, port)
    };
    let port = match port {
        None | Some("") => scheme.default_port(),
        Some(text) => parse_port(text)?,
    };
    Ok((host, port))
}

fn parse_port(text: &str) -> Result<u16, UriError> {
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UriError::Port {
            reason: "not a decimal number",
        });
    }
    match text.parse::<u16>() {
        Ok(0) => Err(UriError::Port {
            reason: "port 0 cannot be connected to",
        }),
        Ok(port) => Ok(port),
        Err(_) => Err(UriError::Port {
            reason: "greater than 65535",
        }),
    }
}

fn parse_vhost(segment: &str) -> Result<String, UriError> {
    if segment.contains('/') {
        return Err(UriError::Vhost {
            reason: "contains an unencoded '/': write it as %2F",
        });
    }
    let vhost = decode(UriPart::Vhost, segment)?;
    if vhost.len() > MAX_VHOST_LEN {
        return Err(UriError::Vhost {
            reason: "longer than 255 bytes, the most AMQP can carry",
        });
    }
    Ok(vhost)
}

/// Checks that `raw` only has characters allowed unencoded in `part` and
/// well-formed escapes, then percent-decodes it as UTF-8.
fn decode(part: UriPart, raw: &str) -> Result<String, UriError> {
    let bytes = raw.as_bytes();
    for (i, c) in raw.char_indices() {
        if c == '%' {
            let well_formed = matches!(
                bytes.get(i + 1..i + 3),
                Some([hi, lo]) if hi.is_ascii_hexdigit() && lo.is_ascii_hexdigit()
            );
            if !well_formed {
                return Err(UriError::PercentEncoding {
                    part,
                    reason: "'%' must be followed by two hexadecimal digits",
                });
            }
        } else if !is_allowed(part, c) {
            return Err(UriError::InvalidCharacter {
                part,
                ch: (part != UriPart::Password).then_some(c),
            });
        }
    }
    percent_decode_str(raw)
        .decode_utf8()
        .map(Cow::into_owned)
        .map_err(|_| UriError::PercentEncoding {
            part,
            reason: "the decoded bytes are not valid UTF-8",
        })
}

/// RFC 3986 character classes, as the RabbitMQ grammar uses them.
fn is_allowed(part: UriPart, c: char) -> bool {
    let unreserved = c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~');
    let sub_delim = matches!(
        c,
        '!' | '$' | '&' | '\'' | '(' | ')' | '*' | '+' | ',' | ';' | '='
    );
    let base = unreserved || sub_delim;
    match part {
        UriPart::Username | UriPart::Password | UriPart::Host => base,
        UriPart::Vhost => base || matches!(c, ':' | '@'),
        UriPart::QueryName | UriPart::QueryValue => base || matches!(c, ':' | '@' | '/' | '?'),
    }
}

fn parse_number<T: FromStr>(name: &str, value: &str) -> Result<T, UriError> {
    // `str::parse` would also take a leading '+', which is not a number in
    // a URI.
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid_value(
            name.to_owned(),
            value.to_owned(),
            "expected a non-negative decimal integer",
        ));
    }
    value.parse().map_err(|_| {
        invalid_value(
            name.to_owned(),
            value.to_owned(),
            "out of range for this parameter",
        )
    })
}

fn non_empty(name: &str, value: String) -> Result<String, UriError> {
    if value.is_empty() {
        Err(invalid_value(name.to_owned(), value, "must not be empty"))
    } else {
        Ok(value)
    }
}

fn set_once<T>(slot: &mut Option<T>, value: T, name: &str) -> Result<(), UriError> {
    if slot.is_some() {
        return Err(UriError::DuplicateParam {
            name: name.to_owned(),
        });
    }
    *slot = Some(value);
    Ok(())
}

fn invalid_value(name: String, value: String, reason: &'static str) -> UriError {
    UriError::InvalidParamValue {
        name,
        value,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(s: &str) -> AmqpUri {
        match AmqpUri::parse(s) {
            Ok(uri) => uri,
            Err(e) => panic!("{s:?} should parse: {e}"),
        }
    }

    fn parse_err(s: &str) -> UriError {
        match AmqpUri::parse(s) {
            Ok(uri) => panic!("{s:?} should not parse, got {uri:?}"),
            Err(e) => e,
        }
    }

    /// (username, password, host, port, vhost) as parsed.
    fn parts(uri: &AmqpUri) -> (Option<&str>, Option<&str>, &str, u16, &str) {
        (
            uri.username.as_deref(),
            uri.password.as_ref().map(Secret::expose),
            &uri.host,
            uri.port,
            &uri.vhost,
        )
    }

    // --- The example table of the RabbitMQ URI specification. ---

    #[test]
    fn spec_full_uri() {
        let uri = parse("amqp://user:pass@host:10000/vhost");
        assert_eq!(
            parts(&uri),
            (Some("user"), Some("pass"), "host", 10000, "vhost")
        );
    }

    #[test]
    fn spec_percent_encoded_parts() {
        let uri = parse("amqp://user%61:%61pass@ho%61st:10000/v%2fhost");
        assert_eq!(
            parts(&uri),
            (Some("usera"), Some("apass"), "hoast", 10000, "v/host")
        );
    }

    #[test]
    fn spec_empty_authority() {
        let uri = parse("amqp://");
        assert_eq!(parts(&uri), (None, None, "localhost", 5672, "/"));
        assert_eq!(uri.username(), "guest");
        assert_eq!(uri.expose_password(), "guest");
    }

    #[test]
    fn spec_empty_userinfo_and_vhost() {
        let uri = parse("amqp://:@/");
        assert_eq!(parts(&uri), (Some(""), Some(""), "localhost", 5672, ""));
        assert_eq!(uri.username(), "");
        assert_eq!(uri.expose_password(), "");
    }

    #[test]
    fn spec_user_only() {
        let uri = parse("amqp://user@");
        assert_eq!(parts(&uri), (Some("user"), None, "localhost", 5672, "/"));
        assert_eq!(uri.expose_password(), "guest");
    }

    #[test]
    fn spec_user_and_password_only() {
        let uri = parse("amqp://user:pass@");
        assert_eq!(
            parts(&uri),
            (Some("user"), Some("pass"), "localhost", 5672, "/")
        );
    }

    #[test]
    fn spec_host_only() {
        assert_eq!(
            parts(&parse("amqp://host")),
            (None, None, "host", 5672, "/")
        );
    }

    #[test]
    fn spec_port_only() {
        assert_eq!(
            parts(&parse("amqp://:10000")),
            (None, None, "localhost", 10000, "/")
        );
    }

    #[test]
    fn spec_vhost_only() {
        assert_eq!(
            parts(&parse("amqp:///vhost")),
            (None, None, "localhost", 5672, "vhost")
        );
    }

    #[test]
    fn spec_trailing_slash_is_empty_vhost() {
        assert_eq!(
            parts(&parse("amqp://host/")),
            (None, None, "host", 5672, "")
        );
    }

    #[test]
    fn spec_encoded_slash_vhost() {
        assert_eq!(
            parts(&parse("amqp://host/%2f")),
            (None, None, "host", 5672, "/")
        );
        assert_eq!(parse("amqp://host/%2F").vhost, "/");
    }

    #[test]
    fn spec_ipv6_literal() {
        assert_eq!(
            parts(&parse("amqp://[::1]")),
            (None, None, "::1", 5672, "/")
        );
    }

    // --- Scheme, host, port. ---

    #[test]
    fn amqps_default_port_and_tls() {
        let uri = parse("amqps://host");
        assert_eq!(uri.scheme, Scheme::Amqps);
        assert_eq!(uri.port, 5671);
        assert!(uri.scheme.is_tls());
        assert!(!Scheme::Amqp.is_tls());
        assert_eq!(Scheme::Amqp.default_port(), 5672);
        assert_eq!(Scheme::Amqps.default_port(), 5671);
    }

    #[test]
    fn scheme_is_case_insensitive() {
        assert_eq!(parse("AMQPS://host").scheme, Scheme::Amqps);
        assert_eq!(parse("Amqp://host").scheme, Scheme::Amqp);
    }

    #[test]
    fn missing_scheme() {
        for s in [
            "",
            "localhost",
            "localhost:5672",
            "amqp:/host",
            "amqp:host",
            "//host",
        ] {
            assert_eq!(parse_err(s), UriError::MissingScheme, "{s:?}");
        }
        // "://" inside the query does not make a scheme.
        assert_eq!(parse_err("host/?x=amqp://y"), UriError::MissingScheme);
    }

    #[test]
    fn unsupported_scheme() {
        assert_eq!(
            parse_err("http://host"),
            UriError::UnsupportedScheme {
                scheme: "http".into()
            }
        );
    }

    #[test]
    fn ipv6_with_port_userinfo_and_vhost() {
        let uri = parse("amqps://u:p@[2001:db8::7]:5999/v");
        assert_eq!(
            parts(&uri),
            (Some("u"), Some("p"), "2001:db8::7", 5999, "v")
        );
    }

    #[test]
    fn bad_ipv6_literals() {
        for s in [
            "amqp://[::1",
            "amqp://[not-ipv6]",
            "amqp://[::1]x",
            "amqp://[::1]5672",
            "amqp://[]",
        ] {
            assert!(matches!(parse_err(s), UriError::Host { .. }), "{s:?}");
        }
    }

    #[test]
    fn empty_port_means_default() {
        assert_eq!(parse("amqp://host:").port, 5672);
        assert_eq!(parse("amqps://host:/v").port, 5671);
    }

    #[test]
    fn port_leading_zeros_accepted() {
        assert_eq!(parse("amqp://host:00080").port, 80);
    }

    #[test]
    fn bad_ports() {
        for s in [
            "amqp://host:abc",
            "amqp://host:+1",
            "amqp://host:-1",
            "amqp://host:1:2",
            "amqp://host: 1",
            "amqp://host:65536",
            "amqp://host:99999999999999999999",
            "amqp://host:0",
            "amqp://[::1]:x",
        ] {
            assert!(matches!(parse_err(s), UriError::Port { .. }), "{s:?}");
        }
    }

    #[test]
    fn host_with_invalid_characters() {
        assert_eq!(
            parse_err("amqp://ho st"),
            UriError::InvalidCharacter {
                part: UriPart::Host,
                ch: Some(' ')
            }
        );
        assert_eq!(
            parse_err("amqp://h]st"),
            UriError::InvalidCharacter {
                part: UriPart::Host,
                ch: Some(']')
            }
        );
        assert_eq!(
            parse_err("amqp://hôst"),
            UriError::InvalidCharacter {
                part: UriPart::Host,
                ch: Some('ô')
            }
        );
    }

    #[test]
    fn percent_decoded_host_may_be_unicode() {
        assert_eq!(parse("amqp://h%C3%B4st").host, "hôst");
    }

    // --- Userinfo. ---

    #[test]
    fn userinfo_with_encoded_reserved_characters() {
        let uri = parse("amqp://us%40er:p%3Aa%2Fs%3Fs%23%40@host");
        assert_eq!(uri.username(), "us@er");
        assert_eq!(uri.expose_password(), "p:a/s?s#@");
    }

    #[test]
    fn userinfo_sub_delims_are_literal() {
        let uri = parse("amqp://a+b!:c$d&e'f(g)*,;=@host");
        assert_eq!(uri.username(), "a+b!");
        assert_eq!(uri.expose_password(), "c$d&e'f(g)*,;=");
    }

    #[test]
    fn empty_userinfo_gives_empty_username() {
        let uri = parse("amqp://@host");
        assert_eq!(uri.username.as_deref(), Some(""));
        assert_eq!(uri.password, None);
    }

    #[test]
    fn invalid_username_character_is_named() {
        assert_eq!(
            parse_err("amqp://us er:p@host"),
            UriError::InvalidCharacter {
                part: UriPart::Username,
                ch: Some(' ')
            }
        );
    }

    #[test]
    fn invalid_password_character_is_not_shown() {
        for s in [
            "amqp://u:pa ss@host",
            "amqp://u:p@ss@host",
            "amqp://u:p:ss@host",
            "amqp://u:pässword@host",
        ] {
            let err = parse_err(s);
            assert_eq!(
                err,
                UriError::InvalidCharacter {
                    part: UriPart::Password,
                    ch: None
                },
                "{s:?}"
            );
            assert!(err.to_string().contains("password"));
        }
    }

    // --- Vhost. ---

    #[test]
    fn vhost_with_unencoded_slash_is_rejected() {
        assert!(matches!(
            parse_err("amqp://host/a/b"),
            UriError::Vhost { .. }
        ));
        assert!(matches!(parse_err("amqp://host//"), UriError::Vhost { .. }));
    }

    #[test]
    fn vhost_allows_colon_and_at() {
        assert_eq!(parse("amqp://host/a:b@c").vhost, "a:b@c");
    }

    #[test]
    fn vhost_invalid_character() {
        assert_eq!(
            parse_err("amqp://host/a b"),
            UriError::InvalidCharacter {
                part: UriPart::Vhost,
                ch: Some(' ')
            }
        );
    }

    #[test]
    fn vhost_length_limit() {
        let ok = "v".repeat(255);
        assert_eq!(parse(&format!("amqp://host/{ok}")).vhost, ok);
        assert!(matches!(
            parse_err(&format!("amqp://host/{}", "v".repeat(256))),
            UriError::Vhost { .. }
        ));
        // The limit is on the decoded bytes.
        assert!(matches!(
            parse_err(&format!("amqp://host/{}", "%C3%A9".repeat(128))),
            UriError::Vhost { .. }
        ));
    }

    #[test]
    fn fragment_is_rejected() {
        assert_eq!(parse_err("amqp://host/v#frag"), UriError::Fragment);
        assert_eq!(parse_err("amqp://u:p#w@host"), UriError::Fragment);
    }

    // --- Percent-encoding errors, one per part. ---

    #[test]
    fn malformed_escapes_name_their_part() {
        let cases = [
            ("amqp://u%zz@host", UriPart::Username),
            ("amqp://u:p%4@host", UriPart::Password),
            ("amqp://ho%st", UriPart::Host),
            ("amqp://host/v%", UriPart::Vhost),
            ("amqp://host?heart%beat=1", UriPart::QueryName),
            ("amqp://host?heartbeat=%g1", UriPart::QueryValue),
        ];
        for (s, part) in cases {
            match parse_err(s) {
                UriError::PercentEncoding { part: p, .. } => assert_eq!(p, part, "{s:?}"),
                other => panic!("{s:?}: unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn non_utf8_escapes_are_rejected() {
        match parse_err("amqp://host/%ff") {
            UriError::PercentEncoding { part, reason } => {
                assert_eq!(part, UriPart::Vhost);
                assert!(reason.contains("UTF-8"));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            parse_err("amqp://u:%c3@host"),
            UriError::PercentEncoding {
                part: UriPart::Password,
                ..
            }
        ));
    }

    // --- Query parameters. ---

    #[test]
    fn numeric_parameters() {
        let uri = parse(
            "amqp://host?heartbeat=10&frame_max=131072&channel_max=2047&connection_timeout=2500",
        );
        assert_eq!(uri.heartbeat, Some(10));
        assert_eq!(uri.frame_max, Some(131_072));
        assert_eq!(uri.channel_max, Some(2047));
        assert_eq!(uri.connection_timeout, Some(Duration::from_millis(2500)));
        let uri = parse("amqp://host?request_timeout=0&connection_timeout=1");
        assert_eq!(uri.request_timeout, Some(Duration::ZERO));
        assert_eq!(parse("amqp://host").request_timeout, None);
    }

    #[test]
    fn numeric_parameter_limits() {
        let uri = parse("amqp://host?heartbeat=65535&frame_max=4294967295&channel_max=0");
        assert_eq!(uri.heartbeat, Some(u16::MAX));
        assert_eq!(uri.frame_max, Some(u32::MAX));
        assert_eq!(uri.channel_max, Some(0));
        for s in [
            "amqp://host?heartbeat=65536",
            "amqp://host?frame_max=4294967296",
            "amqp://host?channel_max=70000",
            "amqp://host?connection_timeout=18446744073709551616",
        ] {
            assert!(
                matches!(parse_err(s), UriError::InvalidParamValue { reason, .. } if reason.contains("range")),
                "{s:?}"
            );
        }
    }

    #[test]
    fn numeric_parameter_syntax_errors() {
        for (s, name, value) in [
            ("amqp://host?heartbeat=", "heartbeat", ""),
            ("amqp://host?heartbeat", "heartbeat", ""),
            ("amqp://host?heartbeat=+5", "heartbeat", "+5"),
            ("amqp://host?frame_max=-1", "frame_max", "-1"),
            ("amqp://host?channel_max=1.5", "channel_max", "1.5"),
            (
                "amqp://host?connection_timeout=5s",
                "connection_timeout",
                "5s",
            ),
        ] {
            match parse_err(s) {
                UriError::InvalidParamValue {
                    name: n, value: v, ..
                } => {
                    assert_eq!((n.as_str(), v.as_str()), (name, value), "{s:?}");
                }
                other => panic!("{s:?}: unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn auth_mechanisms_repeat_and_are_lowercased() {
        let uri = parse(
            "amqp://host?auth_mechanism=EXTERNAL&auth_mechanism=plain&auth_mechanism=AMQPlain",
        );
        assert_eq!(uri.auth_mechanisms, ["external", "plain", "amqplain"]);
        assert!(matches!(
            parse_err("amqp://host?auth_mechanism="),
            UriError::InvalidParamValue { .. }
        ));
    }

    #[test]
    fn tls_parameters() {
        let uri = parse(
            "amqps://host?cacertfile=/etc/ca.pem&certfile=%2Fhome%2Fme%2Fc%20d.pem\
             &keyfile=C:/k.pem&verify=verify_peer&server_name_indication=rabbit.example",
        );
        assert_eq!(
            uri.tls,
            TlsParams {
                cacertfile: Some("/etc/ca.pem".into()),
                certfile: Some("/home/me/c d.pem".into()),
                keyfile: Some("C:/k.pem".into()),
                verify: Some(Verify::VerifyPeer),
                server_name_indication: Some(ServerNameIndication::Name("rabbit.example".into())),
            }
        );
        let uri = parse("amqps://host?verify=verify_none&server_name_indication=disable");
        assert_eq!(uri.tls.verify, Some(Verify::VerifyNone));
        assert_eq!(
            uri.tls.server_name_indication,
            Some(ServerNameIndication::Disable)
        );
        assert!(parse("amqps://host").tls.is_empty());
    }

    #[test]
    fn plus_in_query_is_literal() {
        assert_eq!(
            parse("amqps://host?cacertfile=/a+b.pem")
                .tls
                .cacertfile
                .as_deref(),
            Some("/a+b.pem")
        );
    }

    #[test]
    fn bad_tls_values() {
        for s in [
            "amqps://host?verify=yes",
            "amqps://host?verify=VERIFY_PEER",
            "amqps://host?cacertfile=",
            "amqps://host?server_name_indication=",
        ] {
            assert!(
                matches!(parse_err(s), UriError::InvalidParamValue { .. }),
                "{s:?}"
            );
        }
    }

    #[test]
    fn tls_parameters_need_amqps() {
        for name in [
            "cacertfile",
            "certfile",
            "keyfile",
            "verify",
            "server_name_indication",
        ] {
            assert_eq!(
                parse_err(&format!("amqp://host?{name}=verify_peer")),
                UriError::TlsParamWithoutTls { name: name.into() }
            );
        }
    }

    #[test]
    fn duplicate_single_valued_parameters_are_rejected() {
        for s in [
            "amqp://host?heartbeat=1&heartbeat=1",
            "amqp://host?frame_max=1&frame_max=2",
            "amqp://host?channel_max=1&channel_max=2",
            "amqp://host?connection_timeout=1&connection_timeout=2",
            "amqp://host?request_timeout=1&request_timeout=2",
            "amqps://host?cacertfile=a&cacertfile=b",
            "amqps://host?certfile=a&certfile=b",
            "amqps://host?keyfile=a&keyfile=b",
            "amqps://host?verify=verify_none&verify=verify_peer",
            "amqps://host?server_name_indication=a&server_name_indication=disable",
        ] {
            assert!(
                matches!(parse_err(s), UriError::DuplicateParam { .. }),
                "{s:?}"
            );
        }
    }

    #[test]
    fn unknown_parameters_are_kept_in_order() {
        let uri = parse("amqp://host?ssl_options=x%3Dy&heartbeat=5&depth=2&flag&x=a=b");
        assert_eq!(uri.heartbeat, Some(5));
        assert_eq!(
            uri.unknown,
            [
                ("ssl_options".to_owned(), "x=y".to_owned()),
                ("depth".to_owned(), "2".to_owned()),
                ("flag".to_owned(), String::new()),
                ("x".to_owned(), "a=b".to_owned()),
            ]
        );
    }

    #[test]
    fn parameter_names_are_case_sensitive() {
        let uri = parse("amqp://host?Heartbeat=5");
        assert_eq!(uri.heartbeat, None);
        assert_eq!(uri.unknown, [("Heartbeat".to_owned(), "5".to_owned())]);
    }

    #[test]
    fn empty_query_pieces_are_ignored() {
        let uri = parse("amqp://host?&&heartbeat=5&&");
        assert_eq!(uri.heartbeat, Some(5));
        assert!(uri.unknown.is_empty());
        assert_eq!(parse("amqp://host?"), parse("amqp://host"));
    }

    #[test]
    fn empty_parameter_name_is_rejected() {
        assert_eq!(parse_err("amqp://host?=5"), UriError::EmptyParamName);
    }

    #[test]
    fn invalid_query_character() {
        assert_eq!(
            parse_err("amqp://host?a=b c"),
            UriError::InvalidCharacter {
                part: UriPart::QueryValue,
                ch: Some(' ')
            }
        );
        assert_eq!(
            parse_err("amqp://host?a[]=1"),
            UriError::InvalidCharacter {
                part: UriPart::QueryName,
                ch: Some('[')
            }
        );
    }

    // --- Formatting and redaction. ---

    const PASSWORD: &str = "Zq9-very-secret";

    #[test]
    fn display_redacts_password() {
        let uri = parse(&format!("amqp://user:{PASSWORD}@host/v"));
        let shown = uri.to_string();
        assert_eq!(shown, "amqp://user:***@host:5672/v");
        assert!(!format!("{uri:?}").contains(PASSWORD));
        assert!(!format!("{uri:#?}").contains(PASSWORD));
        assert!(!format!("{:?}", uri.password).contains(PASSWORD));
        assert_eq!(
            uri.expose_uri_with_password(),
            format!("amqp://user:{PASSWORD}@host:5672/v")
        );
    }

    #[test]
    fn redaction_hides_encoded_forms_too() {
        // The decoded password differs from its URI spelling; neither may leak.
        let uri = parse("amqp://user:Zq9%2Fvery%3Fsecret@host");
        for text in [uri.to_string(), format!("{uri:?}")] {
            assert!(!text.contains("Zq9"), "{text}");
            assert!(!text.contains("very"), "{text}");
        }
    }

    #[test]
    fn sensitive_unknown_parameters_are_redacted() {
        let uri = parse(&format!("amqps://host?password={PASSWORD}&depth=3"));
        assert_eq!(uri.unknown[0].1, PASSWORD);
        assert!(!uri.to_string().contains(PASSWORD));
        assert!(!format!("{uri:?}").contains(PASSWORD));
        assert!(uri.to_string().ends_with("?password=***&depth=3"));
        assert!(uri.expose_uri_with_password().contains(PASSWORD));
    }

    #[test]
    fn secret_formatting() {
        let secret = Secret::new(PASSWORD);
        assert_eq!(secret.to_string(), "***");
        assert_eq!(format!("{secret:?}"), "Secret(***)");
        assert_eq!(secret.expose(), PASSWORD);
        assert_eq!(Secret::from(PASSWORD), secret);
        assert_eq!(secret.into_exposed(), PASSWORD);
    }

    #[test]
    fn errors_do_not_quote_the_password() {
        for s in [
            format!("amqp://user:{PASSWORD} @host"),
            format!("amqp://user:{PASSWORD}%zz@host"),
            format!("amqp://user:{PASSWORD}%ff@host"),
            // An unencoded '/' or '?' ends the authority early, leaving part
            // of the password where the port would be.
            format!("amqp://user:{PASSWORD}/x@host"),
            format!("amqp://user:{PASSWORD}?x@host"),
        ] {
            let err = parse_err(&s);
            assert!(!err.to_string().contains(PASSWORD), "{err}");
            assert!(!format!("{err:?}").contains(PASSWORD), "{err:?}");
        }
    }

    #[test]
    fn display_writes_every_field() {
        let uri = parse(
            "amqps://us%20er:pw@[::1]:5999/v%2Fh?heartbeat=5&frame_max=4096&channel_max=10\
             &connection_timeout=1500&request_timeout=2500&auth_mechanism=external&cacertfile=/ca.pem\
             &certfile=/c.pem&keyfile=/k.pem&verify=verify_peer\
             &server_name_indication=disable&extra=a%20b",
        );
        assert_eq!(
            uri.to_string(),
            "amqps://us%20er:***@[::1]:5999/v%2Fh?heartbeat=5&frame_max=4096&channel_max=10\
             &connection_timeout=1500&request_timeout=2500&auth_mechanism=external&cacertfile=/ca.pem\
             &certfile=/c.pem&keyfile=/k.pem&verify=verify_peer\
             &server_name_indication=disable&extra=a%20b"
        );
        assert_eq!(parse(&uri.expose_uri_with_password()), uri);
    }

    #[test]
    fn display_of_defaults() {
        assert_eq!(parse("amqp://").to_string(), "amqp://localhost:5672");
        assert_eq!(parse("amqp://host/").to_string(), "amqp://host:5672/");
        assert_eq!(
            parse("amqp://:@/").to_string(),
            "amqp://:***@localhost:5672/"
        );
        assert_eq!(AmqpUri::default(), parse("amqp://localhost"));
    }

    #[test]
    fn from_str_matches_parse() {
        let a: AmqpUri = "amqp://u:p@h:1/v?heartbeat=1".parse().unwrap_or_default();
        assert_eq!(a, parse("amqp://u:p@h:1/v?heartbeat=1"));
    }

    #[test]
    fn error_messages_name_the_part() {
        let cases = [
            ("amqp://u%zz@h", "username"),
            ("amqp://h/a/b", "vhost"),
            ("amqp://h:x", "port"),
            ("amqp://[x]", "host"),
            ("amqp://h?heartbeat=x", "heartbeat"),
            ("amqp://h?heartbeat=1&heartbeat=2", "heartbeat"),
            ("amqp://h?verify=verify_peer", "amqps"),
            ("ftp://h", "ftp"),
        ];
        for (s, needle) in cases {
            let msg = parse_err(s).to_string();
            assert!(msg.contains(needle), "{s:?}: {msg}");
        }
    }

    // --- Properties. ---

    fn arb_text(max: usize) -> impl Strategy<Value = String> {
        // Mix URI delimiters, escapes, non-ASCII and control characters.
        proptest::collection::vec(
            prop_oneof![
                4 => proptest::char::range('a', 'z'),
                2 => proptest::sample::select(vec![
                    ':', '@', '/', '?', '#', '[', ']', '%', '&', '=', '+', ' ', '*', '.', '~',
                ]),
                1 => any::<char>(),
            ],
            0..max,
        )
        .prop_map(|chars| chars.into_iter().collect())
    }

    fn arb_vhost() -> impl Strategy<Value = String> {
        arb_text(40).prop_filter("vhost fits a short string", |v| v.len() <= MAX_VHOST_LEN)
    }

    fn arb_host() -> impl Strategy<Value = String> {
        prop_oneof![
            arb_text(20).prop_filter("empty host means localhost", |h| !h.is_empty()),
            any::<core::net::Ipv6Addr>().prop_map(|a| a.to_string()),
            Just("::1".to_owned()),
        ]
    }

    fn arb_credentials() -> impl Strategy<Value = (Option<String>, Option<Secret>)> {
        prop_oneof![
            Just((None, None)),
            arb_text(20).prop_map(|u| (Some(u), None)),
            (arb_text(20), arb_text(20)).prop_map(|(u, p)| (Some(u), Some(Secret(p)))),
        ]
    }

    fn arb_uri() -> impl Strategy<Value = AmqpUri> {
        (
            any::<bool>(),
            arb_credentials(),
            arb_host(),
            1..=u16::MAX,
            arb_vhost(),
            proptest::option::of(any::<u16>()),
            proptest::option::of(any::<u32>()),
            proptest::option::of(any::<u64>()),
            proptest::collection::vec("[a-z]{1,8}", 0..3),
            proptest::collection::vec(
                (
                    "[a-z]{1,8}".prop_filter("not a known name", |n| {
                        !matches!(
                            n.as_str(),
                            "heartbeat" | "keyfile" | "certfile" | "verify" | "frame_max"
                        )
                    }),
                    arb_text(10),
                ),
                0..3,
            ),
            proptest::option::of(arb_text(20).prop_filter("non-empty", |p| !p.is_empty())),
        )
            .prop_map(
                |(tls, (username, password), host, port, vhost, hb, fm, ct, mechs, unknown, ca)| {
                    let scheme = if tls { Scheme::Amqps } else { Scheme::Amqp };
                    AmqpUri {
                        scheme,
                        username,
                        password,
                        host,
                        port,
                        vhost,
                        heartbeat: hb,
                        frame_max: fm,
                        channel_max: hb,
                        connection_timeout: ct.map(Duration::from_millis),
                        request_timeout: ct.map(|ms| Duration::from_millis(ms / 2)),
                        auth_mechanisms: mechs,
                        tls: TlsParams {
                            cacertfile: ca.filter(|_| tls),
                            ..TlsParams::default()
                        },
                        unknown,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn exposed_display_round_trips(uri in arb_uri()) {
            let text = uri.expose_uri_with_password();
            let back = AmqpUri::parse(&text);
            prop_assert_eq!(back.as_ref().ok(), Some(&uri), "{} -> {:?}", text, back);
        }

        #[test]
        fn redacted_display_never_contains_the_password(
            uri in arb_uri(),
            secret in "[A-Z]{12}",
        ) {
            // Uppercase-only secrets cannot occur by chance in the other
            // generated fields, which are lowercase or escaped.
            let uri = AmqpUri {
                username: Some(uri.username.unwrap_or_default()),
                password: Some(Secret::new(secret.clone())),
                ..uri
            };
            let shown = uri.to_string();
            let debugged = format!("{uri:?}");
            prop_assert!(!shown.contains(&secret));
            prop_assert!(!debugged.contains(&secret));
            prop_assert!(uri.expose_uri_with_password().contains(&secret));
        }

        #[test]
        fn parse_never_panics(input in ".*") {
            let _ = AmqpUri::parse(&input);
        }

        #[test]
        fn parse_never_panics_on_uri_like_input(rest in arb_text(60), tls in any::<bool>()) {
            let scheme = if tls { "amqps://" } else { "amqp://" };
            let _ = AmqpUri::parse(&format!("{scheme}{rest}"));
        }
    }
}
