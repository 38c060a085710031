//! What a runtime adapter is built from: the [`Transport`] and [`Timer`] it implements, the
//! [`Driver`] it spawns, and the connect sequence ([`connect_with_transport`], and with the `tls`
//! feature `connect_with_tls_transport`); [`adapter_connect_api!`](crate::adapter_connect_api)
//! defines the adapter's `Connection` type and `connect` functions.

pub use crate::adapter_connect_api;
pub use crate::connect_with_transport;
pub use crate::{Connecting, start_connection};
pub use crate::{Driver, Timer, Transport};
#[cfg(feature = "tls")]
pub use crate::{MaybeTls, TlsClient, connect_with_tls_transport};

/// Defines an async adapter's [`Connection`](crate::Connection) type in the calling crate,
/// so that `Connection::connect(uri)` works with no trait to import, and the free functions
/// `connect(uri)` and `connect_with(options)`. The crate must define
/// `async fn dial_and_start(options: impl IntoConnectOptions) -> Result<amqp_client::Connection,
/// ConnectError>` (usually a call to [`connect_with_transport`]). `$runtime` names the runtime
/// in the docs.
#[macro_export]
macro_rules! adapter_connect_api {
    ($runtime:literal) => {
        #[doc = concat!("A connection to a broker, made on ", $runtime, ". Cheap to clone; every \
            clone is the same connection.\n\n\
            Every operation is [`amqp_client::Connection`]'s, reached through `Deref`: \
            [`open_channel`](amqp_client::Connection::open_channel), \
            [`events`](amqp_client::Connection::events), \
            [`close`](amqp_client::Connection::close), … \
            The connection closes when its last handle (channels included) is dropped.")]
        #[derive(Debug, Clone)]
        pub struct Connection($crate::Connection);

        impl Connection {
            /// Connects to the broker at `uri` (`amqp://user:pass@host:port/vhost?options`)
            /// and returns once the broker has accepted the login and opened the virtual host.
            pub async fn connect(uri: &str) -> Result<Self, $crate::ConnectError> {
                connect(uri).await
            }

            /// Connects with a URI string, a parsed [`AmqpUri`] or [`ConnectOptions`].
            pub async fn connect_with(
                options: impl $crate::IntoConnectOptions,
            ) -> Result<Self, $crate::ConnectError> {
                connect_with(options).await
            }

            /// The runtime-agnostic handle, for code written against `amqp-client`.
            pub fn into_inner(self) -> $crate::Connection {
                self.0
            }
        }

        impl ::std::ops::Deref for Connection {
            type Target = $crate::Connection;

            fn deref(&self) -> &$crate::Connection {
                &self.0
            }
        }

        impl From<$crate::Connection> for Connection {
            fn from(conn: $crate::Connection) -> Self {
                Connection(conn)
            }
        }

        impl From<Connection> for $crate::Connection {
            fn from(conn: Connection) -> Self {
                conn.0
            }
        }

        /// Connects to the broker at `uri` (`amqp://user:pass@host:port/vhost?options`).
        pub async fn connect(uri: &str) -> Result<Connection, $crate::ConnectError> {
            connect_with($crate::ConnectOptions::parse(uri)?).await
        }

        /// Connects with a URI string, a parsed [`AmqpUri`] or [`ConnectOptions`].
        pub async fn connect_with(
            options: impl $crate::IntoConnectOptions,
        ) -> Result<Connection, $crate::ConnectError> {
            dial_and_start(options).await.map(Connection)
        }
    };
}
