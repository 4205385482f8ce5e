/*
 * uvbind-echo: a libuv echo server in plain C that listens where a bind value
 * says, through UVBind's C API.
 *
 *   cc uvbind-echo.c $(pkg-config --cflags --libs uvbind) -o uvbind-echo
 *   ./uvbind-echo '127.0.0.1, ::1' 0
 *   ./uvbind-echo --follow 'wg0' 21118
 *
 * It prints one "listening on ADDRESS" line per listener and serves until
 * SIGINT or SIGTERM. With --follow (uvbind_follow), interfaces and addresses
 * that are not there yet are waited for, and every change is printed as it
 * happens ("listening on", "stopped listening on", "waiting for"). Exit codes: 0 ok, 64 usage, 78 the bind value or port is
 * invalid, 69 it cannot be served here (address not local, port in use), 77
 * permission denied, 70 anything else.
 */
/* libuv's headers use POSIX types that strict -std=c11 hides. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uvbind.h>

typedef struct {
  uv_tcp_t tcp;
  char buffer[65536];
  uv_write_t write;
  uv_shutdown_t shutdown;
} client_t;

static uvbind_listeners_t *listeners;
static uv_signal_t stop_signals[2];

static void on_client_closed(uv_handle_t *handle) {
  free(handle->data);
}

static void close_client(client_t *client) {
  if (!uv_is_closing((uv_handle_t *) &client->tcp))
    uv_close((uv_handle_t *) &client->tcp, on_client_closed);
}

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf) {
  client_t *client = handle->data;
  (void) suggested;
  *buf = uv_buf_init(client->buffer, sizeof client->buffer);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

/* One buffer per client: reading stops while its echo is being written. */
static void on_written(uv_write_t *req, int status) {
  client_t *client = req->data;
  if (status < 0 || uv_read_start((uv_stream_t *) &client->tcp, on_alloc, on_read) < 0)
    close_client(client);
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  (void) status;
  close_client(req->data);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  client_t *client = stream->data;
  if (nread > 0) {
    uv_buf_t out = uv_buf_init(buf->base, (unsigned int) nread);
    uv_read_stop(stream);
    client->write.data = client;
    if (uv_write(&client->write, stream, &out, 1, on_written) < 0)
      close_client(client);
  } else if (nread == UV_EOF) {
    client->shutdown.data = client;
    if (uv_shutdown(&client->shutdown, stream, on_shutdown) < 0)
      close_client(client);
  } else if (nread < 0) {
    close_client(client);
  }
}

static void on_connection(uvbind_listeners_t *all, uv_stream_t *server, int status, void *data) {
  client_t *client;
  (void) data;
  if (status < 0) {
    fprintf(stderr, "accept failed: %s\n", uvbind_strerror(status));
    return;
  }
  client = calloc(1, sizeof *client);
  if (client == NULL || uv_tcp_init(server->loop, &client->tcp) < 0) {
    free(client);
    return;
  }
  client->tcp.data = client;
  if (uvbind_accept(all, server, (uv_stream_t *) &client->tcp) < 0 ||
      uv_read_start((uv_stream_t *) &client->tcp, on_alloc, on_read) < 0)
    close_client(client);
}

static void close_any(uv_handle_t *handle, void *arg) {
  (void) arg;
  if (!uv_is_closing(handle))
    uv_close(handle, handle->type == UV_TCP ? on_client_closed : NULL);
}

static void on_listeners_closed(void *data) {
  uv_loop_t *loop = data;
  /* The listeners are gone; close the clients and signal watchers too. */
  uv_walk(loop, close_any, NULL);
}

static void on_signal(uv_signal_t *handle, int signum) {
  (void) signum;
  uv_signal_stop(&stop_signals[0]);
  uv_signal_stop(&stop_signals[1]);
  uvbind_close(listeners, on_listeners_closed, handle->loop);
}

/* uvbind_follow's changes: one line each, as UVBind words them. */
static void on_change(uvbind_listeners_t *all, const uvbind_change_t *change, void *data) {
  (void) all;
  (void) data;
  FILE *out = change->type == UVBIND_FAILED || change->type == UVBIND_RESYNC ? stderr : stdout;
  fprintf(out, "%s\n", change->message);
  fflush(out);
}

static int exit_code(int err) {
  switch (err) {
  case UVBIND_EFORMAT: case UVBIND_EIFACE: case UVBIND_EZONE:
  case UVBIND_ELINKLOCAL: case UVBIND_ENOADDR: case UVBIND_EPORT:
    return 78;
  case UV_EADDRINUSE: case UV_EADDRNOTAVAIL: case UV_EAFNOSUPPORT:
    return 69;
  case UV_EACCES: case UV_EPERM:
    return 77;
  default:
    return 70;
  }
}

int main(int argc, char **argv) {
  uv_loop_t *loop = uv_default_loop();
  char message[1024];
  char *end;
  long port;
  size_t i, count;
  int err, follow = 0;

  if (argc == 4 && strcmp(argv[1], "--follow") == 0) {
    follow = 1;
    argv++;
    argc--;
  }
  if (argc != 3) {
    fprintf(stderr, "usage: %s [--follow] BIND-VALUE PORT\n", argv[0]);
    return 64;
  }
  errno = 0;
  port = strtol(argv[2], &end, 10);
  if (*argv[2] == '\0' || *end != '\0' || errno != 0 || port < 0 || port > 65535) {
    fprintf(stderr, "error: invalid port \"%s\": expected 0 to 65535\n", argv[2]);
    return 78;
  }
  signal(SIGPIPE, SIG_IGN);

  if (follow)
    err = uvbind_follow(&listeners, loop, argv[1], (int) port, 0, 0, on_connection, on_change, NULL,
                        message, sizeof message);
  else
    err = uvbind_listen(&listeners, loop, argv[1], (int) port, 0, on_connection, NULL,
                        message, sizeof message);
  if (err < 0) {
    fprintf(stderr, "error: %s (%s)\n", message, uvbind_err_name(err));
    return exit_code(err);
  }
  if (message[0] != '\0')
    fprintf(stderr, "%s\n", message);

  /* Following, the change callback has printed the listeners already. */
  count = follow ? 0 : uvbind_listeners_count(listeners);
  for (i = 0; i < count; i++) {
    uvbind_address_t address;
    if (uvbind_listeners_address(listeners, i, &address) == 0)
      printf("listening on %s\n", address.text);
  }
  fflush(stdout);

  uv_signal_init(loop, &stop_signals[0]);
  uv_signal_init(loop, &stop_signals[1]);
  uv_signal_start(&stop_signals[0], on_signal, SIGINT);
  uv_signal_start(&stop_signals[1], on_signal, SIGTERM);

  uv_run(loop, UV_RUN_DEFAULT);
  err = uv_loop_close(loop);
  if (err < 0) {
    fprintf(stderr, "error: loop still busy at exit: %s\n", uv_strerror(err));
    return 70;
  }
  return 0;
}
