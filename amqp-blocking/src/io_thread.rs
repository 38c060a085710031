//! A connection's `amqp-io` thread: it runs the shared connect sequence of `amqp-client`
//! (dial, TLS handshake, AMQP handshake) on the connection's event loop ([`Loop`]) while the
//! thread that called `connect` waits for the outcome, and then keeps the loop going whenever
//! no user thread drives it (see [`crate::lead`]). Recovery redials through the same dial, on
//! whichever thread drives.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::rc::Rc;
use std::sync::{Arc, mpsc};
use std::task::Poll;

use amqp_client::adapter::Driver;
use amqp_client::{AmqpUri, ConnectError, ConnectOptions};

use crate::lead::Loop;
use crate::net::{self, TcpTransport};
use crate::reactor::{Handle, IoTimer, Poller};

/// The transport of a connection: plain TCP, or TLS over it.
#[cfg(feature = "tls")]
type Io = amqp_client::adapter::MaybeTls<TcpTransport, crate::tls_io::TlsTransport>;
/// The transport of a connection: plain TCP.
#[cfg(not(feature = "tls"))]
type Io = TcpTransport;

type ConnectionDriver = Driver<Io, IoTimer>;
type Outcome = Result<amqp_client::Connection, ConnectError>;

/// Starts the connection's I/O thread and waits until the connection is open or failed;
/// returns it with its event loop.
pub(crate) fn connect(
    options: ConnectOptions,
) -> Result<(amqp_client::Connection, Arc<Loop>), ConnectError> {
    let (poller, handle, eventfd) = Poller::new().map_err(ConnectError::Io)?;
    let event_loop = Loop::new(poller, handle.clone(), eventfd);
    let (tx, rx) = mpsc::sync_channel(1);
    let io_loop = event_loop.clone();
    std::thread::Builder::new()
        .name("amqp-io".into())
        .spawn(move || run(options, handle, &io_loop, tx))
        .map_err(ConnectError::Io)?;
    let outcome = rx.recv().unwrap_or_else(|_| {
        Err(ConnectError::Io(io::Error::other(
            "the connection's I/O thread ended before the connection opened",
        )))
    });
    outcome.map(|conn| (conn, event_loop))
}

/// The thread's body: the connect sequence, then the driver until the connection is over.
fn run(options: ConnectOptions, handle: Handle, event_loop: &Loop, tx: mpsc::SyncSender<Outcome>) {
    let slot: Rc<RefCell<Option<ConnectionDriver>>> = Rc::default();
    let spawned = slot.clone();
    let spawn = move |d: ConnectionDriver| {
        *spawned.borrow_mut() = Some(d);
        Ok(())
    };
    let mut connecting = Box::pin(start(options, handle, spawn));
    let outcome = event_loop.connect(|cx, driver| {
        let polled = connecting.as_mut().poll(cx);
        // Installed in the same turn, so that the driver is polled right after the connect
        // sequence handed it over and the handshake starts.
        if let Some(d) = slot.borrow_mut().take() {
            *driver = Some(Box::pin(d));
        }
        match polled {
            Poll::Ready(outcome) => Some(outcome),
            Poll::Pending => None,
        }
    });
    let outcome = outcome.unwrap_or_else(|| {
        Err(ConnectError::Io(io::Error::other(
            "the connection ended during the connect sequence",
        )))
    });
    let _ = tx.send(outcome);
    event_loop.run_io();
}

/// The shared connect sequence over this crate's dial (and TLS handshake) and timer.
fn start(
    options: ConnectOptions,
    handle: Handle,
    spawn: impl FnOnce(ConnectionDriver) -> io::Result<()>,
) -> impl Future<Output = Outcome> {
    let timer = handle.timer();
    let dial = move |uri: &AmqpUri| net::dial(handle.clone(), uri.host.clone(), uri.port);
    #[cfg(feature = "tls")]
    return amqp_client::adapter::connect_with_tls_transport(
        options,
        dial,
        crate::tls_io::handshake,
        timer,
        spawn,
    );
    #[cfg(not(feature = "tls"))]
    return amqp_client::adapter::connect_with_transport(options, dial, timer, spawn);
}
