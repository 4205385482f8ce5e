"""The Debian packages as an operator meets them, inside the systemd sandbox.

- a C program builds against libuvbind-dev through pkg-config and runs;
- an operator's edited conffile survives an upgrade to a newer-versioned package,
  and the upgraded service serves with it;
- that upgrade is in place: sessions open through directd during `apt-get install`
  stay byte-exact both ways, the main PID changes, a connecting client is refused
  nothing (the postinst's upgrade-in-place, not a restart);
- `apt-get purge` leaves the system as it was before the install, the config
  included: compared file by file through the overlay's upper layer, which holds
  every file changed inside the sandbox.
"""
import glob
import hashlib
import json
import os
import re
import stat
import time

from clients import ConnectLoop, round_trip
from streams import HashedStreams

PACKAGES = ("directd", "libuvbind0", "libuvbind-dev")
UPSTREAM_PORT = 7003
SESSIONS = 16
CONFIG = "/etc/directd/directd.json"

# What dpkg, apt and its hooks (PackageKit's transaction log, the Prometheus node
# exporter's apt metrics), man-db, ldconfig and systemd keep for themselves (their
# databases, caches, logs, the journal): not files of the package.
BOOKKEEPING = ("/var/lib/dpkg/", "/var/lib/apt/", "/var/cache/", "/var/log/", "/var/lib/systemd/",
               "/var/lib/private/", "/var/lib/PackageKit/", "/var/lib/prometheus/node-exporter/",
               "/etc/ld.so.cache", "/tmp/", "/var/tmp/")


def package_files(folder):
    """The three packages' .deb files in folder (no -dbgsym)."""
    found = []
    for name in PACKAGES:
        matches = glob.glob(os.path.join(folder, f"{name}_*.deb"))
        if len(matches) != 1:
            raise RuntimeError(f"expected one {name}_*.deb in {folder}, found {len(matches)}")
        found.append(os.path.abspath(matches[0]))
    return found


def allow_service_starts(box):
    """This image keeps services from starting on install (a Docker-style
    policy-rc.d); an operator's machine has none. Removed inside only."""
    if os.path.lexists(box.path("/usr/sbin/policy-rc.d")):
        os.unlink(box.path("/usr/sbin/policy-rc.d"))


def apt_install(box, debs):
    return box.run("env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y",
                   *debs, check=False, timeout=120)


def snapshot(box):
    """Every entry of the upper layer, outside the bookkeeping: path -> what it is."""
    upper = box.upper_layer()
    entries = {}
    for top, dirs, files in os.walk(upper):
        for name in dirs + files:
            full = os.path.join(top, name)
            inside = full[len(upper):]
            if inside.startswith(BOOKKEEPING) or inside + "/" in BOOKKEEPING:
                continue
            info = os.lstat(full)
            if stat.S_ISREG(info.st_mode):
                with open(full, "rb") as f:
                    entries[inside] = "file " + hashlib.sha256(f.read()).hexdigest()
            elif stat.S_ISCHR(info.st_mode) and info.st_rdev == 0:
                entries[inside] = "removed"
            elif stat.S_ISLNK(info.st_mode):
                entries[inside] = "link " + os.readlink(full)
            elif stat.S_ISDIR(info.st_mode):
                # A folder of the lower layer (`/`) is copied up when something in it
                # changes, and stays: only a folder `/` does not have is new.
                if not os.path.isdir(inside):
                    entries[inside] = "dir"
            else:
                entries[inside] = f"mode {info.st_mode:o}"
    return entries


def check_c_program(box, check):
    source = os.path.join(box.checkout, "Tests/CAPI/api_test.c")
    result = box.sh(f"cc -Wall -Wextra -Werror -std=c11 {source} $(pkg-config --cflags --libs uvbind) "
                    "-o /tmp/api_test && ldd /tmp/api_test && /tmp/api_test", check=False, timeout=120)
    linked = re.search(r"libUVBind\.so\.0 => (/usr)?/lib/[^/ ]+/libUVBind\.so\.0 ", result.stdout) is not None
    check(result.returncode == 0 and linked,
          "libuvbind-dev: a C program builds through pkg-config uvbind and runs against libuvbind0",
          f"exit {result.returncode}, links the packaged library {linked}"
          + ("" if result.returncode == 0 else f": {result.stdout[-800:]}{result.stderr[-800:]}"))


def check_upgrade_keeps_conffile(box, op, upgrade_folder, check, other_port):
    config = json.loads(box.read(CONFIG))
    config["options"]["direct-access-port"] = other_port
    config["options"]["grace"] = 3
    config["options"]["direct-forward"] = f"127.0.0.1:{UPSTREAM_PORT}"
    edited = json.dumps(config, indent=2) + "\n"  # other bytes than the package's, too
    box.write(CONFIG, edited)
    op.systemctl("reload", "directd", check=True)
    pid = op.main_pid()
    installed = box.run("dpkg-query", "-W", "-f", "${Version}", "directd", check=False).stdout
    debs = package_files(upgrade_folder)
    newer = box.run("dpkg-deb", "-f", debs[0], "Version").stdout.strip()
    if box.run("dpkg", "--compare-versions", newer, "gt", installed, check=False).returncode != 0:
        return check(False, "upgrade keeps the conffile", f"{newer} in {upgrade_folder} is not newer than {installed}")
    streams = HashedStreams(box, other_port, UPSTREAM_PORT, SESSIONS)
    try:
        with ConnectLoop(box, other_port) as loop:
            loop.phase = "apt-get install"
            result = apt_install(box, debs)
            new_pid = op.main_pid()
            before = streams.progress()
            flowing = bool(streams.cut() == [] and _wait(lambda: streams.progress() > before + 4096))
            serves = round_trip(box, other_port)  # echoed by the streams' upstream
    finally:
        exact, cut, problems = streams.finish()
    version = box.run("dpkg-query", "-W", "-f", "${Version}", "directd", check=False).stdout
    kept = box.read(CONFIG) == edited
    leftovers = [p for p in os.listdir(box.path("/etc/directd")) if p != "directd.json"]
    check(result.returncode == 0 and version == newer and kept and not leftovers and serves,
          "upgrade to a newer package keeps the operator's edited conffile, serves with it",
          f"apt-get exited {result.returncode}, {installed} -> {version}, conffile kept {kept}, other files {leftovers}, "
          f"serves on {other_port} {serves}" + ("" if result.returncode == 0 else f": {result.stdout[-800:]}"))
    said = "upgraded in place" in result.stdout and "restarting it instead" not in result.stderr
    refused = sum(loop.refused.values())
    check(new_pid not in (0, pid) and said and flowing and exact == SESSIONS and cut == 0 and refused == 0
          and op.active() == "active",
          "apt-get install of a newer package upgrades directd in place: every session byte-exact, "
          "MainPID changed, 0 refused",
          f"MainPID {pid} -> {new_pid}, postinst said {bool(said)} "
          f"{[l for l in (result.stdout + result.stderr).splitlines() if 'directd:' in l][:2]}; sessions {exact} of "
          f"{SESSIONS} byte-exact, {cut} cut {problems[:2]}, flowing after {flowing}; refused {refused} of "
          f"{loop.total()} connects, {sum(loop.cut.values())} loop connections cut")


def check_upgrade_falls_back(box, op, check):
    """upgrade-in-place when the upgrade rolls back (a new process that claims another
    handover format): it restarts the service instead, and says so on stderr."""
    real, spare = box.path("/usr/bin/directd"), box.path("/usr/lib/directd-test/directd")
    os.makedirs(os.path.dirname(spare), exist_ok=True)
    os.rename(real, spare)
    try:
        with open(real + ".new", "w") as f:
            f.write("#!/bin/sh\nDIRECTD_TEST_HANDOVER_FORMAT=99 exec /usr/lib/directd-test/directd \"$@\"\n")
        os.chmod(real + ".new", 0o755)
        os.rename(real + ".new", real)
        pid = op.main_pid()
        result = box.run("/usr/lib/directd/upgrade-in-place", check=False, timeout=60)
        new_pid = op.main_pid()
        said = ("did not complete (rolled back: version mismatch" in result.stderr
                and "restarting it instead" in result.stderr)
        check(result.returncode == 0 and said and new_pid not in (0, pid) and op.active() == "active",
              "upgrade-in-place: an upgrade that rolls back falls back to `systemctl restart`, said on stderr",
              f"exit {result.returncode}, MainPID {pid} -> {new_pid}, {op.active()}, stderr {result.stderr.strip()!r}")
    finally:
        os.replace(spare, real)
        os.rmdir(os.path.dirname(spare))
        op.systemctl("restart", "directd")


def _wait(condition, timeout=10.0):
    deadline = time.monotonic() + timeout  # a failure bound only
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


def check_purge(box, op, before, check):
    listed = box.run("dpkg", "-L", *PACKAGES, check=False).stdout.split()
    files = [p for p in listed if p.startswith("/") and not os.path.isdir(box.path(p))]
    result = box.run("env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "purge", "-y", *PACKAGES,
                     check=False, timeout=120)
    after = snapshot(box)
    changed = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))
    remaining = [p for p in files if os.path.lexists(box.path(p))]
    check(result.returncode == 0 and files and not remaining and not changed
          and not os.path.exists(box.path("/etc/directd")) and op.active() != "active",
          "apt-get purge removes everything the packages installed, the config included",
          f"apt-get exited {result.returncode}; of {len(files)} files installed {len(remaining)} remain "
          f"{remaining[:5]}; changed against before the install: {changed[:8] or 'nothing'}")


def run(box, op, args, before, check, other_port):
    check_c_program(box, check)
    if args.upgrade_deb:
        check_upgrade_keeps_conffile(box, op, args.upgrade_deb, check, other_port)
        check_upgrade_falls_back(box, op, check)
    else:
        check(False, "upgrade keeps the conffile", "no --upgrade-deb folder given")
    check_purge(box, op, before, check)
