//! A connection's `amqp-io` thread: it runs the shared connect sequence of `amqp-client`
//! (dial, TLS handshake, AMQP handshake) and then the connection's driver, both on this
//! crate's event loop ([`Reactor`]), while the thread that called `connect` waits for the
//! outcome. Recovery redials on the same thread, through the same dial.

use std::cell::RefCell;
use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::mpsc;
use std::task::Poll;

use amqp_client::adapter::Driver;
use amqp_client::{AmqpUri, ConnectError, ConnectOptions};

use crate::net::{self, TcpTransport};
use crate::reactor::{Handle, IoTimer, Reactor};

/// The transport of a connection: plain TCP, or TLS over it.
#[cfg(feature = "tls")]
type Io = amqp_client::adapter::MaybeTls<TcpTransport, crate::tls_io::TlsTransport>;
/// The transport of a connection: plain TCP.
#[cfg(not(feature = "tls"))]
type Io = TcpTransport;

type ConnectionDriver = Driver<Io, IoTimer>;
type Outcome = Result<amqp_client::Connection, ConnectError>;

/// Starts the connection's I/O thread and waits until the connection is open or failed.
pub(crate) fn connect(options: ConnectOptions) -> Outcome {
    let (tx, rx) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("amqp-io".into())
        .spawn(move || run(options, tx))
        .map_err(ConnectError::Io)?;
    rx.recv().unwrap_or_else(|_| {
        Err(ConnectError::Io(io::Error::other(
            "the connection's I/O thread ended before the connection opened",
        )))
    })
}

/// The thread's body: the connect sequence, then the driver until the connection is over.
fn run(options: ConnectOptions, tx: mpsc::SyncSender<Outcome>) {
    let reactor = match Reactor::new() {
        Ok(reactor) => reactor,
        Err(e) => {
            let _ = tx.send(Err(ConnectError::Io(e)));
            return;
        }
    };
    let driver: Rc<RefCell<Option<ConnectionDriver>>> = Rc::default();
    let slot = driver.clone();
    let spawn = move |d: ConnectionDriver| {
        *slot.borrow_mut() = Some(d);
        Ok(())
    };
    let mut connecting = Some(Box::pin(start(options, reactor.handle(), spawn)));
    let tx = RefCell::new(Some(tx));
    let ended = reactor.block_on(poll_fn(|cx| {
        if let Some(c) = &mut connecting {
            if let Poll::Ready(outcome) = c.as_mut().poll(cx) {
                connecting = None;
                if let Some(tx) = tx.borrow_mut().take() {
                    let _ = tx.send(outcome);
                }
            }
        }
        // Polled right after the connect sequence handed it over, so the handshake starts.
        let mut running = driver.borrow_mut();
        if let Some(d) = running.as_mut() {
            if Pin::new(d).poll(cx).is_ready() {
                *running = None;
            }
        }
        if connecting.is_none() && running.is_none() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }));
    // The poller failed: the driver went with the loop, ending the connection.
    if let Err(e) = ended {
        tracing::error!(error = %e, "amqp: the I/O thread's poller failed");
        if let Some(tx) = tx.take() {
            let _ = tx.send(Err(ConnectError::Io(e)));
        }
    }
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
