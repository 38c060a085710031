//! TCP for the event loop: a non-blocking socket registered with the loop's poller as the
//! driver's [`Transport`], and the dial that opens it.

use std::future::poll_fn;
use std::io::{self, IoSlice, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use amqp_client::adapter::Transport;
use bytes::BytesMut;
use mio::net::TcpStream;

use crate::lock;
use crate::reactor::{Handle, Readable};

/// Bytes read at most per call.
const READ_CHUNK: usize = 64 * 1024;

/// A connected, non-blocking TCP socket as the driver's [`Transport`]: `Pending` on
/// `WouldBlock`, and the poller re-polls the driver when the socket becomes ready. Reads go
/// through a reused scratch buffer (`Read` wants initialized memory).
#[derive(Debug)]
pub(crate) struct TcpTransport {
    pub(crate) stream: TcpStream,
    pub(crate) scratch: Box<[u8]>,
    readable: Arc<Readable>,
}

impl TcpTransport {
    fn new(stream: TcpStream, readable: Arc<Readable>) -> Self {
        TcpTransport {
            stream,
            scratch: vec![0; READ_CHUNK].into_boxed_slice(),
            readable,
        }
    }

    /// Reads from the socket with `op` unless it was found drained and the poller has not
    /// reported it readable since (`Pending` without a system call); `WouldBlock` marks it
    /// drained.
    pub(crate) fn read_socket(
        &mut self,
        mut op: impl FnMut(&mut TcpStream, &mut [u8]) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        if !self.readable.get() {
            return Poll::Pending;
        }
        let polled = nonblocking(|| op(&mut self.stream, &mut self.scratch));
        if polled.is_pending() {
            self.readable.set(false);
        }
        polled
    }
}

/// Retries `op` on `Interrupted`; `Pending` on `WouldBlock`.
pub(crate) fn nonblocking<T>(mut op: impl FnMut() -> io::Result<T>) -> Poll<io::Result<T>> {
    loop {
        match op() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
            result => return Poll::Ready(result),
        }
    }
}

impl Transport for TcpTransport {
    fn poll_read_buf(
        &mut self,
        _cx: &mut Context<'_>,
        buf: &mut BytesMut,
        max: usize,
    ) -> Poll<io::Result<usize>> {
        let want = max.clamp(1, self.scratch.len());
        let polled = self.read_socket(|stream, scratch| stream.read(&mut scratch[..want]));
        if let Poll::Ready(Ok(n)) = polled {
            buf.extend_from_slice(&self.scratch[..n]);
            // A read that got less than it asked for emptied the socket (as tokio reasons for
            // epoll and kqueue): data that comes later raises a new event.
            if n > 0 && n < want {
                self.readable.set(false);
            }
        }
        polled
    }

    fn poll_write_vectored(
        &mut self,
        _cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        nonblocking(|| self.stream.write_vectored(bufs))
    }

    fn poll_flush(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(match self.stream.shutdown(Shutdown::Write) {
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
            result => result,
        })
    }
}

/// Resolves `host` (on a helper thread, unless it is an IP address, so that the event loop
/// keeps running) and connects to the first address that answers, `TCP_NODELAY` on. The
/// caller bounds it with the connect timeout.
pub(crate) async fn dial(handle: Handle, host: String, port: u16) -> io::Result<TcpTransport> {
    let addrs = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => resolve(host, port).await?,
    };
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the host resolved to no address");
    for addr in addrs {
        match connect(&handle, addr).await {
            Ok(stream) => return Ok(TcpTransport::new(stream, handle.readable())),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// A non-blocking connect: done when the socket turns writable with no error pending.
async fn connect(handle: &Handle, addr: SocketAddr) -> io::Result<TcpStream> {
    let mut stream = TcpStream::connect(addr)?;
    handle.register(&mut stream)?;
    poll_fn(|_| {
        if let Some(e) = stream.take_error()? {
            return Poll::Ready(Err(e));
        }
        match stream.peer_addr() {
            Ok(_) => Poll::Ready(Ok(())),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Poll::Pending,
            Err(e) => Poll::Ready(Err(e)),
        }
    })
    .await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// What the resolver thread hands back, and whom to wake when it does.
type Answer = Arc<Mutex<(Option<io::Result<Vec<SocketAddr>>>, Option<Waker>)>>;

/// The system resolver (blocking) on a helper thread.
async fn resolve(host: String, port: u16) -> io::Result<Vec<SocketAddr>> {
    let answer: Answer = Arc::default();
    let slot = answer.clone();
    std::thread::Builder::new()
        .name("amqp-resolve".into())
        .spawn(move || {
            let result = (host.as_str(), port)
                .to_socket_addrs()
                .map(Iterator::collect);
            let waker = {
                let mut slot = lock(&slot);
                slot.0 = Some(result);
                slot.1.take()
            };
            if let Some(waker) = waker {
                waker.wake();
            }
        })?;
    poll_fn(|cx| {
        let mut slot = lock(&answer);
        match slot.0.take() {
            Some(result) => Poll::Ready(result),
            None => {
                slot.1 = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    })
    .await
}
