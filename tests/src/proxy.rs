//! A loopback TCP proxy that a test can stall and cut, to put a client through the faults a
//! network causes: a link that goes silent (packets dropped, no RST) and a link that is reset.
//!
//! ```no_run
//! use amqp_conformance::proxy::Proxy;
//!
//! let proxy = Proxy::start("127.0.0.1:5672".parse().unwrap()).unwrap();
//! // connect the client to proxy.addr() ...
//! proxy.stall(); // bytes stop flowing both ways; sockets stay open
//! proxy.cut(); // every current link is reset; new connections are accepted again
//! ```
//!
//! Threads, not async: it serves any adapter. Only loopback addresses are accepted, at both
//! ends.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;

/// Shared between the handle and the forwarding threads.
#[derive(Debug, Default)]
struct Control {
    /// `true` while stalled; forwarding threads wait on `resumed`.
    stalled: Mutex<bool>,
    resumed: Condvar,
    /// Both sockets of every live link, so `cut` can reset them.
    links: Mutex<Vec<(TcpStream, TcpStream)>>,
    target: Mutex<Option<SocketAddr>>,
    shutdown: AtomicBool,
}

/// A running proxy; dropping it stops accepting and cuts every link.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    control: Arc<Control>,
}

impl Proxy {
    /// Listens on a fresh loopback port and forwards every connection to `target`.
    pub fn start(target: SocketAddr) -> io::Result<Proxy> {
        if !target.ip().is_loopback() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the test proxy only forwards to loopback addresses",
            ));
        }
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let control = Arc::new(Control::default());
        *lock(&control.target) = Some(target);
        let c = Arc::clone(&control);
        thread::Builder::new()
            .name("test-proxy-accept".into())
            .spawn(move || accept_loop(&listener, &c))?;
        Ok(Proxy { addr, control })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops moving bytes in both directions, leaving the sockets open: to both ends the link
    /// looks alive but silent (a dead peer only heartbeats or timeouts detect).
    pub fn stall(&self) {
        *lock(&self.control.stalled) = true;
    }

    /// Lets bytes flow again after [`Proxy::stall`].
    pub fn resume(&self) {
        *lock(&self.control.stalled) = false;
        self.control.resumed.notify_all();
    }

    /// Resets every current link (both ends see the connection fail) and lets bytes flow
    /// again for new links.
    pub fn cut(&self) {
        for (a, b) in lock(&self.control.links).drain(..) {
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
        }
        self.resume();
    }

    /// Where new connections are forwarded to.
    pub fn target(&self) -> Option<SocketAddr> {
        *lock(&self.control.target)
    }

    /// Forwards new connections to `target` instead (links already open stay where they are).
    pub fn retarget(&self, target: SocketAddr) {
        if target.ip().is_loopback() {
            *lock(&self.control.target) = Some(target);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.control.shutdown.store(true, Ordering::SeqCst);
        self.cut();
        // Wake the accept loop so it sees the shutdown flag.
        let _ = TcpStream::connect(self.addr);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn accept_loop(listener: &TcpListener, control: &Arc<Control>) {
    for client in listener.incoming() {
        if control.shutdown.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        let Some(target) = *lock(&control.target) else {
            continue;
        };
        let Ok(server) = TcpStream::connect(target) else {
            // Nothing listens there (node down): the client sees its connection closed.
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (Ok(c2), Ok(s2), Ok(c3), Ok(s3)) = (
            client.try_clone(),
            server.try_clone(),
            client.try_clone(),
            server.try_clone(),
        ) else {
            continue;
        };
        lock(&control.links).push((c3, s3));
        for (from, to) in [(client, s2), (server, c2)] {
            let c = Arc::clone(control);
            let _ = thread::Builder::new()
                .name("test-proxy-pipe".into())
                .spawn(move || pipe(from, to, &c));
        }
    }
}

/// Copies `from` to `to` until either ends; waits while stalled.
fn pipe(mut from: TcpStream, mut to: TcpStream, control: &Control) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut stalled = lock(&control.stalled);
        while *stalled {
            stalled = control
                .resumed
                .wait(stalled)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        drop(stalled);
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}
