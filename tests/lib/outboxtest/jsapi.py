"""A minimal NATS client (the text protocol over TCP) for JetStream API
requests: stream and consumer info (answered by their leaders, so accurate
on a cluster) and stream deletion. Every read is bounded."""
import json
import os
import socket
import time


class NatsError(RuntimeError):
    pass


class Nats:
    def __init__(self, urls, timeout=3.0):
        """urls: "nats://127.0.0.1:P1,nats://127.0.0.1:P2"; the first node that
        answers within timeout is used."""
        self.timeout = timeout
        self.sock = None
        self.buf = b""
        self.sid = 0
        last = None
        for url in urls.split(","):
            host, port = url.strip().split("://", 1)[-1].rsplit(":", 1)
            try:
                self._connect(host, int(port))
                return
            except (OSError, NatsError) as e:
                last = e
                self.close()
        raise NatsError("no NATS node answered (%s): %s" % (urls, last))

    def _connect(self, host, port):
        self.sock = socket.create_connection((host, port), timeout=self.timeout)
        self.sock.settimeout(self.timeout)
        line = self._line(time.monotonic() + self.timeout)
        if not line.startswith(b"INFO"):
            raise NatsError("unexpected greeting %r" % line[:80])
        self.sock.sendall(b'CONNECT {"verbose":false,"pedantic":false,"name":"outboxtest"}\r\nPING\r\n')
        deadline = time.monotonic() + self.timeout
        while self._line(deadline) != b"PONG":
            pass

    def close(self):
        if self.sock:
            self.sock.close()
        self.sock = None
        self.buf = b""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise NatsError("timed out")
        self.sock.settimeout(left)
        data = self.sock.recv(65536)
        if not data:
            raise NatsError("connection closed")
        self.buf += data

    def _line(self, deadline):
        """The next protocol line; answers the server's PINGs; raises on -ERR."""
        while True:
            while b"\r\n" not in self.buf:
                self._fill(deadline)
            line, self.buf = self.buf.split(b"\r\n", 1)
            if line == b"PING":
                self.sock.sendall(b"PONG\r\n")
            elif line.startswith(b"-ERR"):
                raise NatsError(line.decode(errors="replace"))
            elif line not in (b"+OK", b""):
                return line

    def request(self, subject, payload=b"", timeout=None):
        """Publishes with a reply inbox and returns the first reply's payload."""
        deadline = time.monotonic() + (timeout or self.timeout)
        self.sid += 1
        inbox = "_INBOX.outboxtest.%s" % os.urandom(8).hex()
        self.sock.sendall(b"SUB %s %d\r\nUNSUB %d 1\r\nPUB %s %s %d\r\n%s\r\n" % (
            inbox.encode(), self.sid, self.sid, subject.encode(), inbox.encode(),
            len(payload), payload))
        while True:
            line = self._line(deadline)
            if not line.startswith(b"MSG ") and not line.startswith(b"HMSG "):
                continue
            parts = line.split()
            size = int(parts[-1])
            while len(self.buf) < size + 2:
                self._fill(deadline)
            body, self.buf = self.buf[:size], self.buf[size + 2:]
            if parts[0] == b"HMSG":  # headers first (e.g. 503 no responders)
                hdr_len = int(parts[-2])
                head, body = body[:hdr_len], body[hdr_len:]
                if b" 503" in head.split(b"\r\n", 1)[0]:
                    raise NatsError("no responders for %s" % subject)
            if int(parts[2]) == self.sid:
                return body

    def js(self, api, payload=None, timeout=None):
        """A JetStream API call ($JS.API.<api>): the decoded reply; raises
        NatsError with the server's error description."""
        body = json.dumps(payload).encode() if payload is not None else b""
        reply = json.loads(self.request("$JS.API." + api, body, timeout))
        if "error" in reply:
            err = reply["error"]
            raise NatsError("%s: %s (%s)" % (api, err.get("description"), err.get("err_code")))
        return reply


def ask_any(urls, fn, timeout=5.0):
    """FN(Nats) on the first node of URLS (comma-separated) that answers it: a
    node still catching up after a restart says "temporarily unavailable"
    while the others know. Raises the last error when none does."""
    last = None
    for url in urls.split(","):
        try:
            with Nats(url, timeout=timeout) as n:
                return fn(n)
        except (OSError, NatsError, ValueError) as e:
            last = e
    raise NatsError(str(last))


def stream_state(nats, stream):
    """{"messages", "first_seq", "last_seq", ...} of STREAM, from its leader."""
    return nats.js("STREAM.INFO." + stream)["state"]


def consumer_info(nats, stream, durable):
    """CONSUMER.INFO of a durable consumer, as JetStream answers it."""
    return nats.js("CONSUMER.INFO.%s.%s" % (stream, durable))


def consumer_state(nats, stream, durable):
    """(num_ack_pending, num_pending, num_redelivered) of a durable consumer."""
    c = consumer_info(nats, stream, durable)
    return c.get("num_ack_pending", 0), c.get("num_pending", 0), c.get("num_redelivered", 0)


def consumer_floors(nats, stream, durable):
    """(delivered, ack floor) stream sequences of a durable consumer."""
    c = consumer_info(nats, stream, durable)
    return c.get("delivered", {}).get("stream_seq", 0), c.get("ack_floor", {}).get("stream_seq", 0)


def purge_stream(nats, stream):
    """Removes every message of STREAM, keeping the stream and its consumers
    (no meta-leader operation); True if it existed."""
    try:
        nats.js("STREAM.PURGE." + stream, timeout=10)
        return True
    except NatsError as e:
        if "10059" in str(e):  # stream not found
            return False
        raise

