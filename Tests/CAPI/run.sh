#!/usr/bin/env bash
# The C API as a C host meets it: install the library into a temporary prefix,
# build the API tests and the example host with nothing but pkg-config, run
# them, and run the host under valgrind. Ends with "c-api host: N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/../.."

passed=0 failed=0
pass() { passed=$((passed + 1)); }
fail() { failed=$((failed + 1)); echo "FAIL: $*" >&2; }
check() { local what=$1; shift; if "$@"; then pass; else fail "$what"; fi; }

prefix=$(mktemp -d /tmp/uvbind-prefix.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null; done
  rm -rf "$prefix"
}
trap cleanup EXIT

make -s install-lib PREFIX="$prefix" >/dev/null || { echo "FAIL: make install-lib" >&2; exit 1; }
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
# Run as a C host would, with no Swift toolchain libraries on the search path.
export LD_LIBRARY_PATH="$prefix/lib"

flags=(-Wall -Wextra -Werror -std=c11)
check "pkg-config knows uvbind" pkg-config --exists uvbind
check "compile the API tests" cc "${flags[@]}" Tests/CAPI/api_test.c $(pkg-config --cflags --libs uvbind) -o "$prefix/api_test"
check "compile the example host" cc "${flags[@]}" Examples/c-host/uvbind-echo.c $(pkg-config --cflags --libs uvbind) -o "$prefix/uvbind-echo"

# The library carries its own Swift runtime: no libswift* needed, nothing missing.
libs=$(ldd "$prefix/lib/libUVBind.so")
check "libUVBind.so needs no Swift runtime" bash -c "! grep -q libswift <<<'$libs'"
check "libUVBind.so finds every library" bash -c "! grep -q 'not found' <<<'$libs'"
check "libUVBind.so has its soname" bash -c "readelf -d '$prefix/lib/libUVBind.so' | grep -q 'SONAME.*libUVBind.so.0'"
check "the host links libUVBind.so.0" bash -c "ldd '$prefix/uvbind-echo' | grep -q 'libUVBind.so.0 => $prefix/lib/libUVBind.so.0'"

# Every API function, from C.
if "$prefix/api_test"; then pass; else fail "api_test"; fi

# uvbind_follow with interfaces that come and go: only in a network namespace
# of the test's own (unshare -n), never the host's; needs root.
if [ "$(id -u)" = 0 ] && unshare -n true 2>/dev/null; then
  if unshare -n "$prefix/api_test" follow-in-namespace; then pass; else fail "api_test follow-in-namespace"; fi
else
  echo "c-api: not root or no network namespaces; uvbind_follow namespace test skipped"
fi

has_ipv6=0
grep -q '^00000000000000000000000000000001' /proc/net/if_inet6 2>/dev/null && has_ipv6=1

# echo_through HOST PORT: sends a line and expects it back, with Python as the client.
echo_through() {
  python3 - "$1" "$2" <<'PY'
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5) as s:
    s.sendall(b"hello uvbind\n"); s.shutdown(socket.SHUT_WR)
    data = b""
    while chunk := s.recv(4096):
        data += chunk
sys.exit(0 if data == b"hello uvbind\n" else 1)
PY
}

# refused HOST PORT: true if a connect is refused (nothing listens there).
refused() {
  python3 - "$1" "$2" <<'PY'
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2).close()
except ConnectionRefusedError:
    sys.exit(0)
sys.exit(1)
PY
}

# start_host LOG ARGS...: runs the host in the background, waits for its listeners.
start_host() {
  local log=$1; shift
  "$@" >"$log" 2>&1 &
  host_pid=$!
  pids+=("$host_pid")
  for _ in $(seq 100); do
    grep -q "listening on" "$log" 2>/dev/null && return 0
    kill -0 "$host_pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

stop_host() {  # stop_host: SIGTERM, then the exit status (bounded wait)
  kill -TERM "$host_pid" 2>/dev/null
  for _ in $(seq 300); do kill -0 "$host_pid" 2>/dev/null || break; sleep 0.1; done
  wait "$host_pid"
}

value="127.0.0.1"; [ $has_ipv6 = 1 ] && value="127.0.0.1, ::1"
if start_host "$prefix/host.log" "$prefix/uvbind-echo" "$value" 0; then
  port=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$prefix/host.log")
  check "echo over 127.0.0.1" echo_through 127.0.0.1 "$port"
  [ $has_ipv6 = 1 ] && check "echo over ::1" echo_through ::1 "$port"
  check "127.0.0.2 is not served" refused 127.0.0.2 "$port"
  # Port in use: a second host on the same address and port.
  "$prefix/uvbind-echo" 127.0.0.1 "$port" >"$prefix/busy.log" 2>&1; status=$?
  check "port in use exits 69" test "$status" = 69
  check "port in use says so" grep -q "EADDRINUSE" "$prefix/busy.log"
  stop_host; status=$?
  check "SIGTERM exits 0" test "$status" = 0
else
  fail "the host did not start: $(cat "$prefix/host.log")"
fi

# --follow: an element not there yet waits; the rest is served at once.
if start_host "$prefix/follow.log" "$prefix/uvbind-echo" --follow "127.0.0.1, nosuch0" 0; then
  port=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$prefix/follow.log")
  check "follow: echo over 127.0.0.1" echo_through 127.0.0.1 "$port"
  check "follow: waiting for nosuch0 is printed" grep -q "^waiting for nosuch0 (" "$prefix/follow.log"
  check "follow: 127.0.0.2 is not served" refused 127.0.0.2 "$port"
  stop_host; status=$?
  check "follow: SIGTERM exits 0" test "$status" = 0
else
  fail "the following host did not start: $(cat "$prefix/follow.log")"
fi
out=$("$prefix/uvbind-echo" --follow '::1%lo,nosuch0' 0 2>&1); status=$?
check "follow: a malformed value exits 78" test "$status" = 78

# Invalid values: the precise message and exit code, and no socket.
expect_exit() {  # expect_exit CODE TEXT VALUE PORT
  local out status
  out=$("$prefix/uvbind-echo" "$3" "$4" 2>&1); status=$?
  check "'$3' exits $1" test "$status" = "$1"
  check "'$3' says '$2'" grep -qF "$2" <<<"$out"
}
expect_exit 78 'Invalid bind interface address "999.999.999.999"' 999.999.999.999 0
expect_exit 78 'Unknown interface "localhost"' localhost 0
expect_exit 78 'Unknown zone' 'fe80::1%nosuch0' 0
expect_exit 69 'not assigned to any interface' 203.0.113.77 0
expect_exit 78 'invalid port' 127.0.0.1 65536
out=$("$prefix/uvbind-echo" 2>&1); status=$?
check "no arguments exits 64" test "$status" = 64

# valgrind: open, serve a few connections, close; no leak, no invalid access.
if command -v valgrind >/dev/null; then
  vg=(valgrind --quiet --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite
      --show-leak-kinds=definite)
  if start_host "$prefix/vg.log" "${vg[@]}" "$prefix/uvbind-echo" 127.0.0.1 0; then
    port=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$prefix/vg.log")
    for _ in 1 2 3; do check "echo under valgrind" echo_through 127.0.0.1 "$port"; done
    stop_host; status=$?
    check "valgrind finds no error in the host (status $status)" test "$status" = 0
    [ "$status" = 0 ] || cat "$prefix/vg.log" >&2
  else
    fail "the host did not start under valgrind: $(cat "$prefix/vg.log")"
  fi
  "${vg[@]}" "$prefix/api_test" >"$prefix/vg-api.log" 2>&1; status=$?
  check "valgrind finds no error in the API tests (status $status)" test "$status" = 0
  [ "$status" = 0 ] || cat "$prefix/vg-api.log" >&2
else
  echo "c-api: valgrind not installed; memcheck skipped"
fi

echo "c-api host: $passed passed, $failed failed"
[ "$failed" = 0 ]
