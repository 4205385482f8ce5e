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
 * - Threading: call uvbind_listen, uvbind_accept, uvbind_listeners_* and
 *   uvbind_close only on the thread that runs the loop, as with libuv itself.
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
#define UVBIND_VERSION_MINOR 1
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
/* "0.1.0". */
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

#ifdef __cplusplus
}
#endif
#endif /* UVBIND_H */
