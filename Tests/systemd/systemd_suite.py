#!/usr/bin/env python3
"""directd under a real systemd 252, as an operator runs it (issue 22; issue 19 part 3).

A systemd boots as PID 1 in a sandbox (see sandbox.py). directd is installed into it
from the Debian package (`apt-get install ./directd_*.deb`, with --deb) or, without
one, from the release build (--directd: the binary, the unit and the example config
copied where the package puts them).
Each check prints PASS or FAIL with what it saw; the suite ends with
"systemd: N passed, M failed" and exits 1 on any failure.

Needs root. Everything runs inside the sandbox: its own network namespace (the
clients here open their sockets in it), its own overlay root (the package is
installed there, not on this machine).
"""
import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import observability_checks  # noqa: E402
import package_checks  # noqa: E402
import upgrade_checks  # noqa: E402
from clients import ConnectLoop, EchoUpstream, connect, echoes, ended_by_peer, refuses, round_trip  # noqa: E402,E501
from sandbox import Sandbox, SandboxError  # noqa: E402

CONFIG = "/etc/directd/directd.json"
PORT = 21118
OTHER_PORT = 21119
UPSTREAM_PORT = 7001
SUITE_SECONDS = int(os.environ.get("SYSTEMD_SUITE_SECONDS", "170"))  # within 3 minutes
CAP_NET_BIND_SERVICE = 1 << 10

results = []


class OutOfTime(BaseException):
    """The suite's alarm: a BaseException, so that no check's `except OSError` swallows it."""


def check(ok, what, detail=""):
    results.append(bool(ok))
    print(f"{'PASS' if ok else 'FAIL'}: {what}{f' ({detail})' if detail else ''}", flush=True)
    return bool(ok)


def packaging(name):
    """A file of the checkout's packaging/ (the example config, the units)."""
    with open(os.path.join(ARGS.checkout, "packaging", name)) as f:
        return f.read()


def wait_for(condition, timeout, interval=0.05):
    """Polls until condition() is true; False once timeout (a failure bound) passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            return value
        time.sleep(interval)


class Operator:
    """What an operator types, inside the sandbox."""

    def __init__(self, box):
        self.box = box

    def systemctl(self, *args, check=False, timeout=60):
        return self.box.run("systemctl", "--no-pager", *args, check=check, timeout=timeout)

    def show(self, prop, unit="directd"):
        return self.systemctl("show", "-p", prop, "--value", unit).stdout.strip()

    def main_pid(self):
        return int(self.show("MainPID") or 0)

    def active(self, unit="directd"):
        return self.systemctl("is-active", unit).stdout.strip()

    def config(self, **options):
        base = json.loads(packaging("directd.json"))
        base["options"].update(options)
        self.box.write(CONFIG, json.dumps(base, indent=4) + "\n")

    def drop_in(self, unit, name, text):
        self.box.write(f"/etc/systemd/system/{unit}.d/{name}.conf", text)
        self.systemctl("daemon-reload", check=True)

    def remove_drop_in(self, unit, name):
        folder = self.box.path(f"/etc/systemd/system/{unit}.d")
        try:
            os.unlink(f"{folder}/{name}.conf")
            os.rmdir(folder)
        except (FileNotFoundError, OSError):
            pass
        self.systemctl("daemon-reload", check=True)

    def journal(self, *args):
        return self.box.run("journalctl", "--no-pager", "-u", "directd", *args, check=False).stdout


# -- installing ---------------------------------------------------------------

def install(box, op):
    """Installs directd as an operator would; True once the service runs after it."""
    if ARGS.deb:
        result = package_checks.apt_install(box, package_checks.package_files(ARGS.deb))
        return check(result.returncode == 0 and wait_for(lambda: op.active() == "active", 10)
                     and round_trip(box, PORT),
                     "apt-get install ./directd_*.deb installs and starts the service; it serves",
                     f"apt-get exited {result.returncode}, directd {op.active()}"
                     + ("" if result.returncode == 0 else f": {result.stdout[-1500:]}{result.stderr[-1500:]}"))
    # Without a package: the files where the package puts them.
    shutil.copyfile(ARGS.directd, box.path("/usr/bin/directd"))
    os.chmod(box.path("/usr/bin/directd"), 0o755)
    unit = packaging("directd.service").replace("/usr/local/bin/directd", "/usr/bin/directd")
    box.write("/lib/systemd/system/directd.service", unit)
    box.write("/lib/systemd/system/directd.socket", packaging("directd.socket"))
    box.write(CONFIG, packaging("directd.json"))
    op.systemctl("daemon-reload", check=True)
    result = op.systemctl("enable", "--now", "directd")
    return check(result.returncode == 0 and op.active() == "active",
                 "installed from the build; systemctl enable --now directd starts it",
                 f"{result.stderr.strip()} {op.active()}")


# -- the checks -----------------------------------------------------------------

def check_readiness(box, op):
    """systemctl start returns only once the listeners are open: a connect right after succeeds."""
    served = 0
    rounds = 3
    for _ in range(rounds):
        op.systemctl("stop", "directd", check=True)
        op.systemctl("reset-failed", "directd")  # these starts count against StartLimitBurst
        op.systemctl("start", "directd", check=True)
        served += round_trip(box, PORT, timeout=1.0)
    check(served == rounds, "readiness: a connect right after `systemctl start` is served",
          f"{served} of {rounds} starts")


def check_status_line(box, op):
    text = op.systemctl("status", "directd").stdout
    line = next((l.strip() for l in text.splitlines() if l.strip().startswith("Status:")), "")
    check(re.search(rf"listening on 127\.0\.0\.1:{PORT}; \d+ open, \d+ total", line),
          "systemctl status shows directd's Status: line", line or text[-400:])


def check_reload_applies(box, op):
    pid = op.main_pid()
    op.config(**{"direct-access-port": OTHER_PORT})
    result = op.systemctl("reload", "directd")
    moved = wait_for(lambda: round_trip(box, OTHER_PORT, timeout=1.0) and refuses(box, PORT), 10)
    check(result.returncode == 0 and moved and op.main_pid() == pid,
          "reload applies: a port change moves the listener, same process",
          f"reload exited {result.returncode}, {PORT}->{OTHER_PORT} {'moved' if moved else 'not moved'}")
    op.config()
    op.systemctl("reload", "directd")
    wait_for(lambda: round_trip(box, PORT, timeout=1.0), 10)


def check_rejected_reload(box, op):
    pid = op.main_pid()
    good = box.read(CONFIG)
    box.write(CONFIG, good.replace(f'"direct-access-port": {PORT}', '"direct-access-port": "not-a-port"'))
    result = op.systemctl("reload", "directd")
    serving = round_trip(box, PORT) and refuses(box, OTHER_PORT)
    named = "direct-access-port" in op.journal("-n", "20")
    check(result.returncode != 0 and serving and op.main_pid() == pid and op.active() == "active" and named,
          "a broken config fails `systemctl reload`; directd serves on unchanged",
          f"reload exited {result.returncode}, serving {serving}, same pid {op.main_pid() == pid}, "
          f"journal names the option {named}")
    box.write(CONFIG, good)


def check_journal_priorities(box, op):
    """A rejected reload (SIGHUP straight to directd) logs an error and a warning; -p warning shows only those."""
    good = box.read(CONFIG)
    box.write(CONFIG, good.replace(f'"direct-access-port": {PORT}', '"direct-access-port": "not-a-port"'))
    op.systemctl("kill", "-s", "HUP", "--kill-who=main", "directd")
    wait_for(lambda: "reload rejected" in op.journal("-n", "20"), 10)
    box.write(CONFIG, good)
    entries = [json.loads(l) for l in op.journal("-p", "warning", "-o", "json").splitlines() if l.strip()]
    priorities = sorted({int(e.get("PRIORITY", 6)) for e in entries})
    own = {int(e.get("PRIORITY", 6)) for e in entries if e.get("SYSLOG_IDENTIFIER") == "directd"}
    everything = [json.loads(l) for l in op.journal("-o", "json").splitlines() if l.strip()]
    directd_info = [e for e in everything if int(e.get("PRIORITY", 6)) == 6 and
                    e.get("SYSLOG_IDENTIFIER") == "directd"]
    prefixed = [e for e in everything if str(e.get("MESSAGE", "")).startswith("<")]
    check(entries and all(p <= 4 for p in priorities) and {3, 4} <= own and directd_info and not prefixed,
          "journalctl -p warning -u directd shows warnings and errors only",
          f"{len(entries)} lines at priorities {priorities}, directd's own at {sorted(own)}; "
          f"{len(directd_info)} info lines of directd left out; {len(prefixed)} with a raw <N> prefix")


def check_journal_audit_fields(box, op):
    observability_checks.check_journal_audit_fields(box, op, check, PORT, wait_for)


def check_status_command(box, op):
    observability_checks.check_status_command(box, op, check, PORT)


def status_fields(box, pid):
    fields = {}
    for line in box.read(f"/proc/{pid}/status").splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def check_process_sandbox(box, op):
    pid = op.main_pid()  # a PID of the sandbox's namespace; /proc inside is the sandbox's
    fields = status_fields(box, pid)
    uid = int(fields.get("Uid", "0").split()[0])
    caps = {k: int(fields.get(k, "0"), 16) for k in ("CapEff", "CapPrm", "CapAmb", "CapBnd")}
    user = box.run("getent", "passwd", str(uid), check=False).stdout.strip()
    check(fields.get("NoNewPrivs") == "1", "sandbox: NoNewPrivs: 1", f"NoNewPrivs: {fields.get('NoNewPrivs')}")
    check(fields.get("Seccomp") == "2", "sandbox: Seccomp: 2 (filter)", f"Seccomp: {fields.get('Seccomp')}")
    check(all(v == CAP_NET_BIND_SERVICE for v in caps.values()),
          "sandbox: exactly CAP_NET_BIND_SERVICE, effective, permitted, ambient and bounding",
          " ".join(f"{k} {v:#x}" for k, v in caps.items()))
    check(uid != 0 and 61184 <= uid <= 65519 and user.startswith("directd:"),
          "sandbox: a dynamic user (DynamicUser=yes)", f"uid {uid}, getent: {user or 'nothing'}")


@contextlib.contextmanager
def relaying(box, op, grace):
    """directd relaying to an echo upstream with this grace; yields a client's open
    session and `systemctl stop` started in the background; the example config after."""
    op.config(**{"direct-forward": f"127.0.0.1:{UPSTREAM_PORT}", "grace": grace})
    op.systemctl("restart", "directd", check=True)
    upstream = EchoUpstream(box, UPSTREAM_PORT)
    client = None
    try:
        client = connect(box, PORT)
        client.settimeout(15)  # a failure bound only
        opened = echoes(client, b"before\n")
        stopper = subprocess.Popen(["nsenter", "-t", str(box.pid), "-a", "systemctl", "stop", "directd"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        draining = wait_for(lambda: op.active() == "deactivating", 5)
        yield client, stopper, opened and draining
    finally:
        if client is not None:
            client.close()
        upstream.close()
        op.config()
        op.systemctl("start", "directd", check=True)


def clean_exit(op):
    # Result=success: directd exited 0 by itself; a stop that ran into TimeoutStopSec says "timeout".
    return op.show("ExecMainStatus") == "0" and op.show("Result") == "success"


def check_stop_drains(box, op):
    with relaying(box, op, grace=10) as (client, stopper, draining):
        during = echoes(client, b"during the drain\n")
        still_stopping = stopper.poll() is None
        client.shutdown(socket.SHUT_WR)
        closed = ended_by_peer(client)
        stopped = stopper.wait(timeout=15) == 0
        check(draining and during and still_stopping and closed and stopped and clean_exit(op),
              "systemctl stop drains: an open relay carries data until its client ends it, then directd exits 0",
              f"draining {draining}, relayed during the drain {during}, stop waited for it {still_stopping}, "
              f"exit {op.show('ExecMainStatus')} {op.show('Result')}")


def check_stop_cuts_at_grace(box, op):
    with relaying(box, op, grace=2) as (client, stopper, draining):
        during = echoes(client, b"during the drain\n")
        cut = ended_by_peer(client)  # the client does nothing: only the grace deadline ends it
        stopped = stopper.wait(timeout=15) == 0
        check(draining and during and cut and stopped and clean_exit(op),
              "systemctl stop: a relay still open when grace (2 s) ends is cut, and directd exits 0 by itself",
              f"draining {draining}, relayed during the drain {during}, cut by directd {cut}, "
              f"exit {op.show('ExecMainStatus')} {op.show('Result')}")


def check_watchdog(box, op):
    op.drop_in("directd.service", "watchdog", "[Service]\nWatchdogSec=2s\n")
    op.systemctl("restart", "directd", check=True)
    pid, restarts = op.main_pid(), int(op.show("NRestarts") or 0)
    box.run("kill", "-STOP", str(pid))
    came_back = wait_for(lambda: op.main_pid() not in (0, pid) and op.active() == "active", 20, 0.2)
    said = "Watchdog timeout" in box.run("journalctl", "--no-pager", "-n", "50", check=False).stdout
    check(came_back and int(op.show("NRestarts") or 0) > restarts and said and round_trip(box, PORT),
          "WatchdogSec restarts a directd stopped with SIGSTOP",
          f"pid {pid} -> {op.main_pid()}, NRestarts {restarts} -> {op.show('NRestarts')}, journal says timeout {said}")
    op.remove_drop_in("directd.service", "watchdog")
    op.systemctl("restart", "directd", check=True)


def check_socket_activation(box, op):
    op.systemctl("stop", "directd", check=True)
    op.systemctl("start", "directd.socket", check=True)
    # directd is not running: the first connection starts it, and it serves on the
    # socket unit's socket (and stores nothing: the socket unit holds it).
    served = round_trip(box, PORT, timeout=10)
    started = wait_for(lambda: op.active() == "active", 5)
    stored = op.show("NFileDescriptorStore")
    check(served and started and op.active("directd.socket") == "active" and stored == "0",
          "socket activation: a first connect to directd.socket starts directd, which serves it",
          f"served {served}, directd {op.active()}, NFileDescriptorStore {stored}")
    # A wider socket than the bind value: refused with 78, no restart loop.
    op.systemctl("stop", "directd", "directd.socket", check=True)
    op.drop_in("directd.socket", "wide", f"[Socket]\nListenStream=\nListenStream=0.0.0.0:{PORT}\n")
    op.systemctl("start", "directd.socket", check=True)
    op.systemctl("reset-failed", "directd")
    started = op.systemctl("start", "directd")
    status = op.show("ExecMainStatus")
    time.sleep(3)  # long enough for several restarts (RestartSec=100ms) if they were to come
    restarts = op.show("NRestarts")
    check(started.returncode != 0 and status == "78" and restarts == "0" and op.active() == "failed",
          "socket activation: a wider socket fails the unit with 78 and no restart loop",
          f"start exited {started.returncode}, ExecMainStatus {status}, NRestarts {restarts}, {op.active()}")
    op.systemctl("stop", "directd.socket", check=True)
    op.remove_drop_in("directd.socket", "wide")
    op.systemctl("reset-failed", "directd")
    op.systemctl("start", "directd", check=True)


def restart_storm(box, op):
    """3 restarts and 2 kills under a connecting client: the loop's counts, the store's sizes."""
    stored = []
    with ConnectLoop(box, PORT) as loop:
        wait_for(lambda: loop.served > 20, 5)
        loop.phase = "restart"
        for _ in range(3):
            op.systemctl("restart", "directd", check=True)
            stored.append(op.show("NFileDescriptorStore"))
            time.sleep(0.3)
        loop.phase = "kill"
        for _ in range(2):
            op.systemctl("reset-failed", "directd")  # these starts count against StartLimitBurst
            pid = op.main_pid()
            box.run("kill", "-KILL", str(pid))
            wait_for(lambda: op.main_pid() not in (0, pid) and op.active() == "active", 15)
            wait_for(lambda: op.show("NFileDescriptorStore") != "0", 3)
            stored.append(op.show("NFileDescriptorStore"))
            time.sleep(0.3)
        loop.phase = "after"
        served = loop.served
        wait_for(lambda: loop.served > served + 20, 5)
    return loop, stored


def storm_summary(loop):
    return (f"{sum(loop.refused.values())} of {loop.total()} connects refused {loop.refused or ''}, "
            f"{sum(loop.cut.values())} cut after the accept {loop.cut or ''}")


def check_fdstore(box, op):
    op.systemctl("restart", "directd", check=True)
    loop, stored = restart_storm(box, op)
    # A kill -9 cuts the connections its process had taken (nothing can drain them);
    # a restart drains, so it cuts none; and nothing is ever refused.
    check(not loop.refused and "restart" not in loop.cut and loop.served > 0 and all(s == "1" for s in stored),
          "fdstore: 3 restarts and 2 kills -9 refuse no connect; NFileDescriptorStore 1 while running",
          f"{storm_summary(loop)}; store after each start: {','.join(stored)}")
    op.systemctl("stop", "directd", check=True)
    emptied = op.show("NFileDescriptorStore")
    check(emptied == "0", "fdstore: systemctl stop empties the store", f"NFileDescriptorStore {emptied}")
    op.drop_in("directd.service", "nofdstore", "[Service]\nFileDescriptorStoreMax=0\n")
    op.systemctl("start", "directd", check=True)
    off, _ = restart_storm(box, op)
    print(f"fdstore: measured: with the store {storm_summary(loop)}; "
          f"with FileDescriptorStoreMax=0 {storm_summary(off)}", flush=True)
    op.remove_drop_in("directd.service", "nofdstore")
    op.systemctl("restart", "directd", check=True)


def check_upgrades(box, op):
    upgrade_checks.run(box, op, check, wait_for, PORT)


def main():
    global ARGS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", default=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    parser.add_argument("--deb", help="folder with directd_*.deb, libuvbind0_*.deb, libuvbind-dev_*.deb")
    parser.add_argument("--upgrade-deb", help="folder with the same packages at a newer version")
    parser.add_argument("--directd", help="without --deb: the release directd to install")
    parser.add_argument("--only", help="run only these checks (comma-separated names, e.g. check_upgrades)")
    ARGS = parser.parse_args()
    if os.geteuid() != 0:
        print("systemd: needs root (namespaces, mounts, cgroups)")
        return 2
    if not ARGS.deb and not ARGS.directd:
        parser.error("--deb or --directd")

    def out_of_time(_signum, _frame):
        raise OutOfTime(f"the suite ran over {SUITE_SECONDS} s")
    signal.signal(signal.SIGALRM, out_of_time)
    signal.alarm(SUITE_SECONDS)
    started = time.monotonic()
    try:
        with Sandbox(ARGS.checkout) as box:
            # degraded: booted, but a unit of the image failed; named, and not directd's doing.
            failed_units = box.run("systemctl", "--failed", "--plain", "--no-legend", check=False).stdout.split("\n")
            check(box.state in ("running", "degraded"), "systemd boots in the sandbox",
                  f"is-system-running: {box.state} in {time.monotonic() - started:.1f} s"
                  + (f"; failed units: {', '.join(u.split()[0] for u in failed_units if u.strip())}"
                     if box.state == "degraded" else ""))
            op = Operator(box)
            package_checks.allow_service_starts(box)
            before = package_checks.snapshot(box) if ARGS.deb else None
            if install(box, op):
                for step in (check_readiness, check_status_line, check_reload_applies, check_rejected_reload,
                             check_journal_priorities, check_journal_audit_fields, check_status_command,
                             check_process_sandbox, check_stop_drains, check_stop_cuts_at_grace,
                             check_watchdog, check_socket_activation, check_fdstore, check_upgrades):
                    if ARGS.only and step.__name__ not in ARGS.only.split(","):
                        continue
                    try:
                        step(box, op)
                    except (SandboxError, OSError, subprocess.SubprocessError) as error:
                        check(False, step.__name__, str(error)[-1500:])
                if ARGS.deb:
                    package_checks.run(box, op, ARGS, before, check, OTHER_PORT)
    except (SandboxError, OutOfTime, KeyboardInterrupt, RuntimeError, OSError) as error:
        check(False, "the suite ran to its end", str(error)[-3000:])
    passed = sum(results)
    print(f"systemd: {passed} passed, {len(results) - passed} failed ({time.monotonic() - started:.0f} s)")
    return 0 if results and all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
