#!/usr/bin/env python3
"""Capture golden AMQP 0-9-1 byte streams from real peers for amqp-proto's tests.

A tiny TCP proxy listens on 127.0.0.1:<ephemeral port> and forwards one
connection to the broker (default 127.0.0.1:5672), recording both directions
raw. Each session is saved as

    amqp-proto/tests/fixtures/<name>.client.bin   bytes the client sent
    amqp-proto/tests/fixtures/<name>.server.bin   bytes RabbitMQ sent
    amqp-proto/tests/fixtures/<name>.frames.txt   frame-by-frame listing of both

Sessions:
    pika_session      pika BlockingConnection exercising most of the protocol
    raw_all_types     hand-written client; headers table with every field tag
                      RabbitMQ accepts, read back with basic.get (echoed), and
                      again after a BCC header forced RabbitMQ to re-encode it
    server_close      pika: passive queue.declare of a missing queue ->
                      server channel.close 404 -> client close-ok
    server_conn_close raw: channel.open twice on channel 1 -> server
                      connection.close 504 -> client close-ok

Before recording, every field tag (plus the spec-only tags U and L) is probed
on its own, unrecorded connection; the result table is printed and is what
amqp-proto/tests/fixtures/README.md reports.

How to rerun (from the repository root):

    pip install pika                 # captured with pika 1.4.4
    ./scripts/ensure-broker.sh       # RabbitMQ on 127.0.0.1:5672, guest/guest
    python3 scripts/capture/capture.py              # all sessions
    python3 scripts/capture/capture.py raw_all_types  # just some
    python3 scripts/capture/capture.py --check      # re-parse existing files only

The sessions create and delete their own exchange/queues (names start with
"amqp-rs.fixture."). Output is not byte-for-byte reproducible: pika's client
properties carry the Python version, the server's carry its version, and
server-generated consumer tags / delivery tags / message counts may differ.
"""

import argparse
import datetime
import decimal
import os
import select
import socket
import struct
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
DEFAULT_OUT = os.path.join(ROOT, "amqp-proto", "tests", "fixtures")

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
FRAME_END = 0xCE
FRAME_METHOD, FRAME_HEADER, FRAME_BODY, FRAME_HEARTBEAT = 1, 2, 3, 8

PREFIX = "amqp-rs.fixture."
EXCHANGE = PREFIX + "x"
QUEUE = PREFIX + "q"
RAW_QUEUE = PREFIX + "raw"
MISSING_QUEUE = PREFIX + "does-not-exist"

METHODS = {
    (10, 10): "connection.start", (10, 11): "connection.start-ok",
    (10, 20): "connection.secure", (10, 21): "connection.secure-ok",
    (10, 30): "connection.tune", (10, 31): "connection.tune-ok",
    (10, 40): "connection.open", (10, 41): "connection.open-ok",
    (10, 50): "connection.close", (10, 51): "connection.close-ok",
    (10, 60): "connection.blocked", (10, 61): "connection.unblocked",
    (10, 70): "connection.update-secret", (10, 71): "connection.update-secret-ok",
    (20, 10): "channel.open", (20, 11): "channel.open-ok",
    (20, 20): "channel.flow", (20, 21): "channel.flow-ok",
    (20, 40): "channel.close", (20, 41): "channel.close-ok",
    (40, 10): "exchange.declare", (40, 11): "exchange.declare-ok",
    (40, 20): "exchange.delete", (40, 21): "exchange.delete-ok",
    (40, 30): "exchange.bind", (40, 31): "exchange.bind-ok",
    (40, 40): "exchange.unbind", (40, 51): "exchange.unbind-ok",
    (50, 10): "queue.declare", (50, 11): "queue.declare-ok",
    (50, 20): "queue.bind", (50, 21): "queue.bind-ok",
    (50, 30): "queue.purge", (50, 31): "queue.purge-ok",
    (50, 40): "queue.delete", (50, 41): "queue.delete-ok",
    (50, 50): "queue.unbind", (50, 51): "queue.unbind-ok",
    (60, 10): "basic.qos", (60, 11): "basic.qos-ok",
    (60, 20): "basic.consume", (60, 21): "basic.consume-ok",
    (60, 30): "basic.cancel", (60, 31): "basic.cancel-ok",
    (60, 40): "basic.publish", (60, 50): "basic.return",
    (60, 60): "basic.deliver", (60, 70): "basic.get",
    (60, 71): "basic.get-ok", (60, 72): "basic.get-empty",
    (60, 80): "basic.ack", (60, 90): "basic.reject",
    (60, 100): "basic.recover-async", (60, 110): "basic.recover",
    (60, 111): "basic.recover-ok", (60, 120): "basic.nack",
    (85, 10): "confirm.select", (85, 11): "confirm.select-ok",
    (90, 10): "tx.select", (90, 11): "tx.select-ok",
    (90, 20): "tx.commit", (90, 21): "tx.commit-ok",
    (90, 30): "tx.rollback", (90, 31): "tx.rollback-ok",
}


def log(msg):
    print(msg, flush=True)


# --------------------------------------------------------------------------
# Recording proxy
# --------------------------------------------------------------------------
class RecordingProxy:
    """Accepts exactly one connection and relays it to the broker, recording
    client->server bytes in .c2s and server->client bytes in .s2c."""

    def __init__(self, upstream):
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.c2s = bytearray()
        self.s2c = bytearray()
        self.error = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            self.listener.settimeout(30)
            client, _ = self.listener.accept()
            self.listener.close()
            server = socket.create_connection(self.upstream, timeout=10)
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                s.settimeout(None)
            peer = {client: server, server: client}
            rec = {client: self.c2s, server: self.s2c}
            reading = {client, server}
            deadline = time.monotonic() + 120
            while reading:
                if time.monotonic() > deadline:
                    raise TimeoutError("proxied session did not end within 120 s")
                ready, _, _ = select.select(list(reading), [], [], 1.0)
                for s in ready:
                    try:
                        data = s.recv(1 << 16)
                    except ConnectionResetError:
                        data = b""
                    if data:
                        rec[s] += data
                        peer[s].sendall(data)
                    else:
                        reading.discard(s)
                        try:
                            peer[s].shutdown(socket.SHUT_WR)
                        except OSError:
                            pass
            client.close()
            server.close()
        except Exception as e:  # reported by finish()
            self.error = e

    def finish(self, timeout=30):
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise RuntimeError("proxy still running: did the client close its socket?")
        if self.error:
            raise self.error
        return bytes(self.c2s), bytes(self.s2c)


# --------------------------------------------------------------------------
# Frame parsing (for verification and the .frames.txt listings)
# --------------------------------------------------------------------------
def split_frames(data, client_side):
    """Yields (offset, type, channel, payload). Raises on malformed input."""
    off = 0
    if client_side:
        if data[:8] != PROTOCOL_HEADER:
            raise ValueError("client stream does not start with the protocol header")
        yield (0, "protocol-header", None, data[:8])
        off = 8
    while off < len(data):
        if len(data) - off < 8:
            raise ValueError(f"truncated frame header at offset {off}")
        ftype, ch, size = struct.unpack_from(">BHI", data, off)
        end = off + 7 + size
        if end >= len(data):
            raise ValueError(f"truncated frame at offset {off} (size {size})")
        if data[end] != FRAME_END:
            raise ValueError(f"bad frame-end 0x{data[end]:02x} at offset {end}")
        yield (off, ftype, ch, data[off + 7:end])
        off = end + 1


def describe_method(payload):
    cls, mid = struct.unpack_from(">HH", payload, 0)
    name = METHODS.get((cls, mid), f"unknown({cls},{mid})")
    extra = ""
    if name in ("connection.close", "channel.close"):
        code = struct.unpack_from(">H", payload, 4)[0]
        n = payload[6]
        text = payload[7:7 + n].decode("utf-8", "replace")
        fcls, fmid = struct.unpack_from(">HH", payload, 7 + n)
        extra = f" code={code} text={text!r} failing={METHODS.get((fcls, fmid), (fcls, fmid))}"
    elif name == "basic.return":
        code = struct.unpack_from(">H", payload, 4)[0]
        n = payload[6]
        extra = f" code={code} text={payload[7:7 + n].decode()!r}"
    elif name == "connection.tune" or name == "connection.tune-ok":
        cmax, fmax, hb = struct.unpack_from(">HIH", payload, 4)
        extra = f" channel_max={cmax} frame_max={fmax} heartbeat={hb}"
    return name, extra


def frame_listing(data, client_side):
    lines = []
    for off, ftype, ch, payload in split_frames(data, client_side):
        if ftype == "protocol-header":
            lines.append(f"{off:8d}  protocol-header {payload!r}")
        elif ftype == FRAME_METHOD:
            name, extra = describe_method(payload)
            lines.append(f"{off:8d}  method    ch={ch} size={len(payload)} {name}{extra}")
        elif ftype == FRAME_HEADER:
            cls, _w, body_size, flags = struct.unpack_from(">HHQH", payload, 0)
            lines.append(f"{off:8d}  header    ch={ch} size={len(payload)} class={cls} "
                         f"body_size={body_size} flags=0x{flags:04x}")
        elif ftype == FRAME_BODY:
            lines.append(f"{off:8d}  body      ch={ch} size={len(payload)}")
        elif ftype == FRAME_HEARTBEAT:
            lines.append(f"{off:8d}  heartbeat ch={ch}")
        else:
            lines.append(f"{off:8d}  type={ftype} ch={ch} size={len(payload)}")
    return lines


def method_names(data, client_side):
    return [describe_method(p)[0] for _, t, _, p in split_frames(data, client_side)
            if t == FRAME_METHOD]


def hexdump(data, limit):
    out = []
    for i in range(0, min(len(data), limit), 16):
        chunk = data[i:i + 16]
        hx = " ".join(f"{b:02x}" for b in chunk)
        asc = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        out.append(f"  {i:06x}  {hx:<47}  {asc}")
    return "\n".join(out)


# --------------------------------------------------------------------------
# Minimal raw AMQP 0-9-1 encoder / client
# --------------------------------------------------------------------------
def shortstr(s):
    b = s.encode() if isinstance(s, str) else s
    assert len(b) < 256
    return struct.pack(">B", len(b)) + b


def longstr(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack(">I", len(b)) + b


def field_value(tag, v):
    """Encode (tag, value) using RabbitMQ's tag table (see the errata page)."""
    t = tag.encode()
    if tag == "t":
        return t + struct.pack(">B", 1 if v else 0)
    if tag == "b":
        return t + struct.pack(">b", v)
    if tag == "B":
        return t + struct.pack(">B", v)
    if tag in ("s", "U"):  # RabbitMQ: s = signed 16; U = the 0-9-1 spec's signed 16
        return t + struct.pack(">h", v)
    if tag == "u":
        return t + struct.pack(">H", v)
    if tag == "I":
        return t + struct.pack(">i", v)
    if tag == "i":
        return t + struct.pack(">I", v)
    if tag in ("l", "L"):  # RabbitMQ: l = signed 64; L = the spec's signed 64
        return t + struct.pack(">q", v)
    if tag == "f":
        return t + struct.pack(">f", v)
    if tag == "d":
        return t + struct.pack(">d", v)
    if tag == "D":
        scale, unscaled = v
        return t + struct.pack(">Bi", scale, unscaled)
    if tag == "S":
        return t + longstr(v)
    if tag == "x":
        return t + longstr(v)
    if tag == "T":
        return t + struct.pack(">Q", v)
    if tag == "F":
        return t + table(v)
    if tag == "A":
        body = b"".join(field_value(tg, vv) for tg, vv in v)
        return t + struct.pack(">I", len(body)) + body
    if tag == "V":
        return t
    raise ValueError(f"unknown tag {tag}")


def table(items):
    """items: list of (key, tag, value) -- a list keeps the wire order."""
    body = b"".join(shortstr(k) + field_value(tag, v) for k, tag, v in items)
    return struct.pack(">I", len(body)) + body


def frame(ftype, ch, payload):
    return struct.pack(">BHI", ftype, ch, len(payload)) + payload + bytes([FRAME_END])


def method(ch, cls, mid, args=b""):
    return frame(FRAME_METHOD, ch, struct.pack(">HH", cls, mid) + args)


class ServerClosed(Exception):
    def __init__(self, kind, code, text):
        super().__init__(f"{kind} {code} {text}")
        self.kind, self.code, self.text = kind, code, text


class RawClient:
    FRAME_MAX = 131072

    def __init__(self, port, host="127.0.0.1"):
        self.sock = socket.create_connection((host, port), timeout=10)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def _read_exact(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise EOFError("server closed the socket")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_frame(self):
        ftype, ch, size = struct.unpack(">BHI", self._read_exact(7))
        payload = self._read_exact(size)
        assert self._read_exact(1)[0] == FRAME_END
        return ftype, ch, payload

    def read_method(self, expect=None):
        """Reads the next method frame. Answers a server close with close-ok
        and raises ServerClosed."""
        while True:
            ftype, ch, payload = self.read_frame()
            if ftype == FRAME_HEARTBEAT:
                continue
            assert ftype == FRAME_METHOD, f"expected a method frame, got type {ftype}"
            cls, mid = struct.unpack_from(">HH", payload, 0)
            if (cls, mid) in ((10, 50), (20, 40)):
                code = struct.unpack_from(">H", payload, 4)[0]
                text = payload[7:7 + payload[6]].decode()
                if (cls, mid) == (10, 50):
                    self.send(method(0, 10, 51))
                    kind = "connection.close"
                else:
                    self.send(method(ch, 20, 41))
                    kind = "channel.close"
                raise ServerClosed(kind, code, text)
            if expect is not None and (cls, mid) != expect:
                raise AssertionError(f"expected {METHODS[expect]}, got {METHODS.get((cls, mid))}")
            return ch, (cls, mid), payload

    def handshake(self, product="amqp-rs fixture raw client"):
        self.send(PROTOCOL_HEADER)
        self.read_method((10, 10))  # connection.start
        client_props = table([
            ("product", "S", product),
            ("version", "S", "0.0.0"),
            ("platform", "S", "Python raw socket"),
            ("capabilities", "F", [
                ("publisher_confirms", "t", True),
                ("consumer_cancel_notify", "t", True),
                ("basic.nack", "t", True),
                ("connection.blocked", "t", True),
                ("authentication_failure_close", "t", True),
            ]),
        ])
        self.send(method(0, 10, 11, client_props + shortstr("PLAIN")
                         + longstr(b"\x00guest\x00guest") + shortstr("en_US")))
        _, _, tune = self.read_method((10, 30))
        channel_max, frame_max, _hb = struct.unpack_from(">HIH", tune, 4)
        self.frame_max = min(frame_max or self.FRAME_MAX, self.FRAME_MAX)
        # tune-ok: accept channel_max, our frame_max, heartbeats off
        self.send(method(0, 10, 31, struct.pack(">HIH", channel_max, self.frame_max, 0)))
        # connection.open: vhost "/", reserved shortstr "", reserved bit 0
        self.send(method(0, 10, 40, shortstr("/") + shortstr("") + b"\x00"))
        self.read_method((10, 41))

    def channel_open(self, ch):
        self.send(method(ch, 20, 10, shortstr("")))
        self.read_method((20, 11))

    def queue_declare(self, ch, name, passive=False, durable=False, exclusive=False,
                      auto_delete=False, args=()):
        bits = passive | durable << 1 | exclusive << 2 | auto_delete << 3
        self.send(method(ch, 50, 10, struct.pack(">H", 0) + shortstr(name)
                         + struct.pack(">B", bits) + table(list(args))))
        return self.read_method((50, 11))

    def queue_delete(self, ch, name):
        self.send(method(ch, 50, 40, struct.pack(">H", 0) + shortstr(name) + b"\x00"))
        self.read_method((50, 41))

    def publish(self, ch, exchange, routing_key, body, headers_table_bytes,
                content_type=None, mandatory=False):
        self.send(method(ch, 60, 40, struct.pack(">H", 0) + shortstr(exchange)
                         + shortstr(routing_key) + struct.pack(">B", int(mandatory))))
        flags = 0x2000  # headers
        props = b""
        if content_type is not None:
            flags |= 0x8000
            props += shortstr(content_type)
        props += headers_table_bytes
        self.send(frame(FRAME_HEADER, ch,
                        struct.pack(">HHQH", 60, 0, len(body), flags) + props))
        step = self.frame_max - 8
        for i in range(0, len(body), step):
            self.send(frame(FRAME_BODY, ch, body[i:i + step]))

    def basic_get(self, ch, queue, no_ack=True):
        """Returns (get_ok_payload, header_payload, body) or None on get-empty."""
        self.send(method(ch, 60, 70, struct.pack(">H", 0) + shortstr(queue)
                         + struct.pack(">B", int(no_ack))))
        _, mid, payload = self.read_method()
        if mid == (60, 72):
            return None
        assert mid == (60, 71), METHODS.get(mid)
        ftype, _, header = self.read_frame()
        assert ftype == FRAME_HEADER
        body_size = struct.unpack_from(">Q", header, 4)[0]
        body = b""
        while len(body) < body_size:
            ftype, _, chunk = self.read_frame()
            assert ftype == FRAME_BODY
            body += chunk
        return payload, header, body

    def channel_close(self, ch):
        self.send(method(ch, 20, 40, struct.pack(">H", 200) + shortstr("bye")
                         + struct.pack(">HH", 0, 0)))
        self.read_method((20, 41))

    def connection_close(self):
        self.send(method(0, 10, 50, struct.pack(">H", 200) + shortstr("Goodbye")
                         + struct.pack(">HH", 0, 0)))
        self.read_method((10, 51))
        self.sock.close()


def headers_from_header_frame(header):
    """The encoded headers table (with its length prefix) in a basic content
    header payload. Only content-type may precede headers in our messages."""
    flags = struct.unpack_from(">H", header, 12)[0]
    off = 14
    if flags & 0x8000:
        off += 1 + header[off]
    if flags & 0x4000:
        off += 1 + header[off]
    if not flags & 0x2000:
        return b""
    n = struct.unpack_from(">I", header, off)[0]
    return header[off:off + 4 + n]


# One entry per field-value tag RabbitMQ's table codec knows, with edge values.
ALL_TAGS = [
    ("t", "t-bool", True),
    ("b", "b-i8", -128),
    ("B", "B-u8", 255),
    ("s", "s-i16", -32768),
    ("u", "u-u16", 65535),
    ("I", "I-i32", -2147483648),
    ("i", "i-u32", 4294967295),
    ("l", "l-i64", -9223372036854775808),
    ("f", "f-f32", 1.5),
    ("d", "d-f64", -2.718281828459045),
    ("D", "D-decimal", (2, -12345)),  # -123.45
    ("S", "S-longstr", "h\u00e9llo \u2713"),
    ("x", "x-bytes", bytes([0, 1, 0x7F, 0x80, 0xCE, 0xFF])),
    ("T", "T-timestamp", 1700000000),
    ("F", "F-table", [("inner", "I", 7), ("deeper", "F", [("k", "S", "v")])]),
    ("A", "A-array", [("t", False), ("b", -1), ("I", 42), ("S", "two"),
                      ("F", [("k", "S", "v")]), ("V", None), ("A", [("l", 1)]),
                      ("d", 0.25)]),
    ("V", "V-void", None),
]
# Tags of the 0-9-1 spec's own table that RabbitMQ's errata says it does not use.
SPEC_ONLY_TAGS = [
    ("U", "U-i16-spec", -2),
    ("L", "L-i64-spec", -3),
]


def probe_tag(broker_port, tag, key, value):
    """Publish a one-entry headers table on an unrecorded connection; report
    whether RabbitMQ accepts it, echoes it, and how it re-encodes it."""
    c = RawClient(broker_port)
    c.handshake(product="amqp-rs fixture tag probe")
    c.channel_open(1)
    q = f"{PREFIX}probe-{tag}"
    c.queue_declare(1, q, exclusive=True)
    sent = table([(key, tag, value)])
    try:
        c.publish(1, "", q, b"probe", sent)
        got = c.basic_get(1, q)
    except ServerClosed as e:
        c.sock.close()
        return {"tag": tag, "accepted": False, "why": f"{e.kind} {e.code} {e.text}"}
    except EOFError as e:
        return {"tag": tag, "accepted": False, "why": f"socket closed: {e}"}
    echoed = headers_from_header_frame(got[1]) if got else None
    # Force a re-encode: a BCC header is stripped by RabbitMQ before delivery.
    bcc = table([(key, tag, value), ("BCC", "A", [("S", q)])])
    c.publish(1, "", PREFIX + "nowhere", b"probe-bcc", bcc)
    got2 = c.basic_get(1, q)
    reencoded = headers_from_header_frame(got2[1]) if got2 else None
    c.queue_delete(1, q)
    c.channel_close(1)
    c.connection_close()
    return {"tag": tag, "accepted": True, "echo_identical": echoed == sent,
            "reencoded": reencoded, "sent": sent,
            "reencode_identical": reencoded == sent}


# --------------------------------------------------------------------------
# Sessions
# --------------------------------------------------------------------------
def session_raw_all_types(port, ctx):
    # Every tag RabbitMQ accepts, including the spec-only ones it tolerates
    # (L, which it re-encodes as l).
    candidates = ALL_TAGS + SPEC_ONLY_TAGS
    accepted = [t for t in candidates if ctx["probe"][t[0]]["accepted"]]
    dropped = [t[0] for t in candidates if not ctx["probe"][t[0]]["accepted"]]
    if dropped:
        log(f"  raw_all_types: dropping tags RabbitMQ rejected: {dropped}")
    items = [(key, tag, value) for tag, key, value in accepted]
    c = RawClient(port)
    c.handshake()
    c.channel_open(1)
    c.queue_declare(1, RAW_QUEUE)
    sent = table(items)
    c.publish(1, "", RAW_QUEUE, b"all field types", sent, content_type="text/plain")
    got = c.basic_get(1, RAW_QUEUE)
    assert got is not None, "message not routed"
    echoed = headers_from_header_frame(got[1])
    # Same table plus BCC -> RabbitMQ strips BCC and re-encodes the properties.
    c.publish(1, "", PREFIX + "nowhere", b"all field types, re-encoded",
              table(items + [("BCC", "A", [("S", RAW_QUEUE)])]), content_type="text/plain")
    got2 = c.basic_get(1, RAW_QUEUE)
    assert got2 is not None, "BCC message not routed"
    reencoded = headers_from_header_frame(got2[1])
    assert c.basic_get(1, RAW_QUEUE) is None
    c.queue_delete(1, RAW_QUEUE)
    c.channel_close(1)
    c.connection_close()
    # RabbitMQ decodes 'L' as a signed 64-bit "long" and writes it back as 'l'.
    expected = table([(k, "l" if tag == "L" else tag, v) for k, tag, v in items])
    log(f"  headers table sent {len(sent)} bytes; get-ok #1 echoed identical: {echoed == sent}; "
        f"get-ok #2 (after BCC) identical: {reencoded == sent}, "
        f"identical but for L->l: {reencoded == expected}")
    assert echoed == sent, "RabbitMQ did not echo the headers table unchanged"
    assert reencoded == expected, "RabbitMQ re-encoded the headers table unexpectedly"


def session_server_conn_close(port, ctx):
    c = RawClient(port)
    c.handshake()
    c.channel_open(1)
    c.send(method(1, 20, 10, shortstr("")))  # second channel.open on channel 1
    try:
        c.read_method()
        raise AssertionError("server accepted a second channel.open")
    except ServerClosed as e:
        assert e.kind == "connection.close", e
        ctx["conn_close"] = (e.code, e.text)
        log(f"  server said: {e.kind} {e.code} {e.text}")
    # close-ok was sent by read_method; the server then closes the socket.
    try:
        while c.sock.recv(4096):
            pass
    except OSError:
        pass
    c.sock.close()


def pika_params(port):
    import pika
    return pika.ConnectionParameters(host="127.0.0.1", port=port,
                                     credentials=pika.PlainCredentials("guest", "guest"))


def session_pika(port, ctx):
    import pika
    from pika.exceptions import UnroutableError

    conn = pika.BlockingConnection(pika_params(port))
    ch = conn.channel()
    ch.exchange_declare(EXCHANGE, exchange_type="topic", durable=True,
                        arguments={"x-fixture-note": "exchange args", "x-fixture-num": 7})
    ch.queue_declare(QUEUE, arguments={"x-message-ttl": 60000, "x-max-priority": 10,
                                       "x-dead-letter-exchange": PREFIX + "dlx"})
    ch.queue_bind(QUEUE, EXCHANGE, routing_key="fixture.#",
                  arguments={"x-fixture-binding": "yes", "x-fixture-level": 2})
    ch.basic_qos(prefetch_count=10)
    ch.confirm_delivery()

    headers = {
        "str": "h\u00e9llo \u2713",
        "bytes": b"\x00\x01\xce\xff",
        "bool-true": True,
        "bool-false": False,
        "int-small": 42,
        "int-negative": -42,
        "int-min-i32": -2147483648,
        "int-large": 2 ** 40,
        "int-large-negative": -(2 ** 62),
        "decimal": decimal.Decimal("3.14159"),
        "decimal-negative": decimal.Decimal("-0.5"),
        "datetime": datetime.datetime(2024, 1, 2, 3, 4, 5),
        "nested": {"level": 2, "deeper": {"k": "v", "n": None}},
        "list": ["a", 1, True, None, {"k": "v"}, [1, 2]],
        "none": None,
    }
    # float: pika cannot encode it (UnsupportedAMQPFieldException) -> not sent.
    props = pika.BasicProperties(
        content_type="application/json",
        content_encoding="utf-8",
        headers=headers,
        delivery_mode=2,
        priority=5,
        correlation_id="corr-1",
        reply_to="amqp-rs.fixture.reply",
        expiration="60000",
        message_id="msg-1",
        timestamp=1700000000,
        type="fixture.type",
        user_id="guest",
        app_id="amqp-rs-capture",
        cluster_id="cluster-1",
    )
    ch.basic_publish(EXCHANGE, "fixture.all", b'{"hello": "amqp-rs"}', properties=props,
                     mandatory=True)
    try:
        ch.basic_publish(EXCHANGE, "nowhere.key", b"unroutable", mandatory=True)
        raise AssertionError("expected basic.return")
    except UnroutableError:
        pass

    method_frame, got_props, body = ch.basic_get(QUEUE)
    assert method_frame is not None and body == b'{"hello": "amqp-rs"}', body
    assert got_props.headers is not None
    ch.basic_ack(method_frame.delivery_tag)
    method_frame, _, _ = ch.basic_get(QUEUE)
    assert method_frame is None, "queue should be empty"

    big = bytes((i * 7 + (i >> 8)) & 0xFF for i in range(300 * 1024))
    ch.basic_publish(EXCHANGE, "fixture.big", big,
                     properties=pika.BasicProperties(content_type="application/octet-stream"),
                     mandatory=True)

    received = []

    def on_message(chan, deliver, _props, body):
        received.append(body)
        chan.basic_ack(deliver.delivery_tag)

    tag = ch.basic_consume(QUEUE, on_message, consumer_tag="amqp-rs-fixture-consumer")
    for _ in range(100):
        if received:
            break
        conn.process_data_events(time_limit=0.1)
    assert received == [big], "did not receive the big message"
    ch.basic_cancel(tag)

    ch2 = conn.channel()
    ch2.tx_select()
    ch2.basic_publish(EXCHANGE, "fixture.tx", b"in a transaction")
    ch2.tx_commit()
    ch2.close()

    ch.queue_purge(QUEUE)
    ch.queue_unbind(QUEUE, EXCHANGE, routing_key="fixture.#",
                    arguments={"x-fixture-binding": "yes", "x-fixture-level": 2})
    ch.queue_delete(QUEUE)
    ch.exchange_delete(EXCHANGE)
    ch.close()
    conn.close()


def session_server_close(port, ctx):
    import pika
    from pika.exceptions import ChannelClosedByBroker

    conn = pika.BlockingConnection(pika_params(port))
    ch = conn.channel()
    try:
        ch.queue_declare(MISSING_QUEUE, passive=True)
        raise AssertionError("passive declare of a missing queue succeeded")
    except ChannelClosedByBroker as e:
        log(f"  server said: channel.close {e.reply_code} {e.reply_text}")
        assert e.reply_code == 404
    # The connection survives a channel error: use a fresh channel, then close.
    ch2 = conn.channel()
    ch2.close()
    conn.close()


SESSIONS = {
    "pika_session": (session_pika, {
        "client": ["connection.start-ok", "exchange.declare", "queue.declare", "queue.bind",
                   "basic.qos", "confirm.select", "basic.publish", "basic.get", "basic.ack",
                   "basic.consume", "basic.cancel", "tx.select", "tx.commit", "queue.purge",
                   "queue.unbind", "queue.delete", "exchange.delete", "channel.close",
                   "connection.close"],
        "server": ["connection.start", "connection.tune", "basic.return", "basic.get-ok",
                   "basic.get-empty", "basic.deliver", "basic.consume-ok", "basic.cancel-ok",
                   "tx.commit-ok", "queue.purge-ok", "connection.close-ok"],
    }),
    "raw_all_types": (session_raw_all_types, {
        "client": ["connection.start-ok", "basic.publish", "basic.get", "connection.close"],
        "server": ["basic.get-ok", "basic.get-empty", "connection.close-ok"],
    }),
    "server_close": (session_server_close, {
        "client": ["queue.declare", "channel.close-ok", "connection.close"],
        "server": ["channel.close", "connection.close-ok"],
    }),
    "server_conn_close": (session_server_conn_close, {
        "client": ["channel.open", "connection.close-ok"],
        "server": ["connection.close"],
    }),
}


def check_files(out_dir, name, expect=None, dump=True):
    with open(os.path.join(out_dir, f"{name}.client.bin"), "rb") as f:
        c2s = f.read()
    with open(os.path.join(out_dir, f"{name}.server.bin"), "rb") as f:
        s2c = f.read()
    assert c2s and s2c, f"{name}: empty capture"
    client_names = method_names(c2s, True)
    server_names = method_names(s2c, False)
    if expect:
        for m in expect["client"]:
            assert m in client_names, f"{name}: client stream lacks {m}"
        for m in expect["server"]:
            assert m in server_names, f"{name}: server stream lacks {m}"
    if dump:
        log(f"  {name}.client.bin: {len(c2s)} bytes, {len(client_names)} methods; first bytes:")
        log(hexdump(c2s, 64))
        log(f"  {name}.server.bin: {len(s2c)} bytes, {len(server_names)} methods; first bytes:")
        log(hexdump(s2c, 64))
    return c2s, s2c


def write_listing(out_dir, name, c2s, s2c, broker_version):
    lines = [f"# {name}: frame listing generated by scripts/capture/capture.py",
             f"# broker: RabbitMQ {broker_version}",
             "# columns: byte offset within the .bin file, frame type, channel, payload size",
             "", f"## {name}.client.bin ({len(c2s)} bytes)"]
    lines += frame_listing(c2s, True)
    lines += ["", f"## {name}.server.bin ({len(s2c)} bytes)"]
    lines += frame_listing(s2c, False)
    with open(os.path.join(out_dir, f"{name}.frames.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


def server_version(port):
    c = RawClient(port)
    c.send(PROTOCOL_HEADER)
    _, _, payload = c.read_method((10, 10))
    c.sock.close()
    marker = b"\x07versionS"
    i = payload.find(marker)
    if i < 0:
        return "unknown"
    n = struct.unpack_from(">I", payload, i + len(marker))[0]
    start = i + len(marker) + 4
    return payload[start:start + n].decode()


def cleanup(port):
    """Remove leftovers of an earlier, interrupted run (unrecorded)."""
    try:
        import pika
    except ImportError:
        return
    conn = pika.BlockingConnection(pika_params(port))
    for kind, name in (("q", QUEUE), ("q", RAW_QUEUE), ("x", EXCHANGE)):
        ch = conn.channel()
        if kind == "q":
            ch.queue_delete(name)
        else:
            ch.exchange_delete(name)
        ch.close()
    conn.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sessions", nargs="*", help=f"subset of {', '.join(SESSIONS)}")
    ap.add_argument("--broker-port", type=int, default=int(os.environ.get("AMQP_PORT", 5672)))
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--check", action="store_true",
                    help="only re-parse the existing fixture files")
    args = ap.parse_args()
    names = args.sessions or list(SESSIONS)
    for n in names:
        if n not in SESSIONS:
            ap.error(f"unknown session {n}")
    os.makedirs(args.out, exist_ok=True)

    if args.check:
        for n in names:
            check_files(args.out, n, SESSIONS[n][1])
        log("all fixture files parse")
        return 0

    try:
        import pika  # noqa: F401
    except ImportError:
        if any(n.startswith(("pika", "server_close")) for n in names):
            sys.exit("pika is missing: pip install pika")

    version = server_version(args.broker_port)
    log(f"broker: RabbitMQ {version} on 127.0.0.1:{args.broker_port}")
    cleanup(args.broker_port)

    ctx = {"probe": {}}
    log("probing field-value tags one at a time (unrecorded):")
    for tag, key, value in ALL_TAGS + SPEC_ONLY_TAGS:
        r = probe_tag(args.broker_port, tag, key, value)
        ctx["probe"][tag] = r
        if r["accepted"]:
            same = r["reencode_identical"]
            how = "identical" if same else f"DIFFERENT: {r['reencoded'].hex()} vs sent {r['sent'].hex()}"
            log(f"  {tag!r}: accepted; basic.get echo identical={r['echo_identical']}; "
                f"re-encoded (BCC) {how}")
        else:
            log(f"  {tag!r}: REJECTED: {r['why']}")

    for n in names:
        fn, expect = SESSIONS[n]
        log(f"== session {n}")
        proxy = RecordingProxy(("127.0.0.1", args.broker_port))
        fn(proxy.port, ctx)
        c2s, s2c = proxy.finish()
        with open(os.path.join(args.out, f"{n}.client.bin"), "wb") as f:
            f.write(c2s)
        with open(os.path.join(args.out, f"{n}.server.bin"), "wb") as f:
            f.write(s2c)
        check_files(args.out, n, expect)
        write_listing(args.out, n, c2s, s2c, version)
    log(f"wrote {len(names)} session(s) to {os.path.relpath(args.out, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
