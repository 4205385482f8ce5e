"""A real systemd as PID 1 in an isolated sandbox, for tests that need systemd itself.

    with Sandbox(checkout="/work/repo") as box:
        box.run("systemctl", "start", "directd")
        print(box.run("systemctl", "status", "directd", check=False).stdout)

How it is built (measured on Debian 12, systemd 252):
- a child cgroup of the test's own under the host's unified (cgroup2) hierarchy;
  the sandbox's first process joins it before it unshares, so systemd's whole
  tree lives below it and goes with it;
- `unshare --fork --pid --mount --uts --ipc --net --cgroup`;
- the root: an overlayfs with `/` as its lower layer and an upper layer on a
  tmpfs of the sandbox's own mount namespace, entered with pivot_root, so that
  nothing installed inside touches the machine, and the upper layer is gone
  when the namespace is;
- fresh proc and sysfs, cgroup2 at /sys/fs/cgroup, tmpfs at /run and /tmp,
  /dev bind-mounted, the checkout bind-mounted at its own path;
- `container=` set, then systemd started on a target of the sandbox's own
  (Requires=basic.target), not multi-user.target: this image has services
  (nginx, haproxy, postgresql) that would start with it.

Teardown, on every exit path (exceptions, SIGINT/SIGTERM/SIGHUP, an alarm):
SIGKILL to its PID 1 ends the whole PID namespace; then cgroup.kill and the
cgroup folders go, bottom up. A sandbox left by a killed run is swept the next
time (its cgroup is named after the test's PID).
"""
import atexit
import ctypes
import os
import shlex
import signal
import socket
import subprocess
import tempfile
import threading
import time

CGROUP_PREFIX = "directd-systemd-"
SCRATCH_PREFIX = "directd-sandbox-"
TARGET = "directd-sandbox.target"
UPPER_INSIDE = "/run/directd-sandbox/upper"
CLONE_NEWNET = 0x40000000

# The sandbox's own boot target: basic.target and nothing of the image's.
TARGET_UNIT = f"""[Unit]
Description=directd test sandbox
Requires=basic.target
After=basic.target
AllowIsolate=yes
"""

# Runs as the new PID namespace's PID 1, then becomes systemd. $1: the scratch
# tmpfs mount point, $2: the checkout, $3: the target's text.
BOOT_SCRIPT = r"""
set -eu
scratch=$1 checkout=$2 target=$3
mount --make-rprivate /
mount -t tmpfs -o mode=0755 sandbox-upper "$scratch"
mkdir -p "$scratch/upper" "$scratch/work" "$scratch/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$scratch/upper,workdir=$scratch/work" "$scratch/root"
root=$scratch/root
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
mount -t cgroup2 cgroup2 "$root/sys/fs/cgroup"
mount -t tmpfs -o mode=0755 tmpfs "$root/run"
mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
mount --rbind /dev "$root/dev"
mkdir -p "$root$checkout"
mount --bind "$checkout" "$root$checkout"
# The upper layer, readable inside: what the tests changed, and nothing else.
mkdir -p "$root/run/directd-sandbox/upper"
mount --bind -o ro "$scratch/upper" "$root/run/directd-sandbox/upper"
printf '%s' "$target" > "$root/etc/systemd/system/directd-sandbox.target"
# No getty on the host's console from inside.
ln -sf /dev/null "$root/etc/systemd/system/console-getty.service"
ip link set lo up
hostname directd-sandbox
mkdir -p "$root/oldroot"
cd "$root"
pivot_root . oldroot
umount -l /oldroot
rmdir /oldroot
cd /
export container=directd-sandbox
exec /lib/systemd/systemd --unit=directd-sandbox.target
"""


class SandboxError(RuntimeError):
    pass


def unified_hierarchy():
    """Where the host's cgroup2 hierarchy is mounted (pure v2 or hybrid)."""
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            fields = line.split()
            if fields[2] == "cgroup2":
                return fields[1]
    raise SandboxError("no cgroup2 hierarchy mounted on the host")


def own_cgroup():
    with open("/proc/self/cgroup") as cgroups:
        for line in cgroups:
            if line.startswith("0::"):
                return line[3:].strip()
    return "/"


def remove_cgroup_tree(path, timeout=10.0):
    """Kills what is left in a cgroup tree and removes its folders, bottom up."""
    if not os.path.isdir(path):
        return
    try:
        with open(os.path.join(path, "cgroup.kill"), "w") as kill:
            kill.write("1")
    except OSError:
        pass
    deadline = time.monotonic() + timeout
    while True:
        folders = [top for top, _, _ in os.walk(path, topdown=False)]
        for folder in folders:
            try:
                os.rmdir(folder)
            except OSError:
                pass
        if not os.path.isdir(path):
            return
        if time.monotonic() > deadline:
            raise SandboxError(f"cgroup {path} could not be removed")
        time.sleep(0.05)


def sweep_stale(base):
    """Removes sandboxes left by runs that were killed (their PID is gone): the
    cgroup with what still runs in it, and the empty mount point of the upper layer."""
    for name in os.listdir(base):
        if not name.startswith(CGROUP_PREFIX):
            continue
        pid = name[len(CGROUP_PREFIX):]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            remove_cgroup_tree(os.path.join(base, name))
    temp = tempfile.gettempdir()
    for name in os.listdir(temp):
        pid = name[len(SCRATCH_PREFIX):].split("-")[0]
        if name.startswith(SCRATCH_PREFIX) and pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            try:
                os.rmdir(os.path.join(temp, name))  # only ever an empty folder
            except OSError:
                pass


class Sandbox:
    """A booted systemd in its own namespaces; a context manager."""

    def __init__(self, checkout, boot_timeout=30.0, log=print):
        self.checkout = os.path.realpath(checkout)
        self.boot_timeout = boot_timeout
        self.log = log
        self.process = None
        self.pid = None  # systemd's PID on the host
        self.cgroup = None
        self.scratch = None
        self.console = None
        self._old_handlers = {}

    # -- lifecycle ---------------------------------------------------------

    def __enter__(self):
        self._trap_signals()
        atexit.register(self.close)
        try:
            self._boot()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def _trap_signals(self):
        # A signal becomes an exception, so that every `with` unwinds and tears down.
        def interrupted(signum, _frame):
            raise KeyboardInterrupt(f"signal {signum}")
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            self._old_handlers[signum] = signal.signal(signum, interrupted)

    def _boot(self):
        base = os.path.join(unified_hierarchy(), own_cgroup().lstrip("/"))
        sweep_stale(base)
        self.cgroup = os.path.join(base, f"{CGROUP_PREFIX}{os.getpid()}")
        os.makedirs(self.cgroup, exist_ok=True)
        self.scratch = tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-")
        self.console = tempfile.TemporaryFile()
        procs = os.path.join(self.cgroup, "cgroup.procs")

        def join_cgroup():
            with open(procs, "w") as f:
                f.write("0")
            os.setsid()

        self.process = subprocess.Popen(
            ["unshare", "--fork", "--pid", "--mount", "--uts", "--ipc", "--net", "--cgroup",
             "sh", "-c", BOOT_SCRIPT, "boot", self.scratch, self.checkout, TARGET_UNIT],
            stdin=subprocess.DEVNULL, stdout=self.console, stderr=subprocess.STDOUT,
            preexec_fn=join_cgroup)
        self.pid = self._child_of(self.process.pid)
        self._wait_booted()

    def _child_of(self, parent, timeout=5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with open(f"/proc/{parent}/task/{parent}/children") as f:
                    children = f.read().split()
                if children:
                    return int(children[0])
            except FileNotFoundError:
                break
            time.sleep(0.01)
        raise SandboxError("unshare started no child:\n" + self.console_text())

    def _wait_booted(self):
        deadline = time.monotonic() + self.boot_timeout
        state = ""
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SandboxError("the sandbox ended while booting:\n" + self.console_text())
            if self._comm() == "systemd":
                state = self.run("systemctl", "is-system-running", check=False, timeout=10).stdout.strip()
                if state in ("running", "degraded"):
                    self.state = state
                    return
            time.sleep(0.1)
        raise SandboxError(f"systemd not up within {self.boot_timeout}s (state {state!r}):\n"
                           + self.console_text())

    def _comm(self):
        try:
            with open(f"/proc/{self.pid}/comm") as f:
                return f.read().strip()
        except OSError:
            return ""

    def close(self):
        """Tears everything down; safe to call twice, and from any exit path.

        Signals (an alarm, SIGINT, SIGTERM) wait until it is done, so that none
        can stop the teardown halfway; they are delivered once it is.
        """
        held = {signal.SIGALRM, signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
        try:
            self._teardown()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    def _teardown(self):
        if self.process is not None:
            if self.process.poll() is None:
                for pid in (self.pid, self.process.pid):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except (ProcessLookupError, TypeError):
                        pass
                try:
                    self.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
            self.process = None
        if self.cgroup is not None:
            remove_cgroup_tree(self.cgroup)
            self.cgroup = None
        if self.scratch is not None:
            # The tmpfs upper layer went with the mount namespace; only its mount point is left.
            try:
                os.rmdir(self.scratch)
            except OSError:
                pass
            self.scratch = None
        for signum, handler in self._old_handlers.items():
            signal.signal(signum, handler)
        self._old_handlers = {}

    def console_text(self):
        if self.console is None:
            return ""
        self.console.seek(0)
        return self.console.read().decode(errors="replace")[-4000:]

    # -- acting inside -----------------------------------------------------

    def run(self, *command, check=True, timeout=60, input=None):
        """Runs a command inside (every namespace, the sandbox's root)."""
        result = subprocess.run(["nsenter", "-t", str(self.pid), "-a", *command],
                                capture_output=True, text=True, timeout=timeout, input=input)
        if check and result.returncode != 0:
            raise SandboxError(f"inside: {shlex.join(command)} exited {result.returncode}:\n"
                               f"{result.stdout}{result.stderr}")
        return result

    def sh(self, script, **kwargs):
        return self.run("sh", "-c", script, **kwargs)

    def path(self, inside):
        """The host's path to a file inside the sandbox's root."""
        return f"/proc/{self.pid}/root{inside}"

    def write(self, inside, text, mode=0o644):
        path = self.path(inside)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, mode)

    def read(self, inside):
        with open(self.path(inside)) as f:
            return f.read()

    def upper_layer(self):
        """The host's path to the overlay's upper layer: every file changed inside
        (a whiteout, a character device 0:0, for each one removed from `/`)."""
        return self.path(UPPER_INSIDE)

    def in_netns(self, function, *args):
        """Calls function(*args) on a thread in the sandbox's network namespace.

        Sockets it creates stay in that namespace and can be used from any thread.
        """
        outcome = {}

        def body():
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                fd = os.open(f"/proc/{self.pid}/ns/net", os.O_RDONLY)
                try:
                    if libc.setns(fd, CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), "setns")
                finally:
                    os.close(fd)
                outcome["value"] = function(*args)
            except BaseException as error:  # handed to the caller's thread
                outcome["error"] = error

        thread = threading.Thread(target=body, daemon=True)
        thread.start()
        thread.join()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

    def socket(self, family=socket.AF_INET):
        """A TCP socket in the sandbox's network namespace."""
        return self.in_netns(socket.socket, family, socket.SOCK_STREAM)
