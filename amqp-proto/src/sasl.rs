//! SASL mechanisms, injected into the connection rather than built into it.
//!
//! PLAIN, AMQPLAIN and EXTERNAL are provided; any other mechanism implements [`SaslMechanism`]
//! and may answer `connection.secure` challenges.

use std::fmt;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::types::{FieldValue, LongString, ShortString};
use crate::uri::Secret;

/// A SASL mechanism: its name, the response sent in `connection.start-ok`, and answers to any
/// `connection.secure` challenges.
///
/// ```
/// use amqp_proto::sasl::SaslMechanism;
/// use bytes::Bytes;
///
/// /// A token mechanism whose server asks once for a nonce-bound answer.
/// #[derive(Debug)]
/// struct Token;
/// impl SaslMechanism for Token {
///     fn name(&self) -> &str { "X-TOKEN" }
///     fn initial_response(&self) -> Result<Bytes, String> { Ok(Bytes::from_static(b"hello")) }
///     fn challenge(&self, challenge: &[u8]) -> Result<Bytes, String> {
///         Ok(Bytes::from([b"answer:", challenge].concat()))
///     }
/// }
/// assert_eq!(Token.challenge(b"n1").unwrap(), Bytes::from_static(b"answer:n1"));
/// ```
pub trait SaslMechanism: fmt::Debug + Send + Sync {
    /// The mechanism's name as listed in `connection.start` (e.g. `PLAIN`).
    fn name(&self) -> &str;
    /// The response sent in `connection.start-ok`.
    fn initial_response(&self) -> Result<Bytes, String>;
    /// Answers a `connection.secure` challenge. The default refuses: most mechanisms have none.
    fn challenge(&self, challenge: &[u8]) -> Result<Bytes, String> {
        let _ = challenge;
        Err(format!(
            "mechanism {} does not expect a challenge",
            self.name()
        ))
    }
    /// This mechanism with its secret replaced by one sent in `connection.update-secret`, so
    /// that a reconnection logs in with the latest secret. `None` (the default, and EXTERNAL)
    /// when there is no secret to replace or it cannot hold this one (PLAIN and AMQPLAIN
    /// keep their password as text: a secret that is not UTF-8 leaves the old one).
    fn with_secret(&self, secret: &[u8]) -> Option<Arc<dyn SaslMechanism>> {
        let _ = secret;
        None
    }
}

/// PLAIN: user name and password in one message.
#[derive(Debug, Clone)]
pub struct Plain {
    /// User name.
    pub username: String,
    /// Password (redacted in Debug).
    pub password: Secret,
}

impl SaslMechanism for Plain {
    fn name(&self) -> &str {
        "PLAIN"
    }
    fn with_secret(&self, secret: &[u8]) -> Option<Arc<dyn SaslMechanism>> {
        Some(Arc::new(Plain {
            username: self.username.clone(),
            password: Secret::new(std::str::from_utf8(secret).ok()?),
        }))
    }
    fn initial_response(&self) -> Result<Bytes, String> {
        let mut out = Vec::with_capacity(2 + self.username.len() + self.password.expose().len());
        out.push(0);
        out.extend_from_slice(self.username.as_bytes());
        out.push(0);
        out.extend_from_slice(self.password.expose().as_bytes());
        Ok(Bytes::from(out))
    }
}

/// AMQPLAIN: RabbitMQ's older mechanism, a field table without its length prefix.
#[derive(Debug, Clone)]
pub struct AmqPlain {
    /// User name.
    pub username: String,
    /// Password (redacted in Debug).
    pub password: Secret,
}

impl SaslMechanism for AmqPlain {
    fn name(&self) -> &str {
        "AMQPLAIN"
    }
    fn with_secret(&self, secret: &[u8]) -> Option<Arc<dyn SaslMechanism>> {
        Some(Arc::new(AmqPlain {
            username: self.username.clone(),
            password: Secret::new(std::str::from_utf8(secret).ok()?),
        }))
    }
    fn initial_response(&self) -> Result<Bytes, String> {
        let mut table = crate::FieldTable::new();
        table.set(
            ShortString::from_static("LOGIN"),
            FieldValue::LongString(LongString::from(self.username.as_str())),
        );
        table.set(
            ShortString::from_static("PASSWORD"),
            FieldValue::LongString(LongString::from(self.password.expose())),
        );
        let mut out = BytesMut::new();
        table.encode(&mut out).map_err(|e| e.to_string())?;
        // Drop the 4-byte table length: AMQPLAIN sends the entries only.
        Ok(out.freeze().slice(4..))
    }
}

/// EXTERNAL: identity from outside AMQP, typically the TLS client certificate.
#[derive(Debug, Clone, Copy, Default)]
pub struct External;

impl SaslMechanism for External {
    fn name(&self) -> &str {
        "EXTERNAL"
    }
    fn initial_response(&self) -> Result<Bytes, String> {
        Ok(Bytes::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_response() {
        let p = Plain {
            username: "guest".into(),
            password: Secret::new("pw"),
        };
        assert_eq!(&p.initial_response().unwrap()[..], b"\0guest\0pw");
        assert!(!format!("{p:?}").contains("pw\""));
    }

    #[test]
    fn amqplain_response() {
        let p = AmqPlain {
            username: "u".into(),
            password: Secret::new("p"),
        };
        assert_eq!(
            &p.initial_response().unwrap()[..],
            b"\x05LOGINS\x00\x00\x00\x01u\x08PASSWORDS\x00\x00\x00\x01p"
        );
    }

    #[test]
    fn external_refuses_challenges() {
        assert!(External.initial_response().unwrap().is_empty());
        assert!(External.challenge(b"x").is_err());
    }

    #[test]
    fn a_new_secret_replaces_the_password_only() {
        let p = AmqPlain {
            username: "u".into(),
            password: Secret::new("p"),
        };
        let q = p.with_secret(b"q").expect("AMQPLAIN holds a password");
        assert_eq!(q.name(), "AMQPLAIN");
        assert_eq!(
            &q.initial_response().unwrap()[..],
            b"\x05LOGINS\x00\x00\x00\x01u\x08PASSWORDS\x00\x00\x00\x01q"
        );
        assert!(
            p.with_secret(&[0xff]).is_none(),
            "not UTF-8: the old one stays"
        );
        assert!(External.with_secret(b"q").is_none());
    }
}
