//! Where to reconnect: a list of brokers sharing credentials and TLS settings.

use std::time::Duration;

use super::backoff::Rng;
use crate::uri::AmqpUri;

/// One broker address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Time allowed for the TCP (and TLS) connect to this endpoint; the AMQP handshake that
    /// follows has a timeout of its own.
    pub connect_timeout: Duration,
}

impl Endpoint {
    /// An endpoint with the default connect timeout of 10 s.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Endpoint {
            host: host.into(),
            port,
            connect_timeout: Duration::from_secs(10),
        }
    }

    /// The host and port of a parsed URI, and its `connection_timeout` if it has one. Its
    /// credentials, vhost and TLS settings are not the endpoint's: every endpoint of a
    /// connection shares those of the connection's own URI.
    pub fn from_uri(uri: &AmqpUri) -> Self {
        let mut e = Endpoint::new(uri.host.clone(), uri.port);
        if let Some(t) = uri.connection_timeout {
            e.connect_timeout = t;
        }
        e
    }

    /// Sets the connect timeout.
    #[must_use]
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// The order endpoints are tried in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EndpointOrder {
    /// As listed: the first is preferred, the next ones are fallbacks.
    #[default]
    InOrder,
    /// Shuffled once per round through the list, so many clients spread over a cluster.
    Shuffled,
}

/// The endpoints of a connection and which one is in use. A failure moves on to the next;
/// after the last comes the first again (reshuffled with [`EndpointOrder::Shuffled`]).
///
/// ```
/// use amqp_proto::recovery::{Endpoint, EndpointOrder, Endpoints, Rng};
///
/// let mut rng = Rng::new(0);
/// let list = vec![Endpoint::new("a", 5672), Endpoint::new("b", 5672)];
/// let mut endpoints = Endpoints::new(list, EndpointOrder::InOrder, &mut rng).unwrap();
/// assert_eq!(endpoints.current().host, "a");
/// endpoints.rotate(&mut rng);
/// assert_eq!(endpoints.current().host, "b");
/// endpoints.rotate(&mut rng);
/// assert_eq!(endpoints.current().host, "a");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    list: Vec<Endpoint>,
    order: EndpointOrder,
    /// Indexes into `list` in the order of this round.
    round: Vec<usize>,
    /// Position in `round` of the endpoint in use.
    position: usize,
}

impl Endpoints {
    /// The endpoints, tried in `order` (`None` if the list is empty).
    pub fn new(list: Vec<Endpoint>, order: EndpointOrder, rng: &mut Rng) -> Option<Self> {
        if list.is_empty() {
            return None;
        }
        let mut e = Endpoints {
            round: (0..list.len()).collect(),
            list,
            order,
            position: 0,
        };
        e.shuffle(rng);
        Some(e)
    }

    fn shuffle(&mut self, rng: &mut Rng) {
        if self.order == EndpointOrder::Shuffled {
            // Fisher–Yates.
            for i in (1..self.round.len()).rev() {
                let j = rng.below(i + 1);
                self.round.swap(i, j);
            }
        }
    }

    /// The endpoint in use (or to dial next).
    pub fn current(&self) -> &Endpoint {
        let i = self.round.get(self.position).copied().unwrap_or(0);
        &self.list[i.min(self.list.len() - 1)]
    }

    /// All endpoints, as configured.
    pub fn list(&self) -> &[Endpoint] {
        &self.list
    }

    /// Moves on to the next endpoint after a failure of the current one.
    pub fn rotate(&mut self, rng: &mut Rng) {
        self.position += 1;
        if self.position >= self.round.len() {
            self.position = 0;
            self.shuffle(rng);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(e: &mut Endpoints, rng: &mut Rng, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| {
                let h = e.current().host.clone();
                e.rotate(rng);
                h
            })
            .collect()
    }

    #[test]
    fn in_order_cycles() {
        let mut rng = Rng::new(3);
        let list = ["a", "b", "c"].map(|h| Endpoint::new(h, 1)).to_vec();
        let mut e = Endpoints::new(list, EndpointOrder::InOrder, &mut rng).unwrap();
        assert_eq!(
            hosts(&mut e, &mut rng, 7),
            ["a", "b", "c", "a", "b", "c", "a"]
        );
    }

    #[test]
    fn shuffled_visits_each_once_per_round() {
        let mut rng = Rng::new(3);
        let list = ["a", "b", "c", "d"].map(|h| Endpoint::new(h, 1)).to_vec();
        let mut e = Endpoints::new(list, EndpointOrder::Shuffled, &mut rng).unwrap();
        let seen = hosts(&mut e, &mut rng, 12);
        for round in seen.chunks(4) {
            let mut r = round.to_vec();
            r.sort();
            assert_eq!(r, ["a", "b", "c", "d"]);
        }
        assert_ne!(seen[..4], seen[4..8], "reshuffled (for this seed)");
    }

    #[test]
    fn empty_list_is_refused_and_display_brackets_ipv6() {
        assert!(Endpoints::new(Vec::new(), EndpointOrder::InOrder, &mut Rng::new(0)).is_none());
        assert_eq!(Endpoint::new("::1", 5672).to_string(), "[::1]:5672");
        let uri: AmqpUri = "amqp://u:p@h:1234/v?connection_timeout=2000"
            .parse()
            .unwrap();
        let e = Endpoint::from_uri(&uri);
        assert_eq!(
            (e.to_string(), e.connect_timeout),
            ("h:1234".into(), Duration::from_secs(2))
        );
    }
}
