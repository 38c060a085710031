//! The fault-injecting test proxy itself: it forwards, stalls, resumes and cuts.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use amqp_conformance::proxy::Proxy;

/// An echo server on a loopback port.
fn echo_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 || stream.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

fn roundtrip(s: &mut TcpStream, data: &[u8]) -> Vec<u8> {
    s.write_all(data).unwrap();
    let mut buf = vec![0u8; data.len()];
    s.read_exact(&mut buf).unwrap();
    buf
}

#[test]
fn forwards_stalls_resumes_and_cuts() {
    let proxy = Proxy::start(echo_server()).unwrap();
    let mut client = TcpStream::connect(proxy.addr()).unwrap();
    assert_eq!(roundtrip(&mut client, b"ping"), b"ping");

    proxy.stall();
    client.write_all(b"held").unwrap();
    client
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 4];
    let err = client.read(&mut buf).unwrap_err();
    assert!(matches!(
        err.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut
    ));
    proxy.resume();
    client.set_read_timeout(None).unwrap();
    client.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"held");

    proxy.cut();
    let n = client.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "a cut link ends");
    // New links work again.
    let mut again = TcpStream::connect(proxy.addr()).unwrap();
    assert_eq!(roundtrip(&mut again, b"back"), b"back");
}

#[test]
fn refuses_non_loopback_targets() {
    assert!(Proxy::start("192.0.2.1:5672".parse().unwrap()).is_err());
}
