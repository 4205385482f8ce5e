/*
 * uvbind.h: listen exactly where the operator said, on a libuv loop you own.
 *
 * UVBind turns a bind-interface value ("", "192.0.2.10", "2001:db8::1",
 * "fe80::1%eth0", "eth0", or a comma-separated list of them) into concrete
 * socket addresses and opens TCP listeners on them, all or nothing, with
 * UV_TCP_IPV6ONLY on every IPv6 listener. It never falls back to a wider
 * address than configured.
 *
 * Conventions, as in libuv:
 * - Every function that can fail returns 0 or a negative error code. libuv's
 *   codes (UV_EADDRINUSE, UV_EADDRNOTAVAIL, UV_EACCES, UV_EAFNOSUPPORT,
 *   UV_EINVAL for NULL or invalid arguments, UV_ENOBUFS for a short buffer...)
 *   pass through unchanged; UVBind adds its own UVBIND_E* codes below for values
 *   refused before any socket exists. uvbind_err_name() and uvbind_strerror()
 *   name any of them.
 * - Functions that take `char *message, size_t message_size` write the precise,
 *   human-readable message for a failure there (what failed, why, what to do),
 *   NUL-terminated and truncated to fit; on success they write the notes, if
 *   any, or an empty string. `message` may be NULL.
 * - Every callback receives the `void *data` given with it.
 * - Threading: call uvbind_listen, uvbind_follow, uvbind_accept,
 *   uvbind_listeners_* and uvbind_close only on the thread that runs the loop,
 *   as with libuv itself.
 *   uvbind_validate, uvbind_resolve and the error functions are safe anywhere.
 * - libuv's headers (and so this one) need POSIX types: with a strict
 *   -std=c11, define _POSIX_C_SOURCE 200809L before any #include.
 * - Resources have an explicit open/close pair: uvbind_listen() then
 *   uvbind_close(); the memory goes after the close callback has run.
 */
#ifndef UVBIND_H
#define UVBIND_H

#include <stddef.h>
#include <sys/socket.h>
#include <uv.h>

#ifdef __cplusplus
extern "C" {
#endif

#define UVBIND_VERSION_MAJOR 0
#define UVBIND_VERSION_MINOR 2
#define UVBIND_VERSION_PATCH 0
#define UVBIND_VERSION_HEX ((UVBIND_VERSION_MAJOR << 16) | \
                            (UVBIND_VERSION_MINOR << 8) | \
                            (UVBIND_VERSION_PATCH))

/* UVBind's own error codes; they do not overlap libuv's. */
#define UVBIND_EFORMAT    (-30001) /* not an IP address, interface name or list of them */
#define UVBIND_EIFACE     (-30002) /* no local interface has that name */
#define UVBIND_EZONE      (-30003) /* an IPv6 zone (%eth0, %2) names no interface */
#define UVBIND_ELINKLOCAL (-30004) /* link-local address on several interfaces, no zone */
#define UVBIND_ENOADDR    (-30005) /* the interface holds no usable address */
#define UVBIND_EPORT      (-30006) /* port outside 0 to 65535 */
#define UVBIND_ECLOSED    (-30007) /* the listeners are already closing or closed */

/* The version this library was built as, UVBIND_VERSION_HEX's form. */
unsigned int uvbind_version(void);
/* "0.2.0". */
const char *uvbind_version_string(void);

/* The symbolic name ("UVBIND_EFORMAT", "EADDRINUSE") and a short description of
 * any code; static strings, never NULL. */
const char *uvbind_err_name(int err);
const char *uvbind_strerror(int err);

/* Room for the printable form of any listen address. */
#define UVBIND_ADDRESS_TEXT_SIZE 80

/* One concrete listen address. */
typedef struct uvbind_address_s {
  struct sockaddr_storage addr; /* sockaddr_in or sockaddr_in6: port and scope id set */
  char text[UVBIND_ADDRESS_TEXT_SIZE]; /* "192.0.2.10:21118", "[fe80::1%eth0]:21118" */
  int ipv6only; /* 1 for IPv6: bound with UV_TCP_IPV6ONLY */
} uvbind_address_t;

/* Checks a bind value against this machine's interfaces, opening nothing.
 * Returns 0, or the code of the first problem with its message. */
int uvbind_validate(const char *value, char *message, size_t message_size);

/* Resolves a bind value and port (0 to 65535; 0 lets the kernel choose at
 * listen time) to the addresses uvbind_listen would open, opening nothing.
 * On entry *count is the capacity of `addresses`; on return it is the number
 * of addresses. If the capacity is too small, returns UV_ENOBUFS with *count
 * set to the number needed. */
int uvbind_resolve(const char *value, int port, uvbind_address_t *addresses,
                   size_t *count, char *message, size_t message_size);

/* Opaque: the listeners of one bind value. */
typedef struct uvbind_listeners_s uvbind_listeners_t;

/* A connection is pending on `server` (status 0), or accepting failed (status
 * < 0). Accept it with uvbind_accept(), or with uv_accept(). Not accepting it
 * pauses that listener until you do (libuv's rule). */
typedef void (*uvbind_connection_cb)(uvbind_listeners_t *listeners,
                                     uv_stream_t *server, int status,
                                     void *data);
/* Every listener is closed and its memory freed; `listeners` is gone after
 * this returns. */
typedef void (*uvbind_close_cb)(void *data);

/* Opens the listeners of a bind value on `loop`: all of them, or none (on any
 * failure, the ones already open are closed before this returns). `backlog`
 * <= 0 means 511. On success *listeners is set; on failure it is NULL. */
int uvbind_listen(uvbind_listeners_t **listeners, uv_loop_t *loop,
                  const char *value, int port, int backlog,
                  uvbind_connection_cb connection_cb, void *data,
                  char *message, size_t message_size);

/* How many listeners are open (0 for NULL). */
size_t uvbind_listeners_count(const uvbind_listeners_t *listeners);

/* The address listener `index` is really bound to, with the kernel's port. */
int uvbind_listeners_address(const uvbind_listeners_t *listeners, size_t index,
                             uvbind_address_t *address);

/* The listening stream of listener `index` (NULL if out of range). */
uv_stream_t *uvbind_listeners_stream(const uvbind_listeners_t *listeners,
                                     size_t index);

/* Accepts a pending connection of `server` into an initialised `client`
 * (uv_tcp_init). Unlike a bare uv_accept() made after the connection callback
 * returned, a failure here does not leave the listener unwatched. */
int uvbind_accept(uvbind_listeners_t *listeners, uv_stream_t *server,
                  uv_stream_t *client);

/* Closes every listener: the sockets close now, the memory after libuv's close
 * callbacks, then `close_cb` (may be NULL) runs with `data`. Closing again
 * while that is under way returns UVBIND_ECLOSED; after the close callback the
 * pointer is invalid, and passing it returns UV_EINVAL. */
int uvbind_close(uvbind_listeners_t *listeners, uvbind_close_cb close_cb,
                 void *data);

/* Following the network ---------------------------------------------------
 *
 * uvbind_follow() is uvbind_listen() for a network that changes after start:
 * a VPN interface that comes up later or is re-created, DHCP renumbering,
 * IPv6 duplicate address detection. It reads the value the same way (a
 * malformed value fails at once with UVBIND_EFORMAT), but an element that names
 * nothing yet (an interface not there, an address not assigned, an IPv6
 * address still tentative) is not an error: it is reported as waiting, and
 * the listeners open on whatever the value names now, possibly nothing.
 *
 * Then it follows the kernel's changes: an rtnetlink socket (link, IPv4 and
 * IPv6 address groups) watched on `loop` with uv_poll; a burst of events is
 * coalesced (15 ms), the interface table is read again, the value resolved
 * again, and the listeners reconciled: new addresses are listened on, the
 * listeners of addresses that left are closed (accepted connections are
 * yours and stay), unchanged listeners are not touched. A bind that fails
 * (EADDRNOTAVAIL, EADDRINUSE) is retried on the next event and on a back-off
 * timer (250 ms doubling to 8 s); lost events (ENOBUFS) cause a full re-read.
 * Zones and interface names follow the NAME across re-creation with a new
 * index. It never listens wider than the value: no wildcard unless the value
 * is empty, 0.0.0.0 or ::.
 *
 * The listeners change over time: uvbind_listeners_count(), _address() and
 * _stream() describe them as they are now; an index is valid until control
 * returns to the loop. uvbind_close() stops following and closes everything. */

/* What changed. */
typedef enum {
  UVBIND_LISTENING = 1, /* a listener opened on `address` */
  UVBIND_STOPPED = 2,   /* the listener on `address` closed (the address left) */
  UVBIND_WAITING = 3,   /* `element` names nothing on this machine yet */
  UVBIND_FAILED = 4,    /* `address` could not be opened now (`status`); retried */
  UVBIND_RESYNC = 5     /* the kernel dropped events; everything was read again */
} uvbind_change_type;

/* One change. Every pointer is valid only during the callback. */
typedef struct uvbind_change_s {
  int type;                        /* a uvbind_change_type */
  const uvbind_address_t *address; /* LISTENING, STOPPED, FAILED; else NULL */
  const char *element;             /* WAITING: the element as written; else NULL */
  int status;                      /* FAILED: the error code; else 0 */
  const char *message;             /* one log line, control characters escaped:
                                      "listening on 192.0.2.10:21118",
                                      "stopped listening on ... (address removed)",
                                      "waiting for wg0 (no interface has that name yet)" */
} uvbind_change_t;

typedef void (*uvbind_change_cb)(uvbind_listeners_t *listeners,
                                 const uvbind_change_t *change, void *data);

/* Flags for uvbind_follow. */
/* Bind each listener (SO_BINDTODEVICE) to the interface that holds its
 * address, or to the named interface: packets for the address that arrive on
 * any other interface are refused. The empty value, 0.0.0.0 and :: name no
 * interface and are refused with UVBIND_EFORMAT. Before Linux 5.7 this needs
 * CAP_NET_RAW (the failure is reported as UVBIND_FAILED with UV_EPERM). */
#define UVBIND_FOLLOW_BIND_TO_DEVICE 1u

/* Opens the listeners of `value` and keeps them following the network until
 * uvbind_close(). `change_cb` (may be NULL) runs for every change, including
 * those of the first pass, which run before this returns (with the same
 * `listeners` pointer it then stores). Returns 0 (even with nothing listening
 * yet), UVBIND_EFORMAT or UVBIND_EPORT for a value or port that can never be
 * right, UV_EINVAL for NULL arguments or unknown flags, or the code of a
 * netlink socket that cannot be opened. */
int uvbind_follow(uvbind_listeners_t **listeners, uv_loop_t *loop,
                  const char *value, int port, int backlog, unsigned int flags,
                  uvbind_connection_cb connection_cb, uvbind_change_cb change_cb,
                  void *data, char *message, size_t message_size);

#ifdef __cplusplus
}
#endif
#endif /* UVBIND_H */
