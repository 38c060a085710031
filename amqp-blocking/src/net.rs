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
/// `WouldBlock`, and the poller re-polls the driver when the socket becomes ready.
///
/// Reads go through a reused scratch buffer (`Read` wants initialized memory, and this crate
/// has no `unsafe`), filled as far as the socket allows whatever the driver asked for: what
/// it asked for is copied out, the rest is kept for the next calls. Every byte is copied
/// from the scratch once either way, so reading ahead costs nothing, and it saves the system
/// calls of the short reads the driver asks for while it reads a large body straight into
/// its buffer (the frame-end octet and the next frame's header, the next message's first
/// frames): about two reads per 128 KiB message instead of three or four.
#[derive(Debug)]
pub(crate) struct TcpTransport {
    pub(crate) stream: TcpStream,
    pub(crate) scratch: Box<[u8]>,
    /// The bytes read ahead: `scratch[ahead.0..ahead.1]`.
    ahead: (usize, usize),
    readable: Arc<Readable>,
}

impl TcpTransport {
    fn new(stream: TcpStream, readable: Arc<Readable>) -> Self {
        TcpTransport {
            stream,
            scratch: vec![0; READ_CHUNK].into_boxed_slice(),
            ahead: (0, 0),
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
        if self.ahead.0 == self.ahead.1 {
            let polled = self.read_socket(|stream, scratch| stream.read(scratch));
            match polled {
                Poll::Ready(Ok(n)) if n > 0 => {
                    // A read that got less than it asked for emptied the socket (as tokio
                    // reasons for epoll and kqueue): data that comes later raises a new event.
                    if n < self.scratch.len() {
                        self.readable.set(false);
                    }
                    self.ahead = (0, n);
                }
                other => return other,
            }
        }
        let (from, to) = self.ahead;
        let n = max.clamp(1, to - from);
        buf.extend_from_slice(&self.scratch[from..from + n]);
        self.ahead.0 += n;
        Poll::Ready(Ok(n))
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    /// Reads everything `peer` sends through `t`, asking for `max(call)` bytes on each call;
    /// a `Pending` stands for a wait in the poller, which reports the socket readable.
    fn read_all(t: &mut TcpTransport, len: usize, max: impl Fn(usize) -> usize) -> Vec<u8> {
        let mut cx = Context::from_waker(Waker::noop());
        let mut got = BytesMut::new();
        let mut call = 0;
        while got.len() < len {
            let max = max(call);
            call += 1;
            let before = got.len();
            got.reserve(max);
            match t.poll_read_buf(&mut cx, &mut got, max) {
                Poll::Ready(Ok(n)) => {
                    assert!(n >= 1 && n <= max, "{n} bytes for a read of at most {max}");
                    assert_eq!(got.len(), before + n);
                }
                Poll::Ready(Err(e)) => panic!("read failed: {e}"),
                Poll::Pending => t.readable.set(true),
            }
        }
        got.to_vec()
    }

    fn pair() -> (TcpTransport, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        client.set_nonblocking(true).unwrap();
        let readable = Arc::new(Readable::default());
        readable.set(true);
        (
            TcpTransport::new(TcpStream::from_std(client), readable),
            server,
        )
    }

    #[test]
    fn short_reads_are_served_from_what_was_read_ahead_in_order() {
        let (mut t, mut peer) = pair();
        let sent: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let writer = {
            let sent = sent.clone();
            std::thread::spawn(move || peer.write_all(&sent).unwrap())
        };
        // Tiny, medium and larger-than-the-scratch reads, as the driver asks while it reads
        // large bodies straight into their buffers.
        let sizes = [8, 4096, 1, 200_000, 7, 65_536, 3];
        let got = read_all(&mut t, sent.len(), |call| sizes[call % sizes.len()]);
        writer.join().unwrap();
        assert_eq!(got, sent);
        assert_eq!(t.ahead.0, t.ahead.1, "nothing left over");
    }

    #[test]
    fn end_of_stream_comes_after_the_bytes_read_ahead() {
        let (mut t, mut peer) = pair();
        peer.write_all(b"0123456789").unwrap();
        drop(peer);
        let got = read_all(&mut t, 10, |_| 3);
        assert_eq!(got, b"0123456789");
        let mut cx = Context::from_waker(Waker::noop());
        let mut buf = BytesMut::with_capacity(16);
        let eof = loop {
            match t.poll_read_buf(&mut cx, &mut buf, 16) {
                Poll::Pending => t.readable.set(true),
                other => break other,
            }
        };
        assert!(matches!(eof, Poll::Ready(Ok(0))), "{eof:?}");
        assert!(buf.is_empty());
    }
}
