#!/usr/bin/env python3
"""A real Prometheus scrapes directd on loopback.

After a scripted set of connections (3 relayed round trips of 1000 bytes), refusals (one
client outside the whitelist, one past max-connections-per-client) and upstream failures
(2 connects to an upstream that is gone), Prometheus' HTTP API (/api/v1/query) must return
those series with those values, and `promtool check metrics` must pass on a scrape.

Every wait is bounded; every process and the temporary directory go on every exit path.
Skips (exit 0, with the reason) when prometheus or promtool is not installed.
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

DEADLINE = 90  # seconds for Prometheus to start and scrape; a failure bound, not a measurement


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EchoUpstream:
    """A relay target on 127.0.0.1 that echoes until the client half-closes."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.echo, args=(conn,), daemon=True).start()

    @staticmethod
    def echo(conn):
        conn.settimeout(20)
        with conn:
            try:
                while data := conn.recv(65536):
                    conn.sendall(data)
            except OSError:
                pass

    def stop(self):
        # shutdown first: a close alone leaves the socket listening while the
        # accept thread is blocked in accept(2) on it.
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def wait_for_line(process, pattern, log, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(log, encoding="utf-8", errors="replace") as f:
            text = f.read()
        match = re.search(pattern, text)
        if match:
            return match
        if process.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"no {pattern!r} in directd's log:\n{open(log).read()}")


def opened(files, path):
    """`path` opened for writing, kept in `files` to be closed at the end."""
    f = open(path, "w")
    files.append(f)
    return f


def connect(port, source=None):
    sock = socket.socket()
    sock.settimeout(10)
    if source:
        sock.bind((source, 0))
    try:
        sock.connect(("127.0.0.1", port))
    except OSError:
        sock.close()
        raise
    return sock


def connect_and_end(port, source=None):
    """A connection directd closes at once (a refusal, an upstream failure). With a
    timeout, Python's connect reads SO_ERROR after the handshake, so a reset that
    came that fast shows there: it still was a connection."""
    try:
        sock = connect(port, source)
    except ConnectionResetError:
        return
    read_to_end(sock)
    sock.close()


def read_to_end(sock):
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionResetError, socket.timeout):
        pass
    return data


def script(port, upstream):
    """The traffic whose counts the queries check."""
    payload = os.urandom(1000)
    for _ in range(3):
        sock = connect(port)
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        assert read_to_end(sock) == payload, "relay round trip"
        sock.close()
    connect_and_end(port, source="127.0.0.2")   # not in the whitelist
    held = []
    for _ in range(2):
        sock = connect(port)
        sock.sendall(b"abc")
        got = b""
        while len(got) < 3:
            got += sock.recv(3 - len(got))
        held.append(sock)
    connect_and_end(port)   # past max-connections-per-client 2
    for sock in held:
        sock.shutdown(socket.SHUT_WR)
        read_to_end(sock)
        sock.close()
    upstream.stop()
    for _ in range(2):   # the upstream gone: connects refused
        connect_and_end(port)


def query(web_port, expression):
    url = f"http://127.0.0.1:{web_port}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
    with urllib.request.urlopen(url, timeout=5) as response:
        body = json.load(response)
    if body.get("status") != "success":
        raise RuntimeError(f"query {expression}: {body}")
    return [float(sample["value"][1]) for sample in body["data"]["result"]]


EXPECTED = {
    'directd_connections_accepted_total': 7,
    'directd_connections_open': 0,
    'directd_connections_refused_total{reason="whitelist"}': 1,
    'directd_connections_refused_total{reason="max_connections_per_client"}': 1,
    'directd_connections_refused_total{reason="max_connections"}': 0,
    'directd_connections_refused_total{reason="rate_limit"}': 0,
    'directd_upstream_connect_failures_total{cause="refused"}': 2,
    'directd_upstream_connect_failures_total{cause="timeout"}': 0,
    'directd_upstream_connect_duration_seconds_count': 5,
    'directd_connection_duration_seconds_count': 7,
    'directd_client_received_bytes_total': 3006,
    'directd_client_sent_bytes_total': 3006,
    'sum(directd_relayed_bytes_total)': 6012,
    'up{job="directd"}': 1,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--directd", required=True)
    args = parser.parse_args()
    prometheus, promtool = shutil.which("prometheus"), shutil.which("promtool")
    if not prometheus or not promtool:
        print("prometheus: skipped: prometheus/promtool not installed (make prometheus-deps installs Debian's package)")
        return 0
    temp = tempfile.mkdtemp(prefix="directd-prometheus-")
    processes = []
    logs = []
    upstream = EchoUpstream()
    try:
        log = os.path.join(temp, "directd.log")
        directd = subprocess.Popen(
            [args.directd, "--bind-interface", "127.0.0.1", "--port", "0",
             "--forward", f"127.0.0.1:{upstream.port}", "--whitelist", "127.0.0.1",
             "--max-connections-per-client", "2", "--metrics-listen", "127.0.0.1:0"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=opened(logs, log))
        processes.append(directd)
        port = int(wait_for_line(directd, r"listening on 127\.0\.0\.1:(\d+)", log).group(1))
        metrics_port = int(wait_for_line(directd, r"serving metrics on 127\.0\.0\.1:(\d+)", log).group(1))
        wait_for_line(directd, r"relaying every connection", log)

        script(port, upstream)
        # Every session closed before Prometheus looks (bounded).
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            page = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read()
            if b"directd_connection_duration_seconds_count 7\n" in page:
                break
            time.sleep(0.05)
        check = subprocess.run([promtool, "check", "metrics"], input=page, capture_output=True, timeout=30)
        if check.returncode != 0:
            raise RuntimeError(f"promtool check metrics failed: {check.stdout.decode()} {check.stderr.decode()}")
        print("prometheus: promtool check metrics: ok")

        web_port = free_port()
        config = os.path.join(temp, "prometheus.yml")
        with open(config, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                    "scrape_configs:\n  - job_name: directd\n    static_configs:\n"
                    f"      - targets: ['127.0.0.1:{metrics_port}']\n")
        server = subprocess.Popen(
            [prometheus, f"--config.file={config}", f"--storage.tsdb.path={os.path.join(temp, 'data')}",
             f"--web.listen-address=127.0.0.1:{web_port}", "--log.level=warn"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=opened(logs, os.path.join(temp, "prometheus.log")))
        processes.append(server)
        deadline = time.monotonic() + DEADLINE
        values = {}
        while time.monotonic() < deadline:
            try:
                values = {expression: query(web_port, expression) for expression in EXPECTED}
                if all(values[e] == [v] for e, v in EXPECTED.items()):
                    break
            except (OSError, RuntimeError, ValueError):
                pass
            if server.poll() is not None:
                with open(os.path.join(temp, "prometheus.log")) as f:
                    raise RuntimeError("prometheus exited: " + f.read())
            time.sleep(0.5)
        wrong = {e: (values.get(e), v) for e, v in EXPECTED.items() if values.get(e) != [v]}
        if wrong:
            raise RuntimeError(f"series (got, wanted): {wrong}")
        print(f"prometheus: {len(EXPECTED)} series queried through /api/v1/query have the scripted values")
        return 0
    finally:
        upstream.stop()
        for process in processes:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        for f in logs:
            f.close()
        shutil.rmtree(temp, ignore_errors=True)


if __name__ == "__main__":
    # SIGTERM and SIGHUP (make interrupted, a CI timeout) unwind through main's
    # finally, so prometheus, directd and the temporary directory still go.
    for number in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, lambda *_: sys.exit(1))
    try:
        sys.exit(main())
    except (RuntimeError, AssertionError, OSError) as error:
        print(f"prometheus: FAILED: {error}", file=sys.stderr)
        sys.exit(1)
