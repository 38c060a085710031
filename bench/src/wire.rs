//! Just enough AMQP 0-9-1 framing for the fake broker and the kernel floor,
//! written independently of amqp-proto so that neither favours our codec.
//!
//! Frame: type (1 byte), channel (u16), payload size (u32), payload, 0xCE.
//! A method payload starts with class id and method id (u16 each).

pub const FRAME_METHOD: u8 = 1;
pub const FRAME_HEADER: u8 = 2;
pub const FRAME_BODY: u8 = 3;
pub const FRAME_HEARTBEAT: u8 = 8;
pub const FRAME_END: u8 = 0xCE;
/// What the fake broker offers in connection.tune (RabbitMQ's default).
pub const FRAME_MAX: usize = 131_072;

pub const BASIC: u16 = 60;
pub const BASIC_PUBLISH: u16 = 40;
pub const BASIC_DELIVER: u16 = 60;
pub const BASIC_ACK: u16 = 80;

/// Appends one frame whose payload `payload` writes; the size is patched in.
pub fn frame(out: &mut Vec<u8>, kind: u8, channel: u16, payload: impl FnOnce(&mut Vec<u8>)) {
    out.push(kind);
    out.extend_from_slice(&channel.to_be_bytes());
    let size_at = out.len();
    out.extend_from_slice(&[0; 4]);
    payload(out);
    let size = (out.len() - size_at - 4) as u32;
    out[size_at..size_at + 4].copy_from_slice(&size.to_be_bytes());
    out.push(FRAME_END);
}

/// Appends a method frame: class, method, then the arguments `args` writes.
pub fn method(
    out: &mut Vec<u8>,
    channel: u16,
    class: u16,
    method: u16,
    args: impl FnOnce(&mut Vec<u8>),
) {
    frame(out, FRAME_METHOD, channel, |p| {
        p.extend_from_slice(&class.to_be_bytes());
        p.extend_from_slice(&method.to_be_bytes());
        args(p);
    });
}

pub fn shortstr(out: &mut Vec<u8>, s: &str) {
    out.push(s.len() as u8);
    out.extend_from_slice(s.as_bytes());
}

pub fn longstr(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

/// A content header (default properties) and the body frames of `body`, cut
/// at `frame_max` as every client and RabbitMQ do.
pub fn content(out: &mut Vec<u8>, channel: u16, body: &[u8], frame_max: usize) {
    frame(out, FRAME_HEADER, channel, |p| {
        p.extend_from_slice(&BASIC.to_be_bytes());
        p.extend_from_slice(&0u16.to_be_bytes()); // weight
        p.extend_from_slice(&(body.len() as u64).to_be_bytes());
        p.extend_from_slice(&0u16.to_be_bytes()); // no properties
    });
    for chunk in body.chunks(frame_max - 8) {
        frame(out, FRAME_BODY, channel, |p| p.extend_from_slice(chunk));
    }
}

/// One message as a client publishes it on channel 1: basic.publish to the
/// default exchange with routing key `queue`, header, body frames.
pub fn publish_message(queue: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 64 + queue.len());
    method(&mut out, 1, BASIC, BASIC_PUBLISH, |p| {
        p.extend_from_slice(&0u16.to_be_bytes()); // reserved
        shortstr(p, ""); // default exchange
        shortstr(p, queue);
        p.push(0); // not mandatory, not immediate
    });
    content(&mut out, 1, body, FRAME_MAX);
    out
}

/// A pre-encoded delivery (basic.deliver + header + body frames) whose
/// delivery tag is patched per message.
pub struct DeliverTemplate {
    bytes: Vec<u8>,
    tag_at: usize,
}

impl DeliverTemplate {
    pub fn new(
        channel: u16,
        consumer_tag: &str,
        queue: &str,
        body: &[u8],
        frame_max: usize,
    ) -> Self {
        let mut bytes = Vec::with_capacity(body.len() + 64 + queue.len());
        method(&mut bytes, channel, BASIC, BASIC_DELIVER, |p| {
            shortstr(p, consumer_tag);
            p.extend_from_slice(&0u64.to_be_bytes());
            p.push(0); // not redelivered
            shortstr(p, "");
            shortstr(p, queue);
        });
        content(&mut bytes, channel, body, frame_max);
        // frame header (7), class + method (4), consumer tag (1 + len)
        let tag_at = 7 + 4 + 1 + consumer_tag.len();
        DeliverTemplate { bytes, tag_at }
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Appends the delivery with tag `tag`.
    pub fn append(&self, out: &mut Vec<u8>, tag: u64) {
        let at = out.len() + self.tag_at;
        out.extend_from_slice(&self.bytes);
        out[at..at + 8].copy_from_slice(&tag.to_be_bytes());
    }
}

/// basic.ack (21 bytes): a broker confirming publishes, or a consumer acking.
pub fn ack(out: &mut Vec<u8>, channel: u16, tag: u64, multiple: bool) {
    method(out, channel, BASIC, BASIC_ACK, |p| {
        p.extend_from_slice(&tag.to_be_bytes());
        p.push(u8::from(multiple));
    });
}

/// Length of [`ack`]'s frame.
pub const ACK_LEN: usize = 7 + 4 + 8 + 1 + 1;

/// A cursor over a received method payload.
pub struct Args<'a>(pub &'a [u8]);

impl<'a> Args<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
    pub fn u8(&mut self) -> u8 {
        self.take(1).first().copied().unwrap_or(0)
    }
    pub fn u16(&mut self) -> u16 {
        let b = self.take(2);
        if b.len() == 2 {
            u16::from_be_bytes([b[0], b[1]])
        } else {
            0
        }
    }
    pub fn u64(&mut self) -> u64 {
        self.take(8).try_into().map_or(0, u64::from_be_bytes)
    }
    pub fn skip_shortstr(&mut self) {
        let n = self.u8() as usize;
        self.take(n);
    }
    pub fn shortstr(&mut self) -> String {
        let n = self.u8() as usize;
        String::from_utf8_lossy(self.take(n)).into_owned()
    }
}
