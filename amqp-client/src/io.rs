//! What a runtime adapter provides: the byte stream ([`Transport`]) and the clock
//! ([`Timer`]). The driver and the shared state stand on these; nothing here knows either.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::BytesMut;

/// A connected byte stream, as the runtime adapters provide it. Kept minimal so that each
/// runtime can use its fastest path (e.g. tokio's readiness + `try_read_buf`).
pub trait Transport: Send + Unpin + 'static {
    /// Appends at most `max` bytes to `buf` (which has room for them; `max` is at least one).
    /// The driver sets `max` from what the next bytes are for: the rest of a body frame's
    /// payload read straight into its body must not run into the next frame. `Ok(0)` means
    /// end of stream.
    fn poll_read_buf(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        max: usize,
    ) -> Poll<io::Result<usize>>;

    /// Writes from `bufs` in order, returning how many bytes went out.
    fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>>;

    /// Flushes buffered output (a no-op for plain TCP).
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;

    /// Shuts the write side down.
    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

/// The runtime's clock and timer: the only clock the client reads (so a test can run it on
/// fake time).
pub trait Timer: Send + Sync + Unpin + 'static {
    /// The current time.
    fn now(&self) -> Instant;

    /// A future that completes at `deadline` (at once if it has passed).
    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}
