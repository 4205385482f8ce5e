#!/usr/bin/env python3
"""directd on a real multi-interface network, built from Linux network namespaces.

Loopback cannot show that a listener bound to one interface's address is out of
reach through another, so this suite builds three hosts joined by veth pairs:

    client-lan (198.51.100.2, 2001:db8:1::2, fe80::12)
        |  link "lan"
    server  lan0: 198.51.100.1/24, 2001:db8:1::1/64, fe80::11/64
            vpn0: 203.0.113.1/24,  2001:db8:2::1/64, fe80::21/64
        |  link "vpn"
    client-vpn (203.0.113.2, 2001:db8:2::2, fe80::22)

Each client routes everything through the server, so it can try every server
address. Only these documentation addresses and loopback are ever targeted.

It proves, against the real sockets:
1. the reachability matrix: for each bind value, every client tries every
   server address; observed == expected, cell by cell;
2. fail closed: invalid or unavailable values exit with the documented code and
   message, open no IP socket at all (strace), and leave nothing listening;
3. no IPv4 through IPv6: `::` refuses IPv4, the default serves both;
4. IPv6 disabled on the server: the default serves IPv4 with a warning, an
   explicit IPv6 value fails with the family message;
5. port in use on one address of a list: the start fails, nothing stays open;
6. an unprivileged user asking for port 80: the permission message, exit 77;
7. bind-dynamic, vpn0 absent at start: directd runs, listens on nothing, says
   it waits; vpn0 appears and gets addresses: listened on and reached, with the
   time from the kernel's address event to the listener measured;
8. an address removed: its listener gone, the other listener the same socket,
   and a relayed connection opened before still carries data once it returns;
9. vpn0 deleted and created again (new index): fe80::21%vpn0 follows;
10. an explicit address assigned after the start: listened on then;
11. an IPv6 address under DAD: listened on only when no longer tentative, with
    no error storm in the log;
12. four bursts of 1,000 address changes (the last while directd is stopped,
    so that its netlink socket overflows): exactly the right listeners, no
    leaked descriptor;
    and, throughout 7-12, /proc/net/tcp{,6} sampled every 50 ms never shows a
    wildcard or foreign listener on the port;
13. bind-to-device: the matrix again, with the cross-link cells closed and the
    rest unchanged; the host's own connection to a LAN address; the values that
    name no interface (empty, 0.0.0.0, ::) exit 78;
14. rate-limit over IPv6: many sources inside one 2001:db8:1::/64 share one
    bucket, the client in 2001:db8:2::/64 has its own, and with
    rate-limit-ipv6-prefix 128 every address has its own.

Needs root. Namespaces are named per run (uvb<pid>-...), removed on exit even
after a failure or a signal, and stale ones from killed runs are swept first.
Ends with "netns: N passed, M failed".
"""
import argparse
import atexit
import concurrent.futures
import ctypes
import datetime
import errno
import json
import os
import re
import select
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

PREFIX = "uvb"
PORT = 7000
RUN = f"{PREFIX}{os.getpid()}"
SERVER, LAN, VPN = f"{RUN}-srv", f"{RUN}-lan", f"{RUN}-vpn"

# Each client's interface, and the targets it tries: (label, host) with the
# link-local ones zoned on the client's own interface.
CLIENT_IFACE = {LAN: "eth0", VPN: "eth0"}
TARGETS = [
    ("lan v4", "198.51.100.1"),
    ("lan v6", "2001:db8:1::1"),
    ("lan ll", "fe80::11%eth0"),
    ("vpn v4", "203.0.113.1"),
    ("vpn v6", "2001:db8:2::1"),
    ("vpn ll", "fe80::21%eth0"),
]
CLIENT_LINK = {LAN: "lan0", VPN: "vpn0"}

passed = 0
failed = 0


def check(ok, what, detail=""):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
        print(f"FAIL: {what}" + (f"\n{detail}" if detail else ""), file=sys.stderr)
    return ok


def sh(*args, check=True, **kwargs):
    return subprocess.run(args, check=check, capture_output=True, text=True, **kwargs)


def in_ns(ns, *args, **kwargs):
    return sh("ip", "netns", "exec", ns, *args, **kwargs)


# ---------------------------------------------------------------- the network


def namespaces():
    out = sh("ip", "netns", "list").stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def sweep_stale():
    """Removes namespaces of earlier runs of this suite whose process is gone."""
    for name in namespaces():
        match = re.fullmatch(rf"{PREFIX}(\d+)-(srv|lan|vpn)", name)
        if match and not os.path.exists(f"/proc/{match.group(1)}"):
            sh("ip", "netns", "del", name, check=False)


def teardown():
    stop_anchor()
    for name in (SERVER, LAN, VPN):
        sh("ip", "netns", "del", name, check=False)


# Each link: the server's interface, the client namespace and veth suffix, the
# server's addresses (IPv4, global IPv6, link-local) and the client's. Fixed MAC
# addresses, so that a link created again looks the same to its client.
LINKS = {
    "lan0": ("l", "198.51.100.1", "2001:db8:1::1", "fe80::11", "198.51.100.2", "2001:db8:1::2", "fe80::12"),
    "vpn0": ("v", "203.0.113.1", "2001:db8:2::1", "fe80::21", "203.0.113.2", "2001:db8:2::2", "fe80::22"),
}
SERVER_MAC = {"lan0": "02:00:00:00:01:01", "vpn0": "02:00:00:00:02:01"}
CLIENT_MAC = {"lan0": "02:00:00:00:01:02", "vpn0": "02:00:00:00:02:02"}


def make_link(link, server_addresses=True):
    """Creates `link` (a veth pair: the server's end and the client's eth0).

    `server_addresses`: True gives the server's end its three addresses (as the
    matrix needs them), False none (the dynamic cases add them one by one).
    The client gets permanent neighbour entries for the server's addresses, so
    that its first packet to an address that has just appeared is sent at once
    instead of after a failed ARP/NDP round (seconds).
    """
    client = LAN if link == "lan0" else VPN
    iface, v4, v6, ll, cv4, cv6, cll = LINKS[link]
    a, b = f"{RUN}{iface}a"[-15:], f"{RUN}{iface}b"[-15:]
    sh("ip", "link", "add", a, "address", SERVER_MAC[link], "type", "veth",
       "peer", "name", b, "address", CLIENT_MAC[link])
    sh("ip", "link", "set", a, "netns", SERVER, "name", link)
    sh("ip", "link", "set", b, "netns", client, "name", "eth0")
    for ns, dev, addr4, addr6, addrll, give in (
            (SERVER, link, v4, v6, ll, server_addresses), (client, "eth0", cv4, cv6, cll, True)):
        # Fixed link-local addresses instead of ones derived from random MACs.
        in_ns(ns, "ip", "link", "set", "dev", dev, "addrgenmode", "none")
        if give:
            in_ns(ns, "ip", "addr", "add", f"{addr4}/24", "dev", dev)
            in_ns(ns, "ip", "-6", "addr", "add", f"{addr6}/64", "dev", dev, "nodad")
            in_ns(ns, "ip", "-6", "addr", "add", f"{addrll}/64", "dev", dev, "nodad")
        in_ns(ns, "ip", "link", "set", "dev", dev, "up")
    for ns, dev, mac, addresses in ((client, "eth0", SERVER_MAC[link], (v4, v6, ll)),
                                     (SERVER, link, CLIENT_MAC[link], (cv4, cv6, cll))):
        for address in addresses:
            in_ns(ns, "ip", "neigh", "replace", address, "lladdr", mac, "dev", dev, "nud", "permanent")
    in_ns(client, "ip", "route", "add", "default", "via", v4)
    in_ns(client, "ip", "-6", "route", "add", "default", "via", v6)


def build():
    for name in (SERVER, LAN, VPN):
        sh("ip", "netns", "add", name)
        in_ns(name, "ip", "link", "set", "lo", "up")
    for link in LINKS:
        make_link(link)


def reset_link(link, server_addresses=True):
    """`link` as build() made it (or without the server's addresses), whatever a
    case left behind: deleted (with its client end) and created again."""
    in_ns(SERVER, "ip", "link", "del", link, check=False)
    make_link(link, server_addresses)


def reset_vpn(server_addresses=True):
    reset_link("vpn0", server_addresses)


# ---------------------------------------------------------------- probing

PROBE = r"""
import concurrent.futures, json, socket, sys
port, timeout = int(sys.argv[1]), float(sys.argv[2])
def attempt(host):
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return "open"
    except ConnectionRefusedError:
        return "refused"
    except OSError:
        return "unreach"
hosts = sys.argv[3:]
with concurrent.futures.ThreadPoolExecutor(len(hosts)) as pool:
    print(json.dumps(dict(zip(hosts, pool.map(attempt, hosts)))))
"""


def probe(client, hosts, port=PORT, timeout=1.0):
    out = in_ns(client, sys.executable, "-c", PROBE, str(port), str(timeout), *hosts).stdout
    return json.loads(out)


def parse_listeners(tcp4, tcp6, inodes=False):
    """(address, port) of every listening socket in /proc/net/tcp and tcp6 text
    (with the socket's inode as a third item when `inodes`)."""
    found = []
    for text, v6 in ((tcp4, False), (tcp6, True)):
        for line in text.splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":
                continue
            hexaddr, hexport = fields[1].split(":")
            raw = bytes.fromhex(hexaddr)
            # Printed as 32-bit words in host (little-endian) order.
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            entry = (socket.inet_ntop(socket.AF_INET6 if v6 else socket.AF_INET, raw), int(hexport, 16))
            found.append(entry + (int(fields[9]),) if inodes else entry)
    return found


def listening(ns):
    """(address, port) of every listening TCP socket in a namespace, from /proc."""
    return parse_listeners(in_ns(ns, "cat", "/proc/net/tcp").stdout, in_ns(ns, "cat", "/proc/net/tcp6").stdout)


# ---------------------------------------------------------------- directd


class Directd:
    """directd in the server namespace, its stderr in a file."""

    def __init__(self, directd, args, ns=SERVER, prefix=()):
        self.log = tempfile.NamedTemporaryFile("w+", prefix="directd-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, *prefix, directd, *args],
                                     stdout=subprocess.DEVNULL, stderr=self.log)

    def text(self):
        with open(self.log.name) as f:
            return f.read()

    def wait_serving(self, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            text = self.text()
            if "serving echo" in text:
                return True
            if self.proc.poll() is not None:
                return False
            time.sleep(0.05)
        return False

    def mark(self):
        """A position in the log: wait_for(since=mark) sees only what comes after."""
        return len(self.text())

    def wait_for(self, *needles, since=0, timeout=3):
        """The first log line after `since` containing one of `needles`, waiting
        at most `timeout` s; None if none came (or directd exited)."""
        deadline = time.time() + timeout
        while True:
            for line in self.text()[since:].splitlines():
                if any(needle in line for needle in needles):
                    return line
            if time.time() >= deadline or self.proc.poll() is not None:
                return None
            time.sleep(0.005)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        os.unlink(self.log.name)
        return self.proc.returncode


def run_directd(directd, args, ns=SERVER, prefix=(), timeout=20):
    return subprocess.run(["ip", "netns", "exec", ns, *prefix, directd, *args],
                          capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------- 14. rate limits per IPv6 prefix

# One echo round trip per source address, in order: true if served, false if
# closed at accept (directd's refusal).
ECHO_FROM = r"""
import json, socket, sys
port, host = int(sys.argv[1]), sys.argv[2]
def served(source):
    try:
        conn = socket.create_connection((host, port), timeout=2, source_address=(source, 0))
    except OSError:
        return False
    with conn:
        try:
            conn.sendall(b"x")
            return conn.recv(1) == b"x"
        except OSError:
            return False
print(json.dumps([served(source) for source in sys.argv[3:]]))
"""


def echo_from(client, host, sources, port=PORT):
    return json.loads(in_ns(client, sys.executable, "-c", ECHO_FROM, str(port), host, *sources).stdout)


def test_rate_limit_ipv6(directd):
    lan_sources = [f"2001:db8:1::{n:x}" for n in range(0xa1, 0xa7)]   # six addresses, one /64
    for source in lan_sources:
        in_ns(LAN, "ip", "-6", "addr", "add", f"{source}/64", "dev", "eth0", "nodad")
    try:
        for prefix, served_in_lan in (("64", 3), ("128", 18)):
            daemon = Directd(directd, ["--bind-interface", "2001:db8:1::1,2001:db8:2::1", "--port", str(PORT),
                                       "--rate-limit", "3/1h", "--rate-limit-ipv6-prefix", prefix])
            try:
                if not check(daemon.wait_serving(), f"rate-limit /{prefix}: directd serves", daemon.text()):
                    continue
                # Four rounds from each source: under /64 they share one bucket of 3.
                results = echo_from(LAN, "2001:db8:1::1", lan_sources * 4)
                check(sum(results) == served_in_lan,
                      f"rate-limit /{prefix}: {served_in_lan} of 24 served from six sources in one /64", str(results))
                if prefix == "64":
                    check(results[:3] == [True] * 3 and not any(results[3:]),
                          "/64: the first three served, every later one refused, whichever source", str(results))
                    check(daemon.wait_for("exceeded by 2001:db8:1::/64") is not None,
                          "/64: the refusal names the prefix", daemon.text())
                else:
                    per_source = [sum(results[i::len(lan_sources)]) for i in range(len(lan_sources))]
                    check(per_source == [3] * len(lan_sources), "/128: each address its own bucket of 3",
                          str(results))
                other = echo_from(VPN, "2001:db8:2::1", ["2001:db8:2::2"] * 4)
                check(other == [True, True, True, False], f"rate-limit /{prefix}: another /64 has its own bucket",
                      str(other))
            finally:
                daemon.stop()
    finally:
        for source in lan_sources:
            in_ns(LAN, "ip", "-6", "addr", "del", f"{source}/64", "dev", "eth0", check=False)


# ---------------------------------------------------------------- 1. the matrix

# Each bind value, and what it listens on: wildcards by family, and exact
# addresses, link-local ones with the interface that scopes them.
MATRIX_VALUES = [
    ("", {"any4", "any6"}),
    ("198.51.100.1", {"198.51.100.1"}),
    ("2001:db8:2::1", {"2001:db8:2::1"}),
    ("0.0.0.0", {"any4"}),
    ("::", {"any6"}),
    ("127.0.0.1", {"127.0.0.1"}),
    ("::1", {"::1"}),
    ("fe80::21%vpn0", {"fe80::21%vpn0"}),
    ("fe80::21", {"fe80::21%vpn0"}),  # held by vpn0 only: its zone is inferred
    ("lan0", {"198.51.100.1", "2001:db8:1::1", "fe80::11%lan0"}),
    ("vpn0", {"203.0.113.1", "2001:db8:2::1", "fe80::21%vpn0"}),
    ("198.51.100.1,2001:db8:2::1", {"198.51.100.1", "2001:db8:2::1"}),
]


def expected_cell(listens, client, host):
    """What a client should see, from how Linux routes (not from directd's code).

    A link-local address is reachable only on its own link; anything else is
    reachable from both clients through their default route (Linux accepts a
    packet for any local address on any interface: the weak host model), and
    then it answers if a listener covers that address, else it refuses.
    """
    link = CLIENT_LINK[client]
    if host.startswith("fe80::"):
        address = host.split("%")[0]
        server_link = "lan0" if address == "fe80::11" else "vpn0"
        if server_link != link:
            return "unreach"
        return "open" if "any6" in listens or f"{address}%{server_link}" in listens else "refused"
    family = "any6" if ":" in host else "any4"
    return "open" if family in listens or host in listens else "refused"


def test_matrix(directd):
    rows, mismatch = [], False
    for value, listens in MATRIX_VALUES:
        daemon = Directd(directd, ["--bind-interface", value, "--port", str(PORT)])
        started = daemon.wait_serving()
        check(started, f"directd starts with {value!r}", daemon.text())
        row = []
        for client in (LAN, VPN):
            seen = probe(client, [host for _, host in TARGETS]) if started else {}
            for label, host in TARGETS:
                want = expected_cell(listens, client, host)
                got = seen.get(host, "-")
                row.append((want, got))
                if not check(want == got, f"{value!r}: {client[-3:]} → {label} ({host}): want {want}, got {got}"):
                    mismatch = True
        daemon.stop()
        rows.append((value, row))
    if mismatch:
        print_matrix(rows)


def print_matrix(rows):
    """Cells are (want, got) or (want, got, without bind-to-device)."""
    heads = [f"{c[-3:]}→{label}" for c in (LAN, VPN) for label, _ in TARGETS]
    width = max(len(repr(v)) for v, _ in rows) + 2
    bound = any(len(cell) == 3 for _, row in rows for cell in row)
    print("\nreachability (want/got; * marks a difference" + ("; ! a cell that bind-to-device closes)" if bound else "):"),
          file=sys.stderr)
    print("value".ljust(width) + " ".join(h.ljust(17) for h in heads), file=sys.stderr)
    for value, row in rows:
        cells = [f"{cell[0]}/{cell[1]}" + ("" if cell[0] == cell[1] else "*")
                 + ("!" if len(cell) == 3 and cell[2] != cell[0] else "") for cell in row]
        print(repr(value).ljust(width) + " ".join(c.ljust(17) for c in cells), file=sys.stderr)


# ---------------------------------------------------------------- 2. fail closed

FAIL_CLOSED = [
    # Bad syntax: 78, the spec's words.
    ("999.999.999.999", 78, "Invalid bind interface address"),
    ("198.51.100", 78, "Invalid bind interface address"),
    ("198.051.100.1", 78, "leading zero"),
    ("198.51.100.1.5", 78, "Invalid bind interface address"),
    ("198.51.100.1x", 78, "Invalid bind interface address"),
    ("2001:db8:1::1::1", 78, "Invalid bind interface address"),
    ("2001:db8:1:::1", 78, "Invalid bind interface address"),
    ("12345::1", 78, "Invalid bind interface address"),
    ("[2001:db8:1::1", 78, "Invalid bind interface address"),
    ("198.51.100.1:7000", 78, "includes a port"),
    ("[2001:db8:1::1]:7000", 78, "includes a port"),
    ("lan0:7000", 78, "includes a port"),
    ("198.51.100.1,,203.0.113.1", 78, "empty element"),
    ("198.51.100.1,", 78, "empty element"),
    ("::ffff:0.0.0.0", 78, "IPv4-mapped form of 0.0.0.0"),
    ("2001:db8:1::1%lan0", 78, "applies only to link-local"),
    ("198.51.100.1%lan0", 78, "may only follow an IPv6 address"),
    # Names that are not interfaces here (host names are not resolved).
    ("localhost", 78, "Unknown interface \"localhost\""),
    ("eth0", 78, "Unknown interface \"eth0\""),
    ("lan1", 78, "Unknown interface \"lan1\""),
    ("198.51.100.1,wan0", 78, "Unknown interface \"wan0\""),
    # Zones that name no interface, and link-local addresses without one.
    ("fe80::11%eth9", 78, "Unknown zone"),
    ("fe80::11%99", 78, "Unknown zone"),
    # Well formed, but not this host's: the other hosts' addresses, others.
    ("198.51.100.2", 69, "not assigned to any interface"),
    ("203.0.113.2", 69, "not assigned to any interface"),
    ("2001:db8:1::2", 69, "not assigned to any interface"),
    ("2001:db8:2::2", 69, "not assigned to any interface"),
    ("fe80::12", 69, "not assigned to any interface"),
    ("fe80::11%vpn0", 69, "not assigned to any interface"),
    ("198.51.100.99", 69, "not assigned to any interface"),
    # One bad element rejects the whole list.
    ("198.51.100.1,203.0.113.2", 69, "not assigned to any interface"),
    ("lan0,999.1.1.1", 78, "Invalid bind interface address"),
    ("vpn0,fe80::11%eth9", 78, "Unknown zone"),
    # A bad port.
]


def ip_sockets_opened(trace):
    """socket() calls for IPv4 or IPv6 in an strace log."""
    return [line for line in trace.splitlines() if re.search(r"socket\(AF_INET6?,", line)]


def test_fail_closed(directd, strace):
    for value, code, message in FAIL_CLOSED + [("198.51.100.1", 78, "Invalid direct access port")]:
        port = "70000" if message.startswith("Invalid direct access port") else str(PORT)
        with tempfile.NamedTemporaryFile("r", suffix=".trace") as trace:
            prefix = (strace, "-f", "-qq", "-e", "trace=socket", "-o", trace.name) if strace else ()
            result = run_directd(directd, ["--bind-interface", value, "--port", port], prefix=prefix)
            check(result.returncode == code, f"{value!r} exits {code}, got {result.returncode}", result.stderr)
            check(message in result.stderr, f"{value!r} says {message!r}", result.stderr)
            if strace:
                opened = ip_sockets_opened(trace.read())
                check(not opened, f"{value!r} opens no IP socket", "\n".join(opened))
        check(listening(SERVER) == [], f"{value!r}: nothing listens on the server", str(listening(SERVER)))
    # The interface that was removed: it existed a moment ago, now it does not.
    in_ns(SERVER, "ip", "link", "add", "gone0", "type", "veth", "peer", "name", "gone1")
    in_ns(SERVER, "ip", "addr", "add", "198.51.100.77/32", "dev", "gone0")
    in_ns(SERVER, "ip", "link", "set", "gone1", "up")
    in_ns(SERVER, "ip", "link", "set", "gone0", "up")
    check(run_directd(directd, ["check", "--bind-interface", "gone0"]).returncode == 0, "gone0 resolves while it exists")
    in_ns(SERVER, "ip", "link", "del", "gone0")
    for value, message in (("gone0", "Unknown interface \"gone0\""), ("198.51.100.77", "not assigned to any interface")):
        result = run_directd(directd, ["--bind-interface", value, "--port", str(PORT)])
        check(result.returncode in (69, 78) and message in result.stderr,
              f"removed interface: {value!r} fails with {message!r}", result.stderr)
        check(listening(SERVER) == [], f"removed interface {value!r}: nothing listens")


# ---------------------------------------------------------------- 3-6.


def test_no_ipv4_through_ipv6(directd):
    for value, v4 in (("::", "refused"), ("", "open")):
        daemon = Directd(directd, ["--bind-interface", value, "--port", str(PORT)])
        check(daemon.wait_serving(), f"{value!r} starts", daemon.text())
        seen = probe(LAN, ["198.51.100.1", "203.0.113.1", "2001:db8:1::1"])
        check(seen["198.51.100.1"] == v4 and seen["203.0.113.1"] == v4,
              f"{value!r}: IPv4 {v4}", str(seen))
        check(seen["2001:db8:1::1"] == "open", f"{value!r}: IPv6 open", str(seen))
        daemon.stop()


def test_port_in_use(directd):
    # Something else holds 203.0.113.1:PORT; directd is asked for both addresses.
    blocker = subprocess.Popen(["ip", "netns", "exec", SERVER, sys.executable, "-c",
                                "import socket,time\n"
                                f"s=socket.socket(); s.bind(('203.0.113.1',{PORT})); s.listen(1)\n"
                                "print('ready', flush=True); time.sleep(60)"],
                               stdout=subprocess.PIPE, text=True)
    try:
        blocker.stdout.readline()
        result = run_directd(directd, ["--bind-interface", "198.51.100.1,203.0.113.1", "--port", str(PORT)])
        check(result.returncode == 69, f"port in use exits 69, got {result.returncode}", result.stderr)
        check("EADDRINUSE" in result.stderr and "203.0.113.1:7000" in result.stderr,
              "port in use names the address", result.stderr)
        check(listening(SERVER) == [("203.0.113.1", PORT)], "only the other program listens",
              str(listening(SERVER)))
        check(probe(LAN, ["198.51.100.1"])["198.51.100.1"] == "refused", "198.51.100.1 was closed again")
    finally:
        blocker.kill()
        blocker.wait()


def test_permission(directd):
    # A copy the unprivileged user can run; port 80 needs CAP_NET_BIND_SERVICE.
    with tempfile.TemporaryDirectory() as folder:
        os.chmod(folder, 0o755)
        copy = os.path.join(folder, "directd")
        sh("cp", directd, copy)
        os.chmod(copy, 0o755)
        result = run_directd(copy, ["--bind-interface", "198.51.100.1", "--port", "80"],
                             prefix=("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"))
        check(result.returncode == 77, f"port 80 unprivileged exits 77, got {result.returncode}", result.stderr)
        check("ports below 1024 need root or the CAP_NET_BIND_SERVICE capability" in result.stderr,
              "port 80 unprivileged says why", result.stderr)
        check(listening(SERVER) == [], "port 80 unprivileged: nothing listens")


def test_ipv6_disabled(directd):
    for key in ("all", "default", "lan0", "vpn0", "lo"):
        in_ns(SERVER, "sysctl", "-qw", f"net.ipv6.conf.{key}.disable_ipv6=1")
    try:
        daemon = Directd(directd, ["--port", str(PORT)])
        check(daemon.wait_serving(), "default starts without IPv6", daemon.text())
        check("IPv6 is not available on this host" in daemon.text(), "default warns about IPv6", daemon.text())
        check(listening(SERVER) == [("0.0.0.0", PORT)], "default listens on IPv4 only", str(listening(SERVER)))
        check(probe(LAN, ["198.51.100.1"])["198.51.100.1"] == "open", "IPv4 answers without IPv6")
        daemon.stop()
        for value in ("2001:db8:1::1", "::", "::1"):
            result = run_directd(directd, ["--bind-interface", value, "--port", str(PORT)])
            check(result.returncode == 69, f"{value!r} without IPv6 exits 69, got {result.returncode}", result.stderr)
            check("IPv6 is not available on this host" in result.stderr, f"{value!r} without IPv6 says so",
                  result.stderr)
    finally:
        for key in ("all", "default", "lan0", "vpn0", "lo"):
            in_ns(SERVER, "sysctl", "-qw", f"net.ipv6.conf.{key}.disable_ipv6=0", check=False)
        # Turning IPv6 off removed the links' IPv6 addresses: build them again.
        for link in LINKS:
            reset_link(link)


# ---------------------------------------------------------------- 7-13. following the network
#
# directd with --bind-dynamic Y while the server's vpn0 link and its addresses
# come and go. These helpers avoid spawning a process per probe, so that the
# timings measure directd, not `ip netns exec`:
# - threads that enter a namespace with setns(2) (it moves the calling thread
#   only); a socket created there stays in that namespace whatever thread uses it;
# - a process parked in the server namespace, whose /proc/PID/net/tcp{,6} show
#   that namespace's sockets.

CLONE_NEWNET = 0x40000000
LIBC = ctypes.CDLL("libc.so.6", use_errno=True)
NETLINK_ROUTE, RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR = 0, 0x10, 0x100
RTM_NEWADDR, IFA_ADDRESS, IFA_LOCAL = 20, 1, 2
# The server's vpn0 addresses, and how /proc prints them.
VPN_V4, VPN_V6, VPN_LL = "203.0.113.1", "2001:db8:2::1", "fe80::21"
VPN_V4_CLIENT = "203.0.113.2"
# Latencies from the kernel's address event to directd's listener, in seconds.
latencies = {"log": [], "connect": []}
anchor = None


def in_namespace(ns, body, wait=True):
    """Runs body() on a new thread inside network namespace `ns`. With `wait`,
    returns its result (or raises its exception) within 10 s; else returns the
    thread (its result in .result, its exception in .error after join)."""
    def run():
        try:
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
            try:
                if LIBC.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns into {ns} failed")
            finally:
                os.close(fd)
            thread.result = body()
        except BaseException as error:  # handed to the caller
            thread.error = error
    thread = threading.Thread(target=run, daemon=True)
    thread.result, thread.error = None, None
    thread.start()
    if not wait:
        return thread
    thread.join(10)
    if thread.is_alive():
        raise TimeoutError(f"a step in {ns} did not finish within 10 s")
    if thread.error:
        raise thread.error
    return thread.result


def ns_socket(ns, family=socket.AF_INET, kind=socket.SOCK_STREAM, proto=0):
    return in_namespace(ns, lambda: socket.socket(family, kind, proto))


def start_anchor():
    global anchor
    anchor = subprocess.Popen(["ip", "netns", "exec", SERVER, "sleep", "900"])


def stop_anchor():
    if anchor and anchor.poll() is None:
        anchor.kill()
        anchor.wait()


def server_listeners(inodes=False):
    """The server namespace's listening sockets, read through the parked process."""
    def read(name):
        with open(f"/proc/{anchor.pid}/net/{name}") as f:
            return f.read()
    return parse_listeners(read("tcp"), read("tcp6"), inodes)


def on_port():
    return sorted(address for address, port in server_listeners() if port == PORT)


def until(predicate, timeout, step=0.01):
    """Waits at most `timeout` s for predicate() to be true; returns its last value."""
    deadline = time.time() + timeout
    while True:
        value = predicate()
        if value or time.time() >= deadline:
            return value
        time.sleep(step)


def ip_server(*args, **kwargs):
    return in_ns(SERVER, "ip", *args, **kwargs)


def interface_index(name):
    return int(ip_server("-o", "link", "show", "dev", name).stdout.split(":")[0])


class Sampler:
    """Reads the server's /proc/net/tcp and tcp6 every 50 ms while a case runs,
    and keeps every listener on PORT that is a wildcard or not in `allowed`
    (addresses as /proc prints them: link-local ones without their zone)."""

    def __init__(self, case, allowed):
        self.case, self.allowed = case, set(allowed)
        self.bad, self.samples = [], 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.done.wait(0.05):
            try:
                seen = server_listeners()
            except OSError as error:  # the parked process is gone: say so, stop
                self.bad.append(f"cannot read the server's sockets: {error}")
                return
            self.samples += 1
            for address, port in seen:
                if port == PORT and (address in ("0.0.0.0", "::") or address not in self.allowed):
                    self.bad.append(f"{time.strftime('%H:%M:%S')} {address}:{port} (all: {seen})")

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.done.set()
        self.thread.join(2)
        check(self.samples > 0 and not self.bad,
              f"{self.case}: no wildcard or foreign listener on port {PORT} in {self.samples} samples",
              "\n".join(self.bad[:20]))
        return False


class EchoUpstream:
    """A tiny echo server on 127.0.0.1 in the server namespace: directd's --forward target."""

    def __init__(self):
        self.listener = ns_socket(SERVER)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.done = threading.Event()
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while not self.done.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                continue
            threading.Thread(target=self.echo, args=(conn,), daemon=True).start()

    def echo(self, conn):
        conn.settimeout(30)
        with conn:
            try:
                while data := conn.recv(4096):
                    conn.sendall(data)
            except OSError:
                pass

    def close(self):
        self.done.set()
        self.listener.close()


def dynamic_directd(directd, value, *extra):
    daemon = Directd(directd, ["--bind-dynamic", "Y", "--bind-interface", value, "--port", str(PORT), *extra])
    daemon.wait_for("serving echo", "relaying every connection")
    return daemon


def log_time(line):
    """The wall-clock time of a log line (`2026-11-25T11:32:14.123Z ...`)."""
    stamp = line.split(" ", 1)[0]
    return datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def address_events(data, family, packed):
    """How many RTM_NEWADDR messages in a netlink datagram carry `packed`."""
    count, offset = 0, 0
    while offset + 16 <= len(data):
        length, kind = struct.unpack_from("=IH", data, offset)
        if length < 16:
            break
        if kind == RTM_NEWADDR and data[offset + 16] == family:
            attr = offset + 16 + 8  # nlmsghdr, then ifaddrmsg
            while attr + 4 <= offset + length:
                size, atype = struct.unpack_from("=HH", data, attr)
                if size < 4:
                    break
                if atype in (IFA_ADDRESS, IFA_LOCAL) and data[attr + 4:attr + size] == packed:
                    count += 1
                    break
                attr += (size + 3) & ~3
        offset += (length + 3) & ~3
    return count


def measure_appearance(daemon, address, add):
    """Runs `add` (the ip command that assigns `address` on the server) and
    measures from the kernel's RTM_NEWADDR event (seen by a netlink socket in the
    server namespace) to directd's `listening on` log line and to the VPN
    client's first successful connect (it tries every few ms). Returns
    (log latency, connect latency) in seconds, None where nothing came in 3 s."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    packed = socket.inet_pton(family, address)
    shown = f"[{address}]:{PORT}" if family == socket.AF_INET6 else f"{address}:{PORT}"
    events = ns_socket(SERVER, socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
    events.bind((0, RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR))
    events.settimeout(0.05)
    seen, connected, done = [], [], threading.Event()

    def watch_events():
        while not done.is_set() and not seen:
            try:
                data = events.recv(65536)
            except OSError:
                continue
            if address_events(data, family, packed):
                seen.append(time.time())

    def connect_until_open():
        # Before the address exists the server drops the SYN (5 ms per try);
        # after it, until directd listens, it refuses at once.
        deadline = time.time() + 3
        while time.time() < deadline and not done.is_set():
            with socket.socket(family) as s:
                s.setblocking(False)
                error = s.connect_ex((address, PORT))
                if error == errno.EINPROGRESS:
                    _, writable, _ = select.select([], [s], [], 0.005)
                    error = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) if writable else errno.ETIMEDOUT
                if error == 0:
                    connected.append(time.time())
                    return
            time.sleep(0.001)

    mark = daemon.mark()
    watcher = threading.Thread(target=watch_events, daemon=True)
    watcher.start()
    prober = in_namespace(VPN, connect_until_open, wait=False)
    time.sleep(0.02)   # both are waiting before the address arrives
    add()
    line = daemon.wait_for(f"listening on {shown}", since=mark, timeout=3)
    prober.join(4)
    done.set()
    watcher.join(1)
    events.close()
    if not seen:
        return None, None
    return (log_time(line) - seen[0] if line else None), (connected[0] - seen[0] if connected else None)


def record_latency(case, address, measured):
    log, connect = measured
    ok = check(log is not None and connect is not None,
               f"{case}: {address} listened on and reached from the VPN client within 3 s of its address event")
    if ok:
        latencies["log"].append(log)
        latencies["connect"].append(connect)
    return ok


def vpn_probe(hosts, timeout=0.5):
    return probe(VPN, hosts, timeout=timeout)


def case_vpn_appears(directd, upstream):
    """7 and 8: vpn0 absent at start; it appears, gets addresses, loses and regains them."""
    in_ns(SERVER, "ip", "link", "del", "vpn0", check=False)
    result = run_directd(directd, ["check", "--bind-dynamic", "Y", "--bind-interface", "vpn0", "--port", str(PORT)])
    check(result.returncode == 0 and "waiting for vpn0" in result.stdout,
          "check with bind-dynamic and vpn0 absent: exit 0, prints `waiting for vpn0`", result.stdout + result.stderr)
    with Sampler("vpn0 comes and goes", {VPN_V4, VPN_V6}):
        daemon = dynamic_directd(directd, "vpn0", "--forward", f"127.0.0.1:{upstream.port}")
        try:
            time.sleep(0.3)
            check(daemon.proc.poll() is None and "waiting for vpn0" in daemon.text() and on_port() == [],
                  "vpn0 absent: directd runs, listens on nothing, logs `waiting for vpn0`", daemon.text())
            make_link("vpn0", server_addresses=False)
            time.sleep(0.3)
            check(daemon.proc.poll() is None and on_port() == [],
                  "vpn0 without addresses: still nothing listens", str(on_port()))
            for round in range(4):
                for address, add in (
                        (VPN_V4, lambda: ip_server("addr", "add", f"{VPN_V4}/24", "dev", "vpn0")),
                        (VPN_V6, lambda: ip_server("-6", "addr", "add", f"{VPN_V6}/64", "dev", "vpn0", "nodad"))):
                    record_latency(f"round {round + 1}", address, measure_appearance(daemon, address, add))
                check(on_port() == sorted([VPN_V4, VPN_V6]), f"round {round + 1}: listening on both addresses",
                      str(on_port()))
                if round == 3:
                    break
                mark = daemon.mark()
                ip_server("addr", "del", f"{VPN_V4}/24", "dev", "vpn0")
                ip_server("-6", "addr", "del", f"{VPN_V6}/64", "dev", "vpn0")
                gone = daemon.wait_for(f"stopped listening on {VPN_V4}:{PORT} (address removed)", since=mark) \
                    and daemon.wait_for(f"stopped listening on [{VPN_V6}]:{PORT} (address removed)", since=mark)
                check(bool(gone) and until(lambda: on_port() == [], 1),
                      f"round {round + 1}: addresses removed, listeners gone, logged", daemon.text()[-2000:])
            case_open_connection_survives(daemon)
        finally:
            check(daemon.proc.poll() is None, "vpn0 cases: directd still running", daemon.text()[-2000:])
            daemon.stop()


def case_open_connection_survives(daemon):
    """8: a relayed connection survives its listener's address leaving and returning."""
    conn = ns_socket(VPN)
    conn.settimeout(5)
    try:
        conn.connect((VPN_V4, PORT))
        conn.sendall(b"before")
        check(recv_exactly(conn, 6) == b"before", "relayed connection carries data")
        v6_before = [entry for entry in server_listeners(inodes=True) if entry[:2] == (VPN_V6, PORT)]
        mark = daemon.mark()
        ip_server("addr", "del", f"{VPN_V4}/24", "dev", "vpn0")
        line = daemon.wait_for(f"stopped listening on {VPN_V4}:{PORT} (address removed)", since=mark)
        check(bool(line) and until(lambda: VPN_V4 not in on_port(), 1),
              "address removed: its listener is gone from /proc/net/tcp", str(on_port()))
        v6_after = [entry for entry in server_listeners(inodes=True) if entry[:2] == (VPN_V6, PORT)]
        check(v6_before and v6_before == v6_after, "the other address's listener is the same socket (inode)",
              f"{v6_before} -> {v6_after}")
        check(vpn_probe([VPN_V4])[VPN_V4] != "open", "address removed: a new connection does not get through")
        # Sent while the address is gone: TCP retransmits it once the address is back.
        conn.sendall(b"during")
        time.sleep(0.2)
        mark = daemon.mark()
        ip_server("addr", "add", f"{VPN_V4}/24", "dev", "vpn0")
        check(bool(daemon.wait_for(f"listening on {VPN_V4}:{PORT}", since=mark)) and VPN_V4 in on_port(),
              "address re-added: listening again", daemon.text()[-2000:])
        check(recv_exactly(conn, 6) == b"during", "the open relayed connection carries data after the address returns")
        conn.sendall(b"after")
        check(recv_exactly(conn, 5) == b"after", "and goes on carrying data")
        opened = re.search(rf"#(\d+) opened from {re.escape(VPN_V4_CLIENT)}:{conn.getsockname()[1]} ", daemon.text())
        check(bool(opened) and f"#{opened.group(1)} closed" not in daemon.text(),
              "directd did not close the open connection", daemon.text()[-2000:])
        check(vpn_probe([VPN_V4])[VPN_V4] == "open", "address re-added: a new connection gets through")
    finally:
        conn.close()


def recv_exactly(conn, count):
    data = b""
    try:
        while len(data) < count:
            chunk = conn.recv(count - len(data))
            if not chunk:
                break
            data += chunk
    except OSError as error:
        return repr(error).encode()
    return data


def case_interface_recreated(directd):
    """9: a link-local element with a zone follows vpn0 deleted and created again."""
    reset_vpn()
    with Sampler("fe80::21%vpn0 follows vpn0", {VPN_LL}):
        daemon = dynamic_directd(directd, f"{VPN_LL}%vpn0")
        shown = f"[{VPN_LL}%vpn0]:{PORT}"
        try:
            check(bool(daemon.wait_for(f"listening on {shown}")), "fe80::21%vpn0: listening", daemon.text())
            for round in range(2):
                old = interface_index("vpn0")
                mark = daemon.mark()
                ip_server("link", "del", "vpn0")
                line = daemon.wait_for(f"stopped listening on {shown}", since=mark)
                check(bool(line) and until(lambda: on_port() == [], 1),
                      f"vpn0 deleted ({round + 1}): listener gone, logged", daemon.text()[-2000:])
                mark = daemon.mark()
                make_link("vpn0")
                new = interface_index("vpn0")
                check(new != old, f"vpn0 created again with a new index ({old} -> {new})")
                listening_again = daemon.wait_for(f"listening on {shown}", since=mark)
                bound = in_ns(SERVER, "ss", "-Hltn", f"sport = :{PORT}").stdout
                check(bool(listening_again) and on_port() == [VPN_LL] and f"%vpn0:{PORT}" in bound,
                      f"vpn0 created again ({round + 1}): listening on fe80::21 scoped to the new vpn0",
                      daemon.text()[-2000:] + bound)
                check(vpn_probe([f"{VPN_LL}%eth0"])[f"{VPN_LL}%eth0"] == "open",
                      f"vpn0 created again ({round + 1}): the VPN client connects to fe80::21")
            check(daemon.proc.poll() is None, "fe80::21%vpn0: directd still running")
        finally:
            daemon.stop()


def case_address_assigned_later(directd):
    """10: an explicit address not assigned yet is listened on once it is."""
    reset_vpn(server_addresses=False)
    result = run_directd(directd, ["check", "--bind-dynamic", "Y", "--bind-interface", VPN_V4, "--port", str(PORT)])
    check(result.returncode == 0 and f"waiting for {VPN_V4}" in result.stdout,
          f"check with bind-dynamic: {VPN_V4} not assigned: exit 0, `waiting for {VPN_V4}`", result.stdout + result.stderr)
    with Sampler(f"{VPN_V4} assigned later", {VPN_V4}):
        daemon = dynamic_directd(directd, VPN_V4)
        try:
            time.sleep(0.2)
            check(daemon.proc.poll() is None and f"waiting for {VPN_V4}" in daemon.text() and on_port() == [],
                  f"{VPN_V4} not assigned: directd runs, listens on nothing, says it waits", daemon.text())
            # Another address on the same link changes nothing.
            ip_server("addr", "add", "203.0.113.9/24", "dev", "vpn0")
            time.sleep(0.2)
            check(on_port() == [], "another address on vpn0: still nothing listens", str(on_port()))
            record_latency(f"{VPN_V4} assigned later", VPN_V4, measure_appearance(
                daemon, VPN_V4, lambda: ip_server("addr", "add", f"{VPN_V4}/24", "dev", "vpn0")))
            check(on_port() == [VPN_V4], f"{VPN_V4} assigned: listening on it only", str(on_port()))
        finally:
            daemon.stop()


def case_duplicate_address_detection(directd):
    """11: an IPv6 address under DAD is bound only once DAD has finished."""
    reset_vpn(server_addresses=False)
    for key, value in (("net.ipv6.conf.vpn0.accept_dad", 1), ("net.ipv6.conf.vpn0.dad_transmits", 3),
                       ("net.ipv6.conf.vpn0.router_solicitation_delay", 0),
                       ("net.ipv6.neigh.vpn0.retrans_time_ms", 400)):
        in_ns(SERVER, "sysctl", "-qw", f"{key}={value}")
    with Sampler(f"{VPN_V6} under DAD", {VPN_V6}):
        daemon = dynamic_directd(directd, VPN_V6)
        try:
            before = len(daemon.text().splitlines())
            added = time.time()
            ip_server("-6", "addr", "add", f"{VPN_V6}/64", "dev", "vpn0")
            tentative_seen, early, bound_at, usable_at = 0, [], None, None
            deadline = time.time() + 5
            while time.time() < deadline and bound_at is None:
                # /proc first: the flag only ever clears, so a listener seen
                # before a tentative flag was bound while tentative.
                listening_now = VPN_V6 in on_port()
                flags = ip_server("-6", "addr", "show", "dev", "vpn0").stdout
                tentative = "tentative" in flags
                tentative_seen += tentative
                if listening_now:
                    bound_at = time.time()
                    if tentative:
                        early.append(flags)
                elif not tentative and usable_at is None:
                    usable_at = time.time()
                time.sleep(0.01)
            check(tentative_seen >= 5, f"{VPN_V6} was tentative for a while ({tentative_seen} samples)")
            check(bound_at is not None and not early, f"{VPN_V6}: listened on only after DAD finished",
                  "".join(early) + daemon.text())
            lines = daemon.text().splitlines()[before:]
            noisy = [line for line in lines if "error" in line or "warning" in line or "not listening" in line]
            check(len(lines) <= 3 and not noisy, f"{VPN_V6} under DAD: no error storm in the log ({len(lines)} lines)",
                  "\n".join(lines))
            if bound_at is not None and usable_at is not None:
                print(f"netns: DAD: tentative for {usable_at - added:.2f} s, listened on "
                      f"{(bound_at - usable_at) * 1000:.0f} ms after (polling every ~20 ms); logged meanwhile: "
                      + " | ".join(line.split(" ", 1)[1] for line in lines))
            check(vpn_probe([VPN_V6])[VPN_V6] == "open", f"{VPN_V6} after DAD: the VPN client connects")
        finally:
            daemon.stop()


def descriptors(pid):
    """directd's open descriptors: (sockets, /dev/null reserves, others). It keeps
    one /dev/null reserve per listener, for accepting when out of descriptors."""
    sockets = reserves = others = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:"):
            sockets += 1
        elif target == "/dev/null":
            reserves += 1
        else:
            others += 1
    return sockets, reserves, others


def case_rapid_changes(directd):
    """12: bursts of 1,000 address changes leave exactly the right listeners."""
    reset_vpn()
    value = f"{VPN_V4},{VPN_V6}"
    commands = {VPN_V4: (f"address add {VPN_V4}/24 dev vpn0", f"address del {VPN_V4}/24 dev vpn0"),
                VPN_V6: (f"address add {VPN_V6}/64 dev vpn0 nodad", f"address del {VPN_V6}/64 dev vpn0")}
    with Sampler("1,000 rapid changes", {VPN_V4, VPN_V6}):
        daemon = dynamic_directd(directd, value)
        try:
            pid = daemon.proc.pid
            until(lambda: on_port() == sorted([VPN_V4, VPN_V6]), 2)
            sockets, reserves, others = descriptors(pid)
            present = {VPN_V4: True, VPN_V6: True}
            # Toggles per batch: (IPv4, IPv6), and whether directd is stopped
            # (SIGSTOP) meanwhile: then the kernel's events overflow its netlink
            # socket (ENOBUFS), and it must read everything again.
            for number, (v4_toggles, v6_toggles, frozen) in enumerate(
                    ((500, 500, False), (501, 499, False), (501, 500, False), (501, 499, True)), 1):
                order = [VPN_V4] * v4_toggles + [VPN_V6] * v6_toggles
                order[::2], order[1::2] = order[:len(order[::2])], order[len(order[::2]):]  # interleave
                lines = []
                for address in order:
                    lines.append(commands[address][1 if present[address] else 0])
                    present[address] = not present[address]
                with tempfile.NamedTemporaryFile("w", suffix=".batch") as batch:
                    batch.write("\n".join(lines) + "\n")
                    batch.flush()
                    mark = daemon.mark()
                    if frozen:
                        daemon.proc.send_signal(signal.SIGSTOP)
                    started = time.time()
                    try:
                        result = ip_server("-force", "-batch", batch.name, check=False)
                    finally:
                        took = time.time() - started
                        if frozen:
                            daemon.proc.send_signal(signal.SIGCONT)
                check(result.returncode == 0, f"batch {number}: {len(lines)} changes applied in {took:.2f} s",
                      result.stderr[-1000:])
                if frozen:
                    check(bool(daemon.wait_for("netlink ENOBUFS", since=mark)),
                          f"batch {number}, directd stopped meanwhile: the overflow is logged", daemon.text()[-2000:])
                want = sorted(address for address, here in present.items() if here)
                settled = until(lambda: on_port() == want, 3)
                time.sleep(0.3)  # and it stays so
                check(settled and on_port() == want, f"batch {number}: listening exactly on {want or 'nothing'}",
                      f"{on_port()}\n{daemon.text()[-2000:]}")
                now = descriptors(pid)
                missing = 2 - len(want)
                check(daemon.proc.poll() is None and now == (sockets - missing, reserves - missing, others),
                      f"batch {number}: directd runs, no leaked descriptor (sockets, reserves, others: {now})",
                      f"with both listeners: {(sockets, reserves, others)}; {missing} listeners closed since")
                reached = vpn_probe([VPN_V4, VPN_V6])
                check(all((reached[a] == "open") == present[a] for a in present),
                      f"batch {number}: the VPN client reaches exactly the present addresses", str(reached))
            resyncs = daemon.text().count("netlink ENOBUFS")
            print(f"netns: 4,002 rapid changes: {resyncs} netlink overflows (full resync), "
                  f"{daemon.text().count('listening on')} listener opens logged")
        finally:
            daemon.stop()


def expected_cell_bound(listens, client, host):
    """With bind-to-device: as without, except that a packet for an address that
    arrives on another link than the address's own is refused."""
    cell = expected_cell(listens, client, host)
    if cell == "open" and not host.startswith("fe80::"):
        own_link = "lan0" if host in ("198.51.100.1", "2001:db8:1::1") else "vpn0"
        if own_link != CLIENT_LINK[client]:
            return "refused"
    return cell


# What the kernel does with the host's own connection to a LAN address when the
# listener is bound to the interface holding that address (measured here).
HOST_OWN_WITH_DEVICE = "open"


def test_bind_to_device(directd):
    """13: the reachability matrix with --bind-to-device Y, the host's own
    connections, and the values it refuses."""
    rows, closed = [], 0
    for value, listens in MATRIX_VALUES:
        if value in ("", "0.0.0.0", "::"):
            continue
        daemon = Directd(directd, ["--bind-interface", value, "--bind-to-device", "Y", "--port", str(PORT)])
        started = daemon.wait_serving()
        check(started, f"bind-to-device: directd starts with {value!r}", daemon.text())
        row = []
        for client in (LAN, VPN):
            seen = probe(client, [host for _, host in TARGETS]) if started else {}
            for label, host in TARGETS:
                want = expected_cell_bound(listens, client, host)
                was = expected_cell(listens, client, host)
                closed += want != was
                got = seen.get(host, "-")
                row.append((want, got, was))
                check(want == got, f"bind-to-device {value!r}: {client[-3:]} → {label} ({host}): want {want}, got {got}")
        daemon.stop()
        rows.append((value, row))
    print(f"netns: bind-to-device closes {closed} cross-link cells; the rest as without it:", file=sys.stderr)
    print_matrix(rows)
    # The host's own connection to its LAN address comes in through lo.
    own = {}
    for value, target in (("198.51.100.1", "198.51.100.1"), ("lan0", "198.51.100.1"),
                          ("2001:db8:1::1", "2001:db8:1::1")):
        for device in ("N", "Y"):
            daemon = Directd(directd, ["--bind-interface", value, "--bind-to-device", device, "--port", str(PORT)])
            if daemon.wait_serving():
                own[(value, device)] = probe(SERVER, [target])[target]
            daemon.stop()
    print("netns: the host's own connection to its LAN address: " + ", ".join(
        f"{value} bind-to-device {device}: {seen}" for (value, device), seen in own.items()))
    check(all(own.get((value, "N")) == "open" for value, _ in own), "host's own connection without bind-to-device: open",
          str(own))
    check(all(own.get((value, "Y")) == HOST_OWN_WITH_DEVICE for value, _ in own),
          f"host's own connection with bind-to-device: {HOST_OWN_WITH_DEVICE} (as the README says)", str(own))
    for value in ("", "0.0.0.0", "::"):
        for extra in ((), ("--bind-dynamic", "Y")):
            result = run_directd(directd, ["--bind-interface", value, "--bind-to-device", "Y", *extra, "--port", str(PORT)])
            check(result.returncode == 78 and "bind-to-device has no interface to bind it to" in result.stderr,
                  f"bind-to-device with {value!r}{' and bind-dynamic' if extra else ''}: exit 78, says why",
                  f"exit {result.returncode}: {result.stderr}")
    check(listening(SERVER) == [], "bind-to-device refusals: nothing listens")


def case_dynamic_bound_to_device(directd):
    """bind-dynamic with bind-to-device: vpn0's listeners are bound to vpn0 as
    it comes, and to the new vpn0 after it is created again."""
    in_ns(SERVER, "ip", "link", "del", "vpn0", check=False)
    with Sampler("bind-dynamic with bind-to-device", {VPN_V4, VPN_V6, VPN_LL}):
        daemon = dynamic_directd(directd, "vpn0", "--bind-to-device", "Y")
        try:
            for round in range(2):
                mark = daemon.mark()
                make_link("vpn0")
                listened = all(daemon.wait_for(f"listening on {shown}", since=mark)
                               for shown in (f"{VPN_V4}:{PORT}", f"[{VPN_V6}]:{PORT}", f"[{VPN_LL}%vpn0]:{PORT}"))
                bound = in_ns(SERVER, "ss", "-Hltn", f"sport = :{PORT}").stdout
                check(listened and bound.count(f"%vpn0:{PORT}") == 3,
                      f"bind-dynamic with bind-to-device ({round + 1}): vpn0's three listeners bound to vpn0",
                      bound + daemon.text()[-2000:])
                from_vpn, from_lan = vpn_probe([VPN_V4, VPN_V6]), probe(LAN, [VPN_V4, VPN_V6], timeout=0.5)
                check(set(from_vpn.values()) == {"open"} and set(from_lan.values()) == {"refused"},
                      f"bind-dynamic with bind-to-device ({round + 1}): open from vpn0's link, refused from lan0's",
                      f"vpn: {from_vpn}, lan: {from_lan}")
                mark = daemon.mark()
                ip_server("link", "del", "vpn0")
                check(bool(daemon.wait_for("interface removed", since=mark)) and until(lambda: on_port() == [], 1),
                      f"bind-dynamic with bind-to-device ({round + 1}): vpn0 deleted, its listeners closed",
                      daemon.text()[-2000:])
            check(daemon.proc.poll() is None, "bind-dynamic with bind-to-device: directd still running")
        finally:
            daemon.stop()


def case_device_renamed(directd):
    """bind-to-device follows the name: vpn0 renamed away (vpn9) and another
    interface holding the same address renamed to vpn0, in one burst. The
    kernel's SO_BINDTODEVICE keeps an index, so a listener left as it was would
    now serve vpn9, which the value does not name."""
    reset_vpn()
    ip_server("link", "add", "vpnx", "type", "veth", "peer", "name", "vpny")
    for dev in ("vpnx", "vpny"):
        ip_server("link", "set", "dev", dev, "addrgenmode", "none")
    ip_server("addr", "add", f"{VPN_V4}/24", "dev", "vpnx")
    ip_server("link", "set", "vpny", "up")
    ip_server("link", "set", "vpnx", "up")
    with Sampler("bind-to-device after a rename", {VPN_V4, VPN_V6, VPN_LL}):
        daemon = dynamic_directd(directd, "vpn0", "--bind-to-device", "Y")
        try:
            until(lambda: len(on_port()) == 3, 2)
            before = in_ns(SERVER, "ss", "-Hltn", f"sport = :{PORT}").stdout
            check(before.count(f"%vpn0:{PORT}") == 3 and vpn_probe([VPN_V4])[VPN_V4] == "open",
                  "before the rename: vpn0's listeners bound to vpn0, reached from its link", before)
            with tempfile.NamedTemporaryFile("w", suffix=".batch") as batch:
                batch.write("link set vpn0 down\nlink set vpn0 name vpn9\nlink set vpn9 up\n"
                            "link set vpnx down\nlink set vpnx name vpn0\nlink set vpn0 up\n")
                batch.flush()
                ip_server("-batch", batch.name)
            until(lambda: in_ns(SERVER, "ss", "-Hltn", f"sport = :{PORT}").stdout.count("%vpn9") == 0
                  and on_port() == [VPN_V4], 2)
            time.sleep(0.2)
            after = in_ns(SERVER, "ss", "-Hltn", f"sport = :{PORT}").stdout
            check(on_port() == [VPN_V4] and after.count(f"{VPN_V4}%vpn0:{PORT}") == 1 and "%vpn9" not in after,
                  "after the rename: listening on 203.0.113.1 bound to the new vpn0 only", after + daemon.text()[-1500:])
            seen = vpn_probe([VPN_V4])[VPN_V4]
            check(seen == "refused", f"after the rename: the client on vpn9's link is refused, got {seen}")
            check(daemon.proc.poll() is None, "after the rename: directd still running")
        finally:
            daemon.stop()
            for dev in ("vpn9", "vpny"):
                ip_server("link", "del", dev, check=False)


def test_following(directd):
    upstream = EchoUpstream()
    try:
        for case in (lambda: case_vpn_appears(directd, upstream), lambda: case_interface_recreated(directd),
                     lambda: case_address_assigned_later(directd), lambda: case_duplicate_address_detection(directd),
                     lambda: case_rapid_changes(directd), lambda: case_dynamic_bound_to_device(directd),
                     lambda: case_device_renamed(directd)):
            try:
                case()
            except Exception as error:
                import traceback
                check(False, f"following case raised {error!r}", traceback.format_exc())
        if latencies["log"]:
            for what, values in latencies.items():
                print(f"netns: address event → {'listening log line' if what == 'log' else 'first connect'}: "
                      f"median {statistics.median(values) * 1000:.1f} ms, max {max(values) * 1000:.1f} ms "
                      f"({len(values)} samples)")
            check(statistics.median(latencies["connect"]) <= 0.1,
                  "an address is reached within 100 ms of its event (median)", str(latencies))
            check(max(latencies["connect"]) <= 0.5, "and within 500 ms always (loaded machine)", str(latencies))
    finally:
        upstream.close()
        reset_vpn()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--directd", required=True)
    parser.add_argument("--only", action="append", help="run only this test (by function name; repeatable)")
    args = parser.parse_args()
    directd = os.path.abspath(args.directd)
    if os.geteuid() != 0:
        print("netns: skipped: needs root to create network namespaces")
        return 0
    strace = sh("sh", "-c", "command -v strace", check=False).stdout.strip() or None
    if not strace:
        print("netns: strace not found: the no-socket checks use /proc only", file=sys.stderr)

    sweep_stale()
    atexit.register(teardown)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda *_: sys.exit(130))
    started = time.time()
    build()
    start_anchor()
    fail_closed = lambda d: test_fail_closed(d, strace)  # noqa: E731
    fail_closed.__name__ = "test_fail_closed"
    tests = [test_matrix, test_no_ipv4_through_ipv6, test_port_in_use, test_permission,
             fail_closed, test_ipv6_disabled, test_bind_to_device, test_following, test_rate_limit_ipv6]
    if args.only:
        tests = [test for test in tests if test.__name__ in args.only]
    for test in tests:
        try:
            test(directd)
        except Exception as error:  # a broken step fails the suite, and the rest still runs
            import traceback
            check(False, f"{getattr(test, '__name__', 'test')} raised {error!r}", traceback.format_exc())
    teardown()
    left = [n for n in namespaces() if n.startswith(RUN)]
    check(not left, "no namespace left behind", str(left))
    print(f"netns: {passed} passed, {failed} failed ({time.time() - started:.0f} s)")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
