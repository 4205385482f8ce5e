#!/usr/bin/env python3
"""make bench: directd against the C baseline and the relays operators use today.

Everything runs on this machine over loopback (127.0.0.1), each process started
here and stopped here. Scenarios run every system in turn (A B C A B C ...) for
several rounds, and report medians with min-max, as ratios measured in this run:

1. relay throughput (iperf3 through each relay; "direct" is iperf3 alone; directd
   in each relay mode; haproxy twice, copying and splicing),
   single stream, reverse, 4 streams, with the relay's CPU time per GB;
2. relay latency (sockperf ping-pong, 64-byte messages, full round trip);
3. echo round trips per second: directd's echo against the C echo, unpinned and
   pinned (server on one CPU, load on the other);
4. connection churn through each relay: the relay's CPU seconds per 10,000;
5. resident memory of each relay holding 10,000 idle relayed connections;
6. directd with metrics on (metrics-listen, scraped once a second as Prometheus
   would) against metrics off, in the same rounds: throughput, CPU per GB and
   ping-pong p50; and the time of one scrape while 10,000 relayed connections
   are open.

Writes results/bench-TIMESTAMP.csv (raw numbers) and results/bench.png.
QUICK=1 runs each scenario once and briefly: the test suite uses it.
"""
import argparse
import csv
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOST = "127.0.0.1"
# Listening ports stay below Linux's ephemeral range (32768-60999), so that no
# outgoing connection of an earlier scenario can hold one.
# directd runs three times: relay-mode auto (the default: small messages
# copied, bulk spliced), splice and copy.
# haproxy-splice is haproxy with `option splice-request` and `option
# splice-response` (splice-auto did not splice here), at most 4000 connections.
RELAYS = ["directd-auto", "directd-splice", "directd-copy", "c-baseline", "socat", "nginx", "haproxy", "haproxy-splice"]
OURS = "directd-auto"
HAPROXY_SPLICE_MAXCONN = 4000


# The most idle sessions a scenario holds (memory, metrics, upgrade).
IDLE_MAX = 10_000
# Descriptors wanted per process: directd relaying IDLE_MAX sessions holds two
# each (the new process of an upgrade as many), more than a common hard limit
# of 20,000; loadgen and the upstream hold one each. 65536 leaves room.
NOFILE_WANTED = 65536


def raise_nofile():
    """Raises this process's RLIMIT_NOFILE (soft and hard; every process the
    bench starts inherits it) to NOFILE_WANTED, at most fs.nr_open, when it is
    lower: that needs CAP_SYS_RESOURCE (root has it, but a container's root
    may not). Returns the hard limit, and why it is lower than wanted (None
    when it is not)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        return 1 << 20, None
    try:
        with open("/proc/sys/fs/nr_open") as f:
            wanted = min(NOFILE_WANTED, int(f.read()))
    except (OSError, ValueError):
        wanted = NOFILE_WANTED
    if hard >= wanted:
        return hard, None
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
    except (OSError, ValueError) as error:
        return hard, f"raising it to {wanted} failed ({error}: needs CAP_SYS_RESOURCE)"
    return wanted, None


# Descriptors a process may have: the hard limit, raised first when allowed.
NOFILE, NOFILE_SHORT = raise_nofile()
# nginx's worker_connections and haproxy's maxconn are sized for the most the
# bench holds, not for NOFILE: nginx allocates and touches a connection and two
# events per worker_connection at start, which a raised limit would add to its
# RSS in the memory scenario (18 MiB idle here, 37 MiB with 65,436). Below
# 2 * IDLE_MAX + 200 this is NOFILE, as before.
PEER_NOFILE = min(NOFILE, 2 * IDLE_MAX + 200)


class Settings:
    def __init__(self, quick):
        self.quick = quick
        self.rounds = 1 if quick else 5
        self.seconds = 1 if quick else 3
        self.churn = 1000 if quick else 10_000
        # A relay holds two descriptors per relayed connection.
        self.idle = 1000 if quick else min(IDLE_MAX, (NOFILE - 200) // 2)
        self.echo_connections = 8


# ------------------------------------------------------------------ processes


def cpu_seconds(pid):
    """User + system CPU of a process and its reaped children (socat forks)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def tree(pid):
    """A process and all its descendants."""
    pids, queue = [], [pid]
    while queue:
        current = queue.pop()
        pids.append(current)
        try:
            with open(f"/proc/{current}/task/{current}/children") as f:
                queue += [int(p) for p in f.read().split()]
        except OSError:
            pass
    return pids


def tree_cpu(pid):
    total = 0.0
    for p in tree(pid):
        try:
            total += cpu_seconds(p)
        except OSError:
            pass
    return total


def tree_rss(pid):
    """Resident memory of a process tree, in bytes (Rss from smaps_rollup)."""
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Rss:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def listening(port):
    """Whether a TCP socket listens on 127.0.0.1:port, from /proc: no connection is
    made, so no server under test counts (or trips over) a probe."""
    wanted = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as f:
        return any(line.split()[1] == wanted and line.split()[3] == "0A" for line in f.readlines()[1:])


def wait_port(port, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if listening(port):
            return True
        time.sleep(0.02)
    return False


class Proc:
    """A background process of this run; stopped for sure by stop() or at exit."""
    live = []

    def __init__(self, args, port=None, nofile=None, cpu=None, cwd=None, listen_timeout=10):
        self.args = limited(args, nofile, cpu)
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     cwd=cwd, start_new_session=True)
        Proc.live.append(self)
        if port is not None and not wait_port(port, listen_timeout):
            self.stop()
            raise RuntimeError(f"{' '.join(args)} did not listen on {port}: {self.stderr()}")

    @property
    def pid(self):
        return self.proc.pid

    def stderr(self):
        if self.proc.poll() is None:
            return ""
        return (self.proc.stderr.read() or b"").decode(errors="replace")[-2000:]

    def stop(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(10)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait()
        if self in Proc.live:
            Proc.live.remove(self)

    @classmethod
    def stop_all(cls):
        for proc in list(cls.live):
            proc.stop()


def limited(args, nofile=None, cpu=None):
    """`args` run with a descriptor limit and pinned to a CPU, when asked."""
    prefix = []
    if nofile:
        prefix += ["prlimit", f"--nofile={nofile}:{nofile}", "--"]
    if cpu is not None:
        prefix += ["taskset", "-c", str(cpu)]
    return prefix + args


def run(args, timeout, cpu=None, nofile=None):
    result = subprocess.run(limited(args, nofile, cpu), capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}): {result.stderr[-2000:]}")
    return result.stdout


# ------------------------------------------------------------------ the systems


class Bench:
    def __init__(self, settings, directd, bindir, workdir):
        self.settings = settings
        self.directd = directd
        self.uvbase = os.path.join(bindir, "uvbase")
        self.loadgen = os.path.join(bindir, "loadgen")
        self.work = workdir
        self.rows = []  # (scenario, variant, system, round, metric, value)
        self.failures = []

    def record(self, scenario, variant, system, round_, metric, value):
        self.rows.append((scenario, variant, system, round_, metric, value))

    def attempt(self, what, measure):
        """Runs one measurement; a failure is reported, not fatal, and the
        processes it started are stopped."""
        started = len(Proc.live)
        try:
            measure()
        except Exception as error:  # noqa: BLE001 - every failure is reported at the end
            self.failures.append(f"{what}: {error}")
            print(f"bench: FAILED {what}: {error}", file=sys.stderr, flush=True)
        finally:
            for proc in Proc.live[started:]:
                proc.stop()

    def start_relay(self, name, listen, upstream, nofile=NOFILE, extra=()):
        if name.startswith("directd-"):
            args = [self.directd, "--bind-interface", HOST, "--port", str(listen),
                    "--forward", f"{HOST}:{upstream}", "--log-level", "warning", "--max-connections", "100000",
                    "--relay-mode", name.removeprefix("directd-")] + list(extra)
        elif name == "c-baseline":
            args = [self.uvbase, HOST, str(listen), HOST, str(upstream)]
        elif name == "socat":
            args = ["socat", f"TCP-LISTEN:{listen},bind={HOST},fork,reuseaddr,nodelay,backlog=511",
                    f"TCP:{HOST}:{upstream},nodelay"]
        elif name == "nginx":
            folder = os.path.join(self.work, f"nginx-{listen}")
            os.makedirs(folder, exist_ok=True)
            conf = os.path.join(folder, "nginx.conf")
            with open(conf, "w") as f:
                f.write(f"""load_module /usr/lib/nginx/modules/ngx_stream_module.so;
daemon off;
worker_processes 1;
worker_rlimit_nofile {PEER_NOFILE};
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
events {{ worker_connections {PEER_NOFILE - 100}; }}
stream {{
    server {{
        listen {HOST}:{listen} backlog=511;
        proxy_pass {HOST}:{upstream};
        tcp_nodelay on;
        proxy_buffer_size 64k;
        proxy_timeout 1h;
    }}
}}
""")
            args = ["nginx", "-p", folder, "-e", f"{folder}/error.log", "-c", conf]
        elif name in ("haproxy", "haproxy-splice"):
            splice = name == "haproxy-splice"
            maxconn = min((PEER_NOFILE - 100) // 2, HAPROXY_SPLICE_MAXCONN) if splice else (PEER_NOFILE - 100) // 2
            conf = os.path.join(self.work, f"{name}-{listen}.cfg")
            with open(conf, "w") as f:
                f.write(f"""global
    nbthread 1
    maxconn {maxconn}
defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
{"    option splice-request" + chr(10) + "    option splice-response" if splice else ""}
frontend relay
    bind {HOST}:{listen}
    default_backend upstream
backend upstream
    server upstream {HOST}:{upstream}
""")
            args = ["haproxy", "-db", "-f", conf]
        else:
            raise ValueError(name)
        return Proc(args, port=listen, nofile=nofile)

    def echo_server(self, name, port, binary=None):
        """The command line of directd's echo or the C baseline's, on `port`."""
        if name == "directd":
            return [binary or self.directd, "--bind-interface", HOST, "--port", str(port), "--log-level", "warning"]
        return [self.uvbase, HOST, str(port)]

    def without_debug_info(self):
        """A copy of directd without DWARF: valgrind 3.19 could not read the DWARF 5 of
        the C++ that TOMLKit linked in. It reads directd's own since TOMLKit left; the
        copy stays, as instruction counts need no debug information."""
        stripped = os.path.join(self.work, "directd-stripped")
        if not os.path.exists(stripped):
            subprocess.run(["objcopy", "--strip-debug", self.directd, stripped], check=True)
        return stripped

    # ---------------------------------------------------------- 1. throughput

    def throughput(self):
        s = self.settings
        modes = [("single", []), ("reverse", ["-R"]), ("4 streams", ["-P", "4"])]
        for r in range(s.rounds):
            for mode, flags in modes:
                for name in ["direct"] + RELAYS:
                    def measure(mode=mode, flags=flags, name=name):
                        # A fresh iperf3 server each time: no state left from the last test.
                        Proc(["iperf3", "-s", "-B", HOST, "-p", "24101"], port=24101)
                        relay = None if name == "direct" else self.start_relay(name, 24102, 24101)
                        port = 24101 if relay is None else 24102
                        self.record_iperf("throughput", mode, name, r, port, flags, relay)
                    self.attempt(f"throughput {mode} through {name}, round {r + 1}", measure)

    def record_iperf(self, scenario, variant, name, r, port, flags=(), relay=None):
        """One iperf3 run to `port`: Gbit/s, and the relay's CPU seconds per GB."""
        s = self.settings
        before = tree_cpu(relay.pid) if relay else 0
        out = run(["iperf3", "-c", HOST, "-p", str(port), "-t", str(s.seconds), "-J"] + list(flags),
                  timeout=s.seconds + 30)
        report_ = json.loads(out)
        if "error" in report_ or "sum_received" not in report_.get("end", {}):
            raise RuntimeError(f"iperf3: {report_.get('error', 'no result')}")
        result = report_["end"]["sum_received"]
        self.record(scenario, variant, name, r, "gbit_per_s", result["bits_per_second"] / 1e9)
        if relay:
            cpu = tree_cpu(relay.pid) - before
            self.record(scenario, variant, name, r, "cpu_s_per_gb", cpu / (result["bytes"] / 1e9))

    def record_pingpong(self, scenario, name, r, port):
        """One sockperf ping-pong (64 bytes, full round trip) to `port`: p50 and p99."""
        s = self.settings
        out = run(["sockperf", "ping-pong", "--tcp", "-i", HOST, "-p", str(port), "-m", "64",
                   "-t", str(s.seconds), "--full-rtt"], timeout=s.seconds + 30)
        for pct, metric in (("50.000", "p50_us"), ("99.000", "p99_us")):
            match = re.search(rf"percentile {re.escape(pct)} =\s*([\d.]+)", out)
            if not match:
                raise RuntimeError(f"sockperf printed no {pct} percentile:\n{out[-1500:]}")
            self.record(scenario, "64 B ping-pong", name, r, metric, float(match.group(1)))

    # ---------------------------------------------------------- 2. latency

    def latency(self):
        s = self.settings
        for r in range(s.rounds):
            for name in ["direct"] + RELAYS:
                def measure(name=name):
                    Proc(["sockperf", "server", "--tcp", "-i", HOST, "-p", "24111"], port=24111)
                    relay = None if name == "direct" else self.start_relay(name, 24112, 24111)
                    port = 24111 if relay is None else 24112
                    self.record_pingpong("latency", name, r, port)
                self.attempt(f"latency through {name}, round {r + 1}", measure)

    # ---------------------------------------------------------- 3. echo

    def echo(self):
        s = self.settings
        for r in range(s.rounds):
            for variant, server_cpu, load_cpu in (("unpinned", None, None), ("pinned", 1, 0)):
                for name in ("directd", "c-baseline"):
                    def measure(variant=variant, server_cpu=server_cpu, load_cpu=load_cpu, name=name):
                        server = Proc(self.echo_server(name, 24121), port=24121, cpu=server_cpu)
                        before = tree_cpu(server.pid)
                        out = run([self.loadgen, "pingpong", HOST, "24121", str(s.echo_connections),
                                   str(s.seconds), "64"], timeout=s.seconds + 30, cpu=load_cpu)
                        cpu = tree_cpu(server.pid) - before
                        rate = float(re.search(r"roundtrips_per_second (\d+)", out).group(1))
                        self.record("echo", variant, name, r, "roundtrips_per_s", rate)
                        self.record("echo", variant, name, r, "cpu_us_per_roundtrip", cpu / (rate * s.seconds) * 1e6)
                    self.attempt(f"echo {variant} {name}, round {r + 1}", measure)

    def instructions(self):
        """User-space instructions per echo round trip, counted by callgrind: the
        CPU cost without the noise of timing. Each server runs twice under
        callgrind, once with no traffic; the difference over the round trips
        made is the cost of one."""
        s = self.settings
        seconds = 1 if s.quick else 3
        for name in ("directd", "c-baseline"):
            def measure(name=name):
                counts = []
                for traffic in (False, True):
                    out_file = os.path.join(self.work, f"callgrind-{name}-{traffic}")
                    server = Proc(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}"]
                                  + self.echo_server(name, 24151, self.without_debug_info()), port=24151,
                                  listen_timeout=60)   # valgrind starts slowly on a busy machine
                    roundtrips = 0
                    if traffic:
                        out = run([self.loadgen, "pingpong", HOST, "24151", "1", str(seconds), "64"],
                                  timeout=seconds + 60)
                        roundtrips = float(re.search(r"roundtrips_per_second (\d+)", out).group(1)) * seconds
                    server.stop()
                    with open(out_file) as f:
                        total = int(re.search(r"^(?:\S+Z )?summary: (\d+)", f.read(), re.M).group(1))
                    counts.append((total, roundtrips))
                (idle, _), (busy, roundtrips) = counts
                self.record("instructions", "echo round trip", name, 0, "instructions", (busy - idle) / roundtrips)
            self.attempt(f"callgrind echo {name}", measure)

    # ---------------------------------------------------------- 4. churn

    def churn(self):
        s = self.settings
        variant = f"{s.churn} connections"
        upstream = Proc([self.uvbase, HOST, "24131"], port=24131, nofile=NOFILE)
        try:
            for r in range(s.rounds):
                for name in RELAYS:
                    def measure(name=name):
                        relay = self.start_relay(name, 24132, 24131)
                        before = tree_cpu(relay.pid)
                        out = run([self.loadgen, "churn", HOST, "24132", str(s.churn), "16"], timeout=300,
                                  nofile=NOFILE)
                        time.sleep(0.3)  # socat's children exit and are reaped
                        cpu = tree_cpu(relay.pid) - before
                        match = re.search(r"connections_per_second (\d+) failed (\d+)", out)
                        self.record("churn", variant, name, r, "connections_per_s", float(match.group(1)))
                        self.record("churn", variant, name, r, "failed", float(match.group(2)))
                        self.record("churn", variant, name, r, "cpu_s_per_10k", cpu * 10_000 / s.churn)
                    self.attempt(f"churn through {name}, round {r + 1}", measure)
                    time.sleep(0.5)
        finally:
            upstream.stop()

    # ---------------------------------------------------------- 5. memory

    def memory(self):
        s = self.settings
        variant = f"{s.idle} idle"
        upstream = Proc([self.uvbase, HOST, "24141"], port=24141, nofile=NOFILE)
        # socat forks a process per connection: 10,000 processes are not a
        # measurement this machine should be put through. haproxy-splice holds
        # at most 4000 connections.
        relays = [name for name in RELAYS if name not in ("socat", "haproxy-splice")]
        try:
            for r in range(s.rounds):
                for name in relays:
                    def measure(name=name):
                        relay = self.start_relay(name, 24142, 24141)
                        idle = tree_rss(relay.pid)
                        holder = self.hold(24142, relay, 60)
                        try:
                            time.sleep(0.5)
                            rss = tree_rss(relay.pid)
                            self.record("memory", variant, name, r, "held", float(s.idle))
                            self.record("memory", variant, name, r, "rss_mib", rss / 2**20)
                            self.record("memory", variant, name, r, "bytes_per_connection", (rss - idle) / s.idle)
                        finally:
                            holder.send_signal(signal.SIGTERM)
                            holder.wait(20)
                    self.attempt(f"memory through {name}, round {r + 1}", measure)
                    time.sleep(0.5)
        finally:
            upstream.stop()

    def hold(self, port, relay, seconds):
        """loadgen holding `idle` connections to `port`, returned once all are open."""
        s = self.settings
        holder = subprocess.Popen(limited([self.loadgen, "hold", HOST, str(port), str(s.idle), str(seconds)], NOFILE),
                                  stdout=subprocess.PIPE, text=True)
        line = holder.stdout.readline()
        match = re.match(r"held (\d+) failed (\d+) pending (\d+)", line)
        if not match or int(match.group(1)) != s.idle:
            holder.send_signal(signal.SIGTERM)
            holder.wait(20)
            raise RuntimeError(f"loadgen hold: {line.strip()!r} {relay.stderr()}")
        return holder

    # ---------------------------------------------------------- 6. metrics

    METRICS_PORT = 24169

    def metrics(self):
        """directd-auto with metrics off and on, interleaved in each round. "On"
        serves metrics-listen and is scraped once a second, as a Prometheus would."""
        s = self.settings
        for r in range(s.rounds):
            for variant in ("off", "on"):
                name = f"metrics-{variant}"
                extra = ["--metrics-listen", f"{HOST}:{self.METRICS_PORT}"] if variant == "on" else []

                def throughput(name=name, extra=extra, variant=variant):
                    Proc(["iperf3", "-s", "-B", HOST, "-p", "24161"], port=24161)
                    relay = self.start_relay("directd-auto", 24162, 24161, extra=extra)
                    with Scraper(self.METRICS_PORT, enabled=variant == "on"):
                        self.record_iperf("metrics", "single", name, r, 24162, relay=relay)

                def latency(name=name, extra=extra, variant=variant):
                    Proc(["sockperf", "server", "--tcp", "-i", HOST, "-p", "24163"], port=24163)
                    self.start_relay("directd-auto", 24164, 24163, extra=extra)
                    with Scraper(self.METRICS_PORT, enabled=variant == "on"):
                        self.record_pingpong("metrics", name, r, 24164)
                self.attempt(f"metrics {variant} throughput, round {r + 1}", throughput)
                self.attempt(f"metrics {variant} latency, round {r + 1}", latency)
        self.attempt("scrape with open connections", self.scrape_cost)

    def scrape_cost(self):
        """The time of one scrape (HTTP GET to the last byte, from this Python
        client) and directd's CPU time per scrape, with `idle` relayed
        connections open."""
        s = self.settings
        variant = f"{s.idle} open"
        scrapes = 20 if s.quick else 200
        Proc([self.uvbase, HOST, "24165"], port=24165, nofile=NOFILE)
        relay = self.start_relay("directd-auto", 24166, 24165, extra=["--metrics-listen", f"{HOST}:{self.METRICS_PORT}"])
        holder = self.hold(24166, relay, 120)
        try:
            page = scrape(self.METRICS_PORT)
            if f"directd_connections_open{{listener=\"{HOST}:24166\"}} {s.idle}\n" not in page:
                raise RuntimeError("the scrape does not show the open connections")
            before = tree_cpu(relay.pid)
            times = []
            for _ in range(scrapes):
                start = time.perf_counter()
                scrape(self.METRICS_PORT)
                times.append((time.perf_counter() - start) * 1000)
            cpu = tree_cpu(relay.pid) - before
            for t in times:
                self.record("scrape", variant, "directd-auto", 0, "ms_per_scrape", t)
            self.record("scrape", variant, "directd-auto", 0, "cpu_ms_per_scrape", cpu * 1000 / scrapes)
        finally:
            holder.send_signal(signal.SIGTERM)
            holder.wait(20)

    # ---------------------------------------------------------- 7. upgrade pause

    def upgrade(self):
        """The pause a session sees during an in-place upgrade (SIGUSR2): the
        longest gap between two echoes of a 64-byte ping-pong kept going on
        each probe session, around the upgrade, with `idle` held sessions and
        with 100 busy ones; against the same probes' longest gap over a window
        of the same length with no upgrade, in the same run."""
        s = self.settings
        # 1,000 idle, and as many as the descriptor limit allows up to IDLE_MAX (the memory scenario's).
        # When the limit holds fewer relayed sessions (two sockets each), IDLE_MAX echoed ones (one
        # socket each) still fit: that variant moves IDLE_MAX sessions, if not twice the sockets.
        variants = [("1000 idle", 1000, 4, False)] + ([(f"{s.idle} idle", s.idle, 4, False)] if s.idle > 1000 else []) \
            + ([(f"{IDLE_MAX} idle echo", IDLE_MAX, 4, True)] if 1000 < s.idle < IDLE_MAX else []) \
            + [("100 busy", 0, 100, False)]
        for r in range(s.rounds):
            for variant, idle, probes, echo in variants:
                def measure(variant=variant, idle=idle, probes=probes, echo=echo):
                    pid_file = os.path.join(self.work, "upgrade.pid")
                    options = ["--pid-file", pid_file, "--grace", "120"]
                    if echo:
                        relay = Proc([self.directd, "--bind-interface", HOST, "--port", "24172", "--log-level", "warning",
                                      "--max-connections", "100000"] + options, port=24172, nofile=NOFILE)
                    else:
                        Proc([self.uvbase, HOST, "24171"], port=24171, nofile=NOFILE)
                        relay = self.start_relay("directd-auto", 24172, 24171, extra=options)
                    holder = self.hold_count(24172, relay, idle, 120) if idle else None
                    try:
                        pinger = PingPong(24172, probes)
                        with pinger:
                            quiet = pinger.window(1.0 if s.quick else 2.0)
                            old = relay.pid
                            os.kill(old, signal.SIGUSR2)
                            upgraded = pinger.window(1.0 if s.quick else 2.0, until=lambda: read_pid(pid_file) not in (None, old))
                        new = read_pid(pid_file)
                        if new in (None, old):
                            raise RuntimeError(f"no upgrade within the window: {relay.stderr()}")
                        if pinger.failed:
                            raise RuntimeError(f"{pinger.failed} probe session(s) lost a byte or were cut")
                        for gap in quiet:
                            self.record("upgrade", variant, "no upgrade", r, "longest_gap_ms", gap)
                        for gap in upgraded:
                            self.record("upgrade", variant, "upgrade", r, "longest_gap_ms", gap)
                    finally:
                        if holder:
                            holder.send_signal(signal.SIGTERM)
                            holder.wait(20)
                        # The new process is not the child that Proc stops.
                        stop_pid(read_pid(pid_file))
                self.attempt(f"upgrade pause, {variant}, round {r + 1}", measure)

    def hold_count(self, port, relay, count, seconds):
        """As `hold`, for `count` connections."""
        holder = subprocess.Popen(limited([self.loadgen, "hold", HOST, str(port), str(count), str(seconds)], NOFILE),
                                  stdout=subprocess.PIPE, text=True)
        line = holder.stdout.readline()
        match = re.match(r"held (\d+) failed (\d+) pending (\d+)", line)
        if not match or int(match.group(1)) != count:
            holder.send_signal(signal.SIGTERM)
            holder.wait(20)
            raise RuntimeError(f"loadgen hold: {line.strip()!r} {relay.stderr()}")
        return holder


def stop_pid(pid):
    """SIGTERM, then SIGKILL after 10 s, to a process that is not our child."""
    if not pid:
        return
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
            time.sleep(0.05)


def read_pid(path):
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


class PingPong:
    """`count` sessions to `port`, each keeping one 64-byte message in flight
    (a counter, so a lost, repeated or reordered byte shows), on one thread."""

    def __init__(self, port, count):
        self.port = port
        self.count = count
        self.failed = 0

    def __enter__(self):
        import selectors
        self.selector = selectors.DefaultSelector()
        self.sockets = []
        for index in range(self.count):
            sock = socket_connect(self.port)
            sock.setblocking(False)
            state = {"sent": 0, "got": b"", "last": time.monotonic(), "gap": 0.0}
            self.sockets.append((sock, state))
            self.selector.register(sock, 1, (sock, state))
            self.send(sock, state)
        return self

    def __exit__(self, *_):
        for sock, _ in self.sockets:
            self.selector.unregister(sock)
            sock.close()
        self.selector.close()

    @staticmethod
    def message(n):
        return n.to_bytes(8, "big") * 8

    def send(self, sock, state):
        state["sent"] += 1
        sock.send(self.message(state["sent"]))   # 64 bytes: always fits an empty buffer

    def window(self, seconds, until=None):
        """Runs for at least `seconds` (and until `until()` holds, at most 30 s
        more); returns each session's longest gap in milliseconds."""
        for _, state in self.sockets:
            state["gap"] = 0.0
            state["last"] = time.monotonic()
        start = time.monotonic()
        while True:
            now = time.monotonic()
            if now - start >= seconds and (until is None or until()):
                break
            if now - start > seconds + 30:
                break
            for key, _ in self.selector.select(0.05):
                sock, state = key.data
                try:
                    chunk = sock.recv(64 - len(state["got"]))
                except BlockingIOError:
                    continue
                except OSError:
                    chunk = b""
                if not chunk:
                    self.failed += 1
                    self.selector.unregister(sock)
                    continue
                state["got"] += chunk
                if len(state["got"]) == 64:
                    if state["got"] != self.message(state["sent"]):
                        self.failed += 1
                    state["got"] = b""
                    now = time.monotonic()
                    state["gap"] = max(state["gap"], now - state["last"])
                    state["last"] = now
                    self.send(sock, state)
        end = time.monotonic()
        return [max(state["gap"], end - state["last"]) * 1000 for _, state in self.sockets]


def socket_connect(port):
    import socket
    sock = socket.create_connection((HOST, port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def scrape(port):
    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=10) as response:
        return response.read().decode()


class Scraper:
    """Scrapes /metrics once a second in a thread while in use, as Prometheus would."""

    def __init__(self, port, enabled=True):
        self.port, self.enabled = port, enabled
        self.done = threading.Event()
        self.failures = 0

    def run(self):
        while not self.done.wait(1):
            try:
                scrape(self.port)
            except OSError:
                self.failures += 1

    def __enter__(self):
        if self.enabled:
            scrape(self.port)   # up before the measurement starts
            self.thread = threading.Thread(target=self.run, daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *_):
        if self.enabled:
            self.done.set()
            self.thread.join(5)
            if self.failures:
                raise RuntimeError(f"{self.failures} scrapes failed during the measurement")


# ------------------------------------------------------------------ reporting


def values(rows, scenario, variant, system, metric):
    return [v for (sc, va, sy, _, m, v) in rows if (sc, va, sy, m) == (scenario, variant, system, metric)]


def summary(vals):
    if not vals:
        return None
    return statistics.median(vals), min(vals), max(vals)


def fmt(stat, digits=2):
    if stat is None:
        return "-"
    median, low, high = stat
    if low == high:
        return f"{median:.{digits}f}"
    return f"{median:.{digits}f} [{low:.{digits}f}-{high:.{digits}f}]"


def ratio(a, b):
    if a is None or b is None or b[0] == 0:
        return "-"
    return f"{a[0] / b[0]:.2f}"


def table(title, header, lines):
    widths = [max(len(str(x)) for x in column) for column in zip(header, *lines)]
    print(f"\n{title}")
    print("  " + "  ".join(str(h).ljust(w) for h, w in zip(header, widths)))
    for line in lines:
        print("  " + "  ".join(str(x).ljust(w) for x, w in zip(line, widths)))


def report(rows, settings):
    systems = ["direct"] + RELAYS
    for mode in ("single", "reverse", "4 streams"):
        direct = summary(values(rows, "throughput", mode, "direct", "gbit_per_s"))
        ours = summary(values(rows, "throughput", mode, OURS, "gbit_per_s"))
        lines = []
        for name in systems:
            stat = summary(values(rows, "throughput", mode, name, "gbit_per_s"))
            cpu = summary(values(rows, "throughput", mode, name, "cpu_s_per_gb"))
            lines.append([name, fmt(stat), ratio(stat, direct), ratio(ours, stat), fmt(cpu, 3)])
        table(f"1. relay throughput, {mode} (Gbit/s, median [min-max])",
              ["system", "Gbit/s", "/ direct", f"{OURS} / it", "relay CPU s per GB"], lines)

    direct = {m: summary(values(rows, "latency", "64 B ping-pong", "direct", m)) for m in ("p50_us", "p99_us")}
    ours = {m: summary(values(rows, "latency", "64 B ping-pong", OURS, m)) for m in ("p50_us", "p99_us")}
    lines = []
    for name in systems:
        p50 = summary(values(rows, "latency", "64 B ping-pong", name, "p50_us"))
        p99 = summary(values(rows, "latency", "64 B ping-pong", name, "p99_us"))
        added = f"{p50[0] - direct['p50_us'][0]:.1f}" if p50 and direct["p50_us"] else "-"
        lines.append([name, fmt(p50, 1), fmt(p99, 1), added, ratio(ours["p50_us"], p50), ratio(ours["p99_us"], p99)])
    table("2. relay latency, 64-byte ping-pong round trip (microseconds)",
          ["system", "p50", "p99", "p50 added over direct", f"{OURS} / it p50", f"{OURS} / it p99"], lines)

    lines = []
    for variant in ("unpinned", "pinned"):
        ours = summary(values(rows, "echo", variant, "directd", "roundtrips_per_s"))
        base = summary(values(rows, "echo", variant, "c-baseline", "roundtrips_per_s"))
        for name, stat in (("directd", ours), ("c-baseline", base)):
            cpu = summary(values(rows, "echo", variant, name, "cpu_us_per_roundtrip"))
            lines.append([variant, name, fmt(stat, 0), fmt(cpu, 2), ratio(stat, base)])
    table(f"3. echo round trips per second ({settings.echo_connections} connections, 64 bytes)",
          ["cpus", "server", "round trips/s", "server CPU us per round trip", "/ c-baseline"], lines)
    base = summary(values(rows, "instructions", "echo round trip", "c-baseline", "instructions"))
    lines = []
    for name in ("directd", "c-baseline"):
        stat = summary(values(rows, "instructions", "echo round trip", name, "instructions"))
        lines.append([name, fmt(stat, 0), ratio(base, stat)])
    table("3b. user-space instructions per echo round trip (callgrind; repeatable, no timing noise)",
          ["server", "instructions", "c-baseline / it (speed ratio)"], lines)

    variant = f"{settings.churn} connections"
    ours = summary(values(rows, "churn", variant, OURS, "cpu_s_per_10k"))
    lines = []
    for name in RELAYS:
        cpu = summary(values(rows, "churn", variant, name, "cpu_s_per_10k"))
        rate = summary(values(rows, "churn", variant, name, "connections_per_s"))
        failed = sum(values(rows, "churn", variant, name, "failed"))
        lines.append([name, fmt(cpu, 3), fmt(rate, 0), int(failed), ratio(ours, cpu)])
    table(f"4. connection churn through each relay ({settings.churn} connections, 16 at a time)",
          ["relay", "relay CPU s per 10,000", "connections/s", "failed", f"{OURS} / it"], lines)

    variant = f"{settings.idle} idle"
    ours = summary(values(rows, "memory", variant, OURS, "rss_mib"))
    lines = []
    for name in RELAYS:
        rss = summary(values(rows, "memory", variant, name, "rss_mib"))
        per = summary(values(rows, "memory", variant, name, "bytes_per_connection"))
        held = values(rows, "memory", variant, name, "held")
        lines.append([name, fmt(rss, 1), fmt(per, 0), int(min(held)) if held else "-", ratio(ours, rss)])
    table(f"5. resident memory holding {settings.idle} idle relayed connections (MiB)",
          ["relay", "RSS MiB", "bytes per connection", "held", f"{OURS} / it"], lines)
    print("   socat: not measured (one process per connection); haproxy-splice: not measured (maxconn 4000).")

    off = {m: summary(values(rows, "metrics", v, "metrics-off", m))
           for v, m in (("single", "gbit_per_s"), ("single", "cpu_s_per_gb"), ("64 B ping-pong", "p50_us"))}
    lines = []
    for name in ("metrics-off", "metrics-on"):
        gbit = summary(values(rows, "metrics", "single", name, "gbit_per_s"))
        cpu = summary(values(rows, "metrics", "single", name, "cpu_s_per_gb"))
        p50 = summary(values(rows, "metrics", "64 B ping-pong", name, "p50_us"))
        lines.append([name, fmt(gbit), ratio(gbit, off["gbit_per_s"]), fmt(cpu, 3), ratio(cpu, off["cpu_s_per_gb"]),
                      fmt(p50, 1), ratio(p50, off["p50_us"])])
    table("6. directd-auto with metrics off and on (on: scraped once a second), same rounds",
          ["directd", "Gbit/s", "/ off", "CPU s per GB", "/ off", "p50 us", "/ off"], lines)
    variant = f"{settings.idle} open"
    wall = summary(values(rows, "scrape", variant, "directd-auto", "ms_per_scrape"))
    cpu = summary(values(rows, "scrape", variant, "directd-auto", "cpu_ms_per_scrape"))
    table(f"6b. one scrape with {settings.idle} relayed connections open (milliseconds)",
          ["directd", "GET to last byte (client)", "directd CPU per scrape"], [["directd-auto", fmt(wall, 3), fmt(cpu, 3)]])

    lines = []
    for variant in sorted({va for (sc, va, *_rest) in rows if sc == "upgrade"}, key=lambda v: (v.endswith("busy"), len(v), v)):
        quiet = summary(values(rows, "upgrade", variant, "no upgrade", "longest_gap_ms"))
        pause = summary(values(rows, "upgrade", variant, "upgrade", "longest_gap_ms"))
        lines.append([variant, fmt(quiet, 2), fmt(pause, 2), ratio(pause, quiet)])
    table("7. the longest gap a session's ping-pong sees, over a window with and without an in-place upgrade "
          "(ms, median [min-max] over the probe sessions)",
          ["sessions", "no upgrade", "upgrade", "upgrade / no upgrade"], lines)


def write_csv(rows, path, machine):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["scenario", "variant", "system", "round", "metric", "value", "machine"])
        for row in rows:
            writer.writerow(list(row) + [machine])


def chart(rows, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("chart: matplotlib is not installed; no chart drawn", file=sys.stderr)
        return False
    systems = ["direct"] + RELAYS
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    modes = ("single", "reverse", "4 streams")
    width = 0.8 / len(systems)
    for i, name in enumerate(systems):
        medians = [(summary(values(rows, "throughput", m, name, "gbit_per_s")) or (0, 0, 0))[0] for m in modes]
        left.bar([x + i * width for x in range(len(modes))], medians, width, label=name)
    left.set_xticks([x + width * (len(systems) - 1) / 2 for x in range(len(modes))], modes)
    left.set_ylabel("Gbit/s (median)")
    left.set_title("Relay throughput (iperf3, loopback)")
    left.legend(fontsize=8)
    for j, metric in enumerate(("p50_us", "p99_us")):
        medians = [(summary(values(rows, "latency", "64 B ping-pong", n, metric)) or (0, 0, 0))[0] for n in systems]
        right.bar([x + j * 0.4 for x in range(len(systems))], medians, 0.4, label=metric.replace("_us", ""))
    right.set_xticks([x + 0.2 for x in range(len(systems))], systems, fontsize=8)
    right.set_ylabel("round trip, microseconds (median)")
    right.set_title("Relay latency (sockperf ping-pong, 64 B)")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


# ------------------------------------------------------------------ main


def machine_description():
    model = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) / 2**20
    return f"{os.cpu_count()} x {model}, {mem:.0f} GiB, Linux {os.uname().release}"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--directd", required=True)
    parser.add_argument("--bin", required=True, help="folder with uvbase and loadgen")
    parser.add_argument("--results", default=os.path.join(ROOT, "results"))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", help="comma-separated scenarios to run")
    args = parser.parse_args()
    settings = Settings(args.quick)
    for tool in ("iperf3", "sockperf", "socat", "nginx", "haproxy", "prlimit", "taskset", "valgrind"):
        if not shutil.which(tool):
            sys.exit(f"bench: {tool} is missing (make bench installs it)")
    os.makedirs(args.results, exist_ok=True)
    machine = machine_description()
    print(f"bench: {'quick' if args.quick else 'full'} run, {settings.rounds} round(s), on {machine}")
    if settings.idle < IDLE_MAX and not args.quick:
        print(f"bench: {settings.idle} idle sessions, not {IDLE_MAX}: the descriptor limit is {NOFILE}"
              + (f"; {NOFILE_SHORT}" if NOFILE_SHORT else "")
              + f"; the upgrade scenario also moves {IDLE_MAX} echoed sessions (one socket each)")
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="uvbind-bench-") as work:
        bench = Bench(settings, os.path.abspath(args.directd), os.path.abspath(args.bin), work)
        scenarios = [("throughput", bench.throughput), ("latency", bench.latency), ("echo", bench.echo),
                     ("instructions", bench.instructions), ("churn", bench.churn), ("memory", bench.memory),
                     ("metrics", bench.metrics), ("upgrade", bench.upgrade)]
        only = set(args.only.split(",")) if args.only else None
        try:
            for name, scenario in scenarios:
                if only and name not in only:
                    continue
                t = time.time()
                scenario()
                print(f"bench: {name} done in {time.time() - t:.0f} s", flush=True)
        finally:
            Proc.stop_all()
    report(bench.rows, settings)
    if bench.failures:
        print(f"\nbench: {len(bench.failures)} measurement(s) failed:")
        for failure in bench.failures:
            print(f"  {failure}")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    csv_path = os.path.join(args.results, f"bench-{stamp}.csv")
    write_csv(bench.rows, csv_path, machine)
    png_path = os.path.join(args.results, "bench.png")
    drew = chart(bench.rows, png_path)
    print(f"\nbench: raw numbers in {csv_path}" + (f", chart in {png_path}" if drew else ""))
    print(f"bench: finished in {time.time() - started:.0f} s")
    if bench.failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
