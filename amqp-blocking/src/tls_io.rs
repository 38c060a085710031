//! TLS on the event loop (feature `tls`): a `rustls::ClientConnection` driven by hand over the
//! non-blocking socket (`read_tls` / `process_new_packets` / `write_tls`), with the handshake
//! as a future. The settings come from `amqp-client`'s [`TlsClient`]; failures are reported
//! as `io::Error`s carrying the `rustls::Error`, which the connect sequence classifies.

use std::future::poll_fn;
use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;
use std::task::{Context, Poll};

use amqp_client::adapter::{TlsClient, Transport};
use amqp_client::tls::rustls::ClientConnection;
use bytes::BytesMut;

use crate::net::{TcpTransport, nonblocking};

/// A TLS session over the connection's socket, as the driver's [`Transport`].
#[derive(Debug)]
pub(crate) struct TlsTransport {
    tcp: TcpTransport,
    session: ClientConnection,
}

/// A rustls failure as an `io::Error` (the form [`amqp_client::TlsError::from_handshake`]
/// reads).
fn tls_error(e: amqp_client::tls::rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Runs the TLS handshake over a connected socket.
pub(crate) async fn handshake(client: TlsClient, tcp: TcpTransport) -> io::Result<TlsTransport> {
    let session = ClientConnection::new(client.config, client.server_name).map_err(tls_error)?;
    let mut tls = TlsTransport { tcp, session };
    poll_fn(|_| tls.poll_handshake()).await?;
    tracing::debug!(
        protocol = ?tls.session.protocol_version(),
        cipher_suite = ?tls.session.negotiated_cipher_suite().map(|s| s.suite()),
        "amqp: TLS session established"
    );
    Ok(tls)
}

impl TlsTransport {
    /// Sends what the session has queued: `Ready(Ok)` once all of it is out, `Pending` when
    /// the socket is full.
    fn send_queued(&mut self) -> Poll<io::Result<()>> {
        while self.session.wants_write() {
            let stream = &mut self.tcp.stream;
            let session = &mut self.session;
            if let Err(e) = std::task::ready!(nonblocking(|| session.write_tls(stream))) {
                return Poll::Ready(Err(e));
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Reads TLS records from the socket and processes them: `Ready(Ok(0))` at end of stream.
    fn receive(&mut self) -> Poll<io::Result<usize>> {
        let session = &mut self.session;
        let n = match std::task::ready!(self.tcp.read_socket(|stream, _| session.read_tls(stream)))
        {
            Ok(n) => n,
            Err(e) => return Poll::Ready(Err(e)),
        };
        if let Err(e) = self.session.process_new_packets() {
            // Tell the broker why (the alert rustls queued), if the socket takes it.
            let _ = self.send_queued();
            return Poll::Ready(Err(tls_error(e)));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_handshake(&mut self) -> Poll<io::Result<()>> {
        loop {
            std::task::ready!(self.send_queued())?;
            if !self.session.is_handshaking() {
                return Poll::Ready(Ok(()));
            }
            if std::task::ready!(self.receive())? == 0 {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the connection closed during the TLS handshake",
                )));
            }
        }
    }
}

impl Transport for TlsTransport {
    fn poll_read_buf(
        &mut self,
        _cx: &mut Context<'_>,
        buf: &mut BytesMut,
        max: usize,
    ) -> Poll<io::Result<usize>> {
        let mut eof = false;
        loop {
            let scratch = &mut self.tcp.scratch;
            let want = max.clamp(1, scratch.len());
            match self.session.reader().read(&mut scratch[..want]) {
                Ok(n) => {
                    buf.extend_from_slice(&scratch[..n]);
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if eof {
                        return Poll::Ready(Ok(0));
                    }
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
            eof = std::task::ready!(self.receive())? == 0;
            // Records that need an answer (a key update) queue one; send it while here.
            if let Poll::Ready(Err(e)) = self.send_queued() {
                return Poll::Ready(Err(e));
            }
        }
    }

    fn poll_write_vectored(
        &mut self,
        _cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // Earlier records first: the session's buffer stays bounded by what the socket takes.
        std::task::ready!(self.send_queued())?;
        let n = self.session.writer().write_vectored(bufs)?;
        if let Poll::Ready(Err(e)) = self.send_queued() {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.send_queued()
    }

    fn poll_shutdown(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.session.send_close_notify();
        std::task::ready!(self.send_queued())?;
        Poll::Ready(match self.tcp.stream.shutdown(Shutdown::Write) {
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
            result => result,
        })
    }
}
