"""In-place upgrades under a real systemd (issue 19, parts 1 and 2, and its Proof).

- Upgrades under load: in each relay mode (copy, splice, auto), sessions streaming
  hashed data both ways through directd (a quarter of them half-closed), a client
  connecting in a loop, and upgrades in a row triggered as an operator would
  (`systemctl kill -s USR2 --kill-whom=main directd`), alternating two builds that
  report different versions (a fresh copy of the binary renamed over /usr/bin/directd
  each time, and the version test hook, DIRECTD_TEST_VERSION_FILE, telling "a" from
  "b"). Expected: 0 refused, 0 cut, every transfer byte-exact both ways, the new
  version serving (its `upgrade done` line), MainPID changed and ActiveState active
  (READY=1) after each, and the watchdog still pinging from the new process.
- Rollback: each cause leaves the old process serving, with the same MainPID and
  every session byte-exact, and the journal naming the cause.

Sizes: SYSTEMD_UPGRADE_SIZE=full runs the issue's size (200 sessions, 20 upgrades per
mode); the default is a smaller size that fits `make test-systemd`'s budget.
"""
import os
import re
import shutil
import time

from clients import ConnectLoop, round_trip
from streams import HashedStreams

UPSTREAM_PORT = 7002
VERSION_FILE = "/run/directd-test/version"
SPARE = "/usr/lib/directd-test/directd"  # the real binary, while a wrapper stands at the path
SIZES = {"small": (16, 2), "full": (200, 20)}  # sessions, upgrades per relay mode
DROP_IN = ("[Service]\n"
           f"Environment=DIRECTD_TEST_VERSION_FILE={VERSION_FILE}\n"
           "WatchdogSec=2s\n")


def size():
    return SIZES["full" if os.environ.get("SYSTEMD_UPGRADE_SIZE") == "full" else "small"]


class Upgrades:
    def __init__(self, box, op, check, wait_for, port):
        self.box, self.op, self.check, self.wait_for, self.port = box, op, check, wait_for, port
        self.binary = "/usr/bin/directd"

    # -- what an operator types and sees ---------------------------------------

    def trigger(self):
        return self.op.systemctl("kill", "-s", "USR2", "--kill-whom=main", "directd")

    def log(self):
        return self.box.run("journalctl", "--no-pager", "-u", "directd", "-o", "cat", check=False).stdout

    def journal_excerpt(self):
        """On a failure: what systemd and directd said about upgrades and the watchdog."""
        lines = self.box.run("journalctl", "--no-pager", "-o", "short-monotonic", "--since", "40 s ago",
                             check=False).stdout.splitlines()
        noise = ("taken over from the old process", "closed:", "opened from", "suppressed")
        wanted = [l for l in lines if "directd" in l and not any(n in l for n in noise)]
        print("journal (directd's and systemd's lines about it, the last 40 s):\n  " + "\n  ".join(wanted[-80:]), flush=True)

    def watchdog_timeouts(self):
        """systemd's "Watchdog timeout" lines so far (the suite's watchdog check makes one on purpose)."""
        return self.log().count("Watchdog timeout")

    def install_copy(self, version):
        """A new file at the path (as dpkg does: written beside it, renamed over it),
        and the version the next start of it reports."""
        self.box.write(VERSION_FILE, version + "\n")
        temporary = self.box.path(self.binary + ".new")
        shutil.copyfile(self.box.path(self.binary), temporary)
        os.chmod(temporary, 0o755)
        os.rename(temporary, self.box.path(self.binary))

    def upgrade_once(self, version):
        """One upgrade; (ok, seconds, moved sessions, detail)."""
        pid = self.op.main_pid()
        self.install_copy(version)
        done_before = self.log().count("upgrade done: upgraded")
        started = time.monotonic()
        sent = self.trigger()
        changed = self.wait_for(lambda: self.op.main_pid() not in (0, pid), 15, 0.01)
        seconds = time.monotonic() - started
        new = self.op.main_pid()
        ready = self.wait_for(lambda: self.op.show("ActiveState") == "active", 10)
        text = self.wait_for(lambda: (lambda t: t if t.count("upgrade done: upgraded") > done_before else "")(self.log()), 5)
        serving = re.findall(r"upgrade done: upgraded: pid (\d+) \((directd [^)]*\(([ab])\))\) serves now", text or "")
        moved = re.findall(r"upgrade: handing over \d+ listeners and (\d+) sessions", text or "")
        version_ok = bool(serving) and serving[-1][0] == str(new) and serving[-1][2] == version
        status = self.op.show("StatusText")
        ok = sent.returncode == 0 and changed and ready and version_ok and "listening on" in status
        detail = (f"pid {pid} -> {new}, {self.op.show('ActiveState')}, serving {serving[-1][1] if serving else 'unknown'}, "
                  f"status {status!r}" + ("" if sent.returncode == 0 else f", systemctl kill: {sent.stderr.strip()}"))
        return ok, seconds, int(moved[-1]) if moved else 0, detail

    # -- under load -------------------------------------------------------------

    def under_load(self, mode, sessions, upgrades):
        op = self.op
        op.config(**{"direct-forward": f"127.0.0.1:{UPSTREAM_PORT}", "relay-mode": mode, "grace": 5})
        op.systemctl("restart", "directd", check=True)
        restarts, timeouts = op.show("NRestarts"), self.watchdog_timeouts()
        streams = HashedStreams(self.box, self.port, UPSTREAM_PORT, sessions)
        times, moved, failures = [], [], []
        try:
            with ConnectLoop(self.box, self.port) as loop:
                self.wait_for(lambda: loop.served > 10, 5)
                loop.phase = "upgrade"
                for n in range(upgrades):
                    before = streams.progress()
                    ok, seconds, count, detail = self.upgrade_once("ab"[n % 2])
                    times.append(seconds)
                    moved.append(count)
                    # The sessions move on in the new process before the next one.
                    flowing = self.wait_for(lambda: streams.progress() > before + 4096 * sessions // 4, 10)
                    if not (ok and flowing):
                        failures.append(f"upgrade {n + 1}: {detail}; sessions flowing {bool(flowing)}")
                        self.journal_excerpt()
                        break  # what follows would only repeat it
                watchdog = op.show("WatchdogTimestampMonotonic")
                pinged = self.wait_for(lambda: op.show("WatchdogTimestampMonotonic") != watchdog, 5)
                loop.phase = "after"
                served = loop.served
                self.wait_for(lambda: loop.served > served + 10, 5)
        finally:
            exact, cut, problems = streams.finish()
        refused, lost = sum(loop.refused.values()), sum(loop.cut.values())
        watchdog_kills = self.watchdog_timeouts() - timeouts
        self.check(not failures and refused == 0 and lost == 0 and cut == 0 and exact == sessions
                   and pinged and not watchdog_kills and op.show("NRestarts") == restarts,
                   f"upgrade under load ({mode}): {upgrades} upgrades, {sessions} sessions streaming both ways, "
                   "a client connecting in a loop: 0 refused, 0 cut, byte-exact, new version and MainPID each time",
                   f"refused {refused} of {loop.total()} connects, {lost} loop connections cut; sessions: {exact} of "
                   f"{sessions} byte-exact ({streams.bytes_moved()} bytes), {cut} cut {problems[:3]}; sessions moved per "
                   f"upgrade {moved}; MainPID change after the signal {min(times):.3f}-{max(times):.3f} s "
                   f"(mean {sum(times) / len(times):.3f} s); watchdog pinged after {bool(pinged)}, watchdog kills "
                   f"{watchdog_kills}, NRestarts {restarts} -> {op.show('NRestarts')}"
                   + (f"; {failures[:3]}" if failures else ""))

    # -- rollback ---------------------------------------------------------------

    def wrapper(self, script):
        """A script at the path instead of the binary (the binary kept at SPARE)."""
        self.box.write(self.binary + ".new", script, mode=0o755)
        os.rename(self.box.path(self.binary + ".new"), self.box.path(self.binary))

    def restore(self):
        shutil.copyfile(self.box.path(SPARE), self.box.path(self.binary + ".new"))
        os.chmod(self.box.path(self.binary + ".new"), 0o755)
        os.rename(self.box.path(self.binary + ".new"), self.box.path(self.binary))

    def rollback(self, cause, expected, prepare, during=None, undo=None):
        """One rollback case: (ok, detail)."""
        pid = self.op.main_pid()
        rolled_before = self.log().count("upgrade rolled back")
        prepare()
        started = time.monotonic()
        sent = self.trigger()
        if during:
            during()
        text = self.wait_for(lambda: (lambda t: t if t.count("upgrade rolled back") > rolled_before else "")(self.log()), 15)
        seconds = time.monotonic() - started
        (undo or self.restore)()
        why = re.findall(r"upgrade rolled back: (.*); pid (\d+) \(", text or "")
        named = bool(why) and re.search(expected, why[-1][0]) is not None and why[-1][1] == str(pid)
        ready = self.wait_for(lambda: self.op.show("ActiveState") == "active", 5)
        same = self.op.main_pid() == pid
        serves = round_trip(self.box, self.port)
        ok = sent.returncode == 0 and named and ready and same and serves
        return ok, (f"{cause}: {why[-1][0] if why else 'no rollback line'} ({seconds:.2f} s), same MainPID {same}, "
                    f"{self.op.show('ActiveState')}, serves {serves}")

    def rollbacks(self, sessions):
        op, box = self.op, self.box
        op.config(**{"direct-forward": f"127.0.0.1:{UPSTREAM_PORT}", "grace": 5})
        op.systemctl("restart", "directd", check=True)
        os.makedirs(os.path.dirname(box.path(SPARE)), exist_ok=True)
        shutil.copyfile(box.path(self.binary), box.path(SPARE))
        os.chmod(box.path(SPARE), 0o755)
        good = box.read("/etc/directd/directd.json")
        streams = HashedStreams(box, self.port, UPSTREAM_PORT, sessions)
        outcomes = []

        def kill_the_stalled_one():
            line = self.wait_for(lambda: re.findall(r"upgrade test hook: pid (\d+) holds the handover", self.log()), 10)
            if line:
                box.run("kill", "-KILL", line[-1], check=False)

        cases = [
            ("the new binary is missing", r"cannot start /usr/bin/directd: no such file",
             lambda: os.unlink(box.path(self.binary)), None, None),
            ("it is not executable", r"cannot start /usr/bin/directd: permission denied",
             lambda: os.chmod(box.path(self.binary), 0o644), None, None),
            ("it exits at start", r"exited with status 3 before it took over",
             lambda: self.wrapper("#!/bin/sh\nexit 3\n"), None, None),
            ("it refuses the handover version", r"version mismatch: the new process .* speaks handover format 99",
             lambda: self.wrapper(f"#!/bin/sh\nDIRECTD_TEST_HANDOVER_FORMAT=99 exec {SPARE} \"$@\"\n"), None, None),
            ("it is killed in the middle of the handover", r"killed by signal 9 before it took over",
             lambda: self.wrapper(f"#!/bin/sh\nDIRECTD_TEST_UPGRADE_STALL=1 exec {SPARE} \"$@\"\n"),
             kill_the_stalled_one, None),
            ("the config is invalid", r"the new process refused: the config is invalid: .*direct access port",
             lambda: box.write("/etc/directd/directd.json", good.replace('"direct-access-port": 21118',
                                                                          '"direct-access-port": "not-a-port"')),
             None, lambda: box.write("/etc/directd/directd.json", good)),
        ]
        try:
            with ConnectLoop(box, self.port) as loop:
                self.wait_for(lambda: loop.served > 10, 5)
                for cause, expected, prepare, during, undo in cases:
                    loop.phase = cause
                    before = streams.progress()
                    ok, detail = self.rollback(cause, expected, prepare, during, undo)
                    flowing = self.wait_for(lambda: streams.progress() > before + 4096, 10)
                    cut = streams.cut()
                    outcomes.append((ok and bool(flowing) and not cut,
                                     detail + f", sessions flowing {bool(flowing)}, cut so far {len(cut)} {cut[:2]}"))
        finally:
            exact, cut, problems = streams.finish()
            if not os.path.exists(box.path(self.binary)) or not os.access(box.path(self.binary), os.X_OK):
                self.restore()
            shutil.rmtree(os.path.dirname(box.path(SPARE)))  # the purge check compares against before the install
        for ok, detail in outcomes:
            self.check(ok, "rollback leaves the old process serving, the journal naming the cause", detail)
        refused = sum(loop.refused.values())
        self.check(exact == sessions and cut == 0 and refused == 0,
                   f"rollback: {len(cases)} failed upgrades, {sessions} sessions byte-exact through all of them, 0 refused",
                   f"{exact} of {sessions} byte-exact, {cut} cut {problems[:3]}; refused {refused} of {loop.total()} "
                   f"connects, {sum(loop.cut.values())} loop connections cut")


def run(box, op, check, wait_for, port):
    sessions, upgrades = size()
    upgrade = Upgrades(box, op, check, wait_for, port)
    op.drop_in("directd.service", "upgrade-test", DROP_IN)
    try:
        for mode in ("copy", "splice", "auto"):
            upgrade.under_load(mode, sessions, upgrades)
        upgrade.rollbacks(max(8, sessions // 2))
    finally:
        op.remove_drop_in("directd.service", "upgrade-test")
        op.config()
        op.systemctl("restart", "directd", check=True)
