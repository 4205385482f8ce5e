"""Clients and an upstream, in the sandbox's network namespace (their sockets are
opened there: see Sandbox.socket), for the systemd suite's checks."""
import socket
import threading
import time


def connect(box, port, timeout=3.0):
    sock = box.socket()
    sock.settimeout(timeout)
    try:
        sock.connect(("127.0.0.1", port))
    except OSError:
        sock.close()
        raise
    return sock


def echoes(sock, payload):
    """True if payload comes back whole on sock (False on EOF or a reset)."""
    try:
        sock.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = sock.recv(len(payload) - len(got))
            if not chunk:
                return False
            got += chunk
        return got == payload
    except OSError:
        return False


def ended_by_peer(sock):
    """True once the peer ends the connection (EOF or reset), within the socket's timeout."""
    try:
        return sock.recv(64) == b""
    except ConnectionResetError:
        return True
    except OSError:
        return False


def round_trip(box, port, payload=b"ping\n", timeout=3.0):
    """True if a new connection to port echoes payload back (echo mode, or relayed to the echo upstream)."""
    try:
        with connect(box, port, timeout) as sock:
            return echoes(sock, payload)
    except OSError:
        return False


def refuses(box, port):
    try:
        connect(box, port, timeout=1.0).close()
        return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


class EchoUpstream:
    """An upstream echo server on loopback inside the sandbox (for relay mode)."""

    def __init__(self, box, port):
        self.listener = box.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen(64)
        self.listener.settimeout(0.2)
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stopping:
            try:
                peer, _ = self.listener.accept()
            except OSError:
                continue
            threading.Thread(target=self._echo, args=(peer,), daemon=True).start()

    @staticmethod
    def _echo(peer):
        peer.settimeout(30)
        with peer:
            try:
                while chunk := peer.recv(65536):
                    peer.sendall(chunk)
            except OSError:
                pass

    def close(self):
        self.stopping = True
        self.thread.join(timeout=2)
        self.listener.close()


class ConnectLoop:
    """A client that connects in a loop, each connection echoing a byte.

    It counts, per phase (set by the caller: "restart", "kill", ...), the connects
    served, the connects that failed (refused: nothing took them), and the
    connections cut after they were taken (reset, or no echo).
    """

    def __init__(self, box, port):
        self.box, self.port = box, port
        self.phase = "start"
        self.served = 0
        self.refused = {}  # phase -> count
        self.cut = {}
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.thread.join(timeout=30)

    def _run(self):
        # A connect waits in the backlog through a restart: 15 s is a failure bound only.
        while not self.stopping.is_set():
            phase = self.phase
            try:
                sock = connect(self.box, self.port, timeout=15.0)
            except OSError:
                self.refused[phase] = self.refused.get(phase, 0) + 1
                time.sleep(0.001)
                continue
            with sock:
                if echoes(sock, b"x"):
                    self.served += 1
                else:
                    self.cut[phase] = self.cut.get(phase, 0) + 1

    def total(self):
        return self.served + sum(self.refused.values()) + sum(self.cut.values())
