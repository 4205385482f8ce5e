"""Relayed sessions that stream pseudo-random bytes both ways, hashed on every side,
for the upgrade checks: each byte sent and received is counted and hashed (sha256),
so that a byte lost, repeated or reordered anywhere changes a hash.

One thread pumps every socket (non-blocking, one selector): each side sends a chunk
per tick while it streams, and reads whatever arrives. A session is "cut" if a side
sees its peer end it (EOF or a reset) before that peer half-closed on purpose.
"""
import hashlib
import os
import selectors
import socket
import threading
import time

from clients import EchoUpstream, connect

PATTERN_SIZE = 1 << 20
PATTERN = os.urandom(PATTERN_SIZE)
TICK = 0.02  # seconds between chunks
TOTAL_RATE = 4_000_000  # bytes a second, all sessions and both ways together


class Side:
    """One end of a session, as the test holds it: the client's or the upstream's."""

    def __init__(self, sock, seed, chunk):
        sock.setblocking(False)
        self.sock, self.seed, self.chunk = sock, seed, chunk
        self.sent = self.received = 0
        self.sent_hash, self.received_hash = hashlib.sha256(), hashlib.sha256()
        self.streaming = True  # still sending; False once it half-closed
        self.peer_done = False  # its peer half-closed on purpose: an EOF is expected
        self.eof = False
        self.cut = None  # why the connection ended early, if it did

    def send_some(self):
        if not self.streaming or self.cut:
            return
        at = (self.seed + self.sent) % PATTERN_SIZE
        data = PATTERN[at:at + self.chunk]
        try:
            n = self.sock.send(data)
        except BlockingIOError:
            return
        except OSError as error:
            self.cut = f"send: {error}"
            return
        self.sent_hash.update(data[:n])
        self.sent += n

    def read_some(self):
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError as error:
            self.cut = f"recv: {error}"
            return
        if data:
            self.received_hash.update(data)
            self.received += len(data)
        elif self.peer_done:
            self.eof = True
        else:
            self.cut = "EOF before the peer half-closed"

    def half_close(self):
        if self.streaming and not self.cut:
            self.streaming = False
            try:
                self.sock.shutdown(socket.SHUT_WR)
            except OSError as error:
                self.cut = f"shutdown: {error}"


class HashedStreams:
    """count sessions client -> directd (port) -> the test's upstream (upstream_port);
    every half_every-th one has its client half-closed from the start. Connections
    that reach the upstream after these (a connect loop's) are echoed."""

    def __init__(self, box, port, upstream_port, count, half_every=4):
        self.listener = box.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", upstream_port))
        self.listener.listen(count + 64)
        self.listener.settimeout(10)  # a failure bound only
        chunk = max(256, TOTAL_RATE // (2 * count) // int(1 / TICK))
        # Each client names itself first (8 bytes, not hashed): a connection that reaches
        # the upstream from elsewhere (one left in the listener's backlog by an earlier
        # check, say) is then never taken for a session's.
        clients = []
        for i in range(count):
            client = connect(box, port, timeout=10)
            client.sendall(b"S%07d" % i)
            clients.append(client)
        upstreams = {}
        deadline = time.monotonic() + 30  # a failure bound only
        while len(upstreams) < count and time.monotonic() < deadline:
            peer, _ = self.listener.accept()
            tag = self._tag(peer)
            if tag is not None and tag < count and tag not in upstreams:
                upstreams[tag] = peer
            else:
                peer.close()
        if len(upstreams) < count:
            raise RuntimeError(f"only {len(upstreams)} of {count} sessions reached the upstream")
        self.sessions = [(Side(clients[i], i * 7919, chunk), Side(upstreams[i], i * 7919 + 524287, chunk))
                         for i in range(count)]
        self.stopping = threading.Event()
        self.echoing = True
        self.selector = selectors.DefaultSelector()
        for client, upstream in self.sessions:
            self.selector.register(client.sock, selectors.EVENT_READ, client)
            self.selector.register(upstream.sock, selectors.EVENT_READ, upstream)
        for n, (client, upstream) in enumerate(self.sessions):
            if n % half_every == 0:
                self._half_close(client, upstream)
        self.pump = threading.Thread(target=self._pump, daemon=True)
        self.pump.start()
        self.echo = threading.Thread(target=self._echo_the_rest, daemon=True)
        self.echo.start()

    @staticmethod
    def _tag(peer):
        """The session number a client sent first; None for anything else."""
        peer.settimeout(2)
        got = b""
        try:
            while len(got) < 8 and (chunk := peer.recv(8 - len(got))):
                got += chunk
        except OSError:
            return None
        return int(got[1:]) if len(got) == 8 and got[:1] == b"S" and got[1:].isdigit() else None

    @staticmethod
    def _half_close(side, peer):
        peer.peer_done = True  # first: the pump thread may see the EOF at once
        side.half_close()

    def _pump(self):
        next_tick = time.monotonic()
        while not self.stopping.is_set():
            for key, _ in self.selector.select(timeout=max(0.0, next_tick - time.monotonic())):
                side = key.data
                side.read_some()
                if side.eof or side.cut:
                    self.selector.unregister(side.sock)
            if time.monotonic() >= next_tick:
                next_tick += TICK
                for client, upstream in self.sessions:
                    client.send_some()
                    upstream.send_some()

    def _echo_the_rest(self):
        self.listener.settimeout(0.2)
        while self.echoing:
            try:
                peer, _ = self.listener.accept()
            except OSError:
                continue
            threading.Thread(target=EchoUpstream._echo, args=(peer,), daemon=True).start()

    def progress(self):
        """Bytes received on every side so far (to see that sessions still move)."""
        return sum(c.received + u.received for c, u in self.sessions)

    def cut(self):
        return [(n, c.cut or u.cut) for n, (c, u) in enumerate(self.sessions) if c.cut or u.cut]

    def finish(self, timeout=20.0):
        """Both sides half-close; waits (timeout is a failure bound) until every
        side has seen its EOF; then stops. Returns (exact, cut, problems)."""
        for client, upstream in self.sessions:
            self._half_close(client, upstream)
            self._half_close(upstream, client)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not all(
                (c.eof or c.cut) and (u.eof or u.cut) for c, u in self.sessions):
            time.sleep(0.05)
        self.stopping.set()
        self.pump.join(timeout=5)
        self.echoing = False
        self.echo.join(timeout=2)
        exact, problems = 0, []
        for n, (client, upstream) in enumerate(self.sessions):
            why = client.cut or upstream.cut
            if not why and not (client.eof and upstream.eof):
                why = "no EOF within the bound"
            if not why and (client.sent_hash.digest() != upstream.received_hash.digest()
                            or upstream.sent_hash.digest() != client.received_hash.digest()):
                why = (f"bytes differ: client sent {client.sent}, upstream got {upstream.received}; "
                       f"upstream sent {upstream.sent}, client got {client.received}")
            if why:
                problems.append(f"#{n}: {why}")
            else:
                exact += 1
        for client, upstream in self.sessions:
            client.sock.close()
            upstream.sock.close()
        self.listener.close()
        self.selector.close()
        return exact, len(problems), problems

    def bytes_moved(self):
        return sum(c.sent + u.sent for c, u in self.sessions)
