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
6. an unprivileged user asking for port 80: the permission message, exit 77.

Needs root. Namespaces are named per run (uvb<pid>-...), removed on exit even
after a failure or a signal, and stale ones from killed runs are swept first.
Ends with "netns: N passed, M failed".
"""
import argparse
import atexit
import concurrent.futures
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
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
    for name in (SERVER, LAN, VPN):
        sh("ip", "netns", "del", name, check=False)


def build():
    for name in (SERVER, LAN, VPN):
        sh("ip", "netns", "add", name)
        in_ns(name, "ip", "link", "set", "lo", "up")
    for link, client, iface, v4, v6, ll, cv4, cv6, cll in (
        ("lan0", LAN, "l", "198.51.100.1", "2001:db8:1::1", "fe80::11", "198.51.100.2", "2001:db8:1::2", "fe80::12"),
        ("vpn0", VPN, "v", "203.0.113.1", "2001:db8:2::1", "fe80::21", "203.0.113.2", "2001:db8:2::2", "fe80::22"),
    ):
        a, b = f"{RUN}{iface}a"[-15:], f"{RUN}{iface}b"[-15:]
        sh("ip", "link", "add", a, "type", "veth", "peer", "name", b)
        sh("ip", "link", "set", a, "netns", SERVER, "name", link)
        sh("ip", "link", "set", b, "netns", client, "name", "eth0")
        for ns, dev, addr4, addr6, addrll, prefix in (
            (SERVER, link, v4, v6, ll, 24), (client, "eth0", cv4, cv6, cll, 24)):
            # Fixed link-local addresses instead of ones derived from random MACs.
            in_ns(ns, "ip", "link", "set", "dev", dev, "addrgenmode", "none")
            in_ns(ns, "ip", "addr", "add", f"{addr4}/{prefix}", "dev", dev)
            in_ns(ns, "ip", "-6", "addr", "add", f"{addr6}/64", "dev", dev, "nodad")
            in_ns(ns, "ip", "-6", "addr", "add", f"{addrll}/64", "dev", dev, "nodad")
            in_ns(ns, "ip", "link", "set", "dev", dev, "up")
        in_ns(client, "ip", "route", "add", "default", "via", v4)
        in_ns(client, "ip", "-6", "route", "add", "default", "via", v6)


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


def listening(ns):
    """(address, port) of every listening TCP socket in a namespace, from /proc."""
    found = []
    for path, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        text = in_ns(ns, "cat", path).stdout
        for line in text.splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":
                continue
            hexaddr, hexport = fields[1].split(":")
            raw = bytes.fromhex(hexaddr)
            # Printed as 32-bit words in host (little-endian) order.
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            found.append((socket.inet_ntop(socket.AF_INET6 if v6 else socket.AF_INET, raw), int(hexport, 16)))
    return found


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
    heads = [f"{c[-3:]}→{label}" for c in (LAN, VPN) for label, _ in TARGETS]
    width = max(len(repr(v)) for v, _ in rows) + 2
    print("\nreachability (want/got; * marks a difference):", file=sys.stderr)
    print("value".ljust(width) + " ".join(h.ljust(17) for h in heads), file=sys.stderr)
    for value, row in rows:
        cells = [f"{w}/{g}" + ("" if w == g else "*") for w, g in row]
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


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--directd", required=True)
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
    tests = [test_matrix, test_no_ipv4_through_ipv6, test_port_in_use, test_permission,
             lambda d: test_fail_closed(d, strace), test_ipv6_disabled]
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
