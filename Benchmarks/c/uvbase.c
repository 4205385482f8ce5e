/*
 * uvbase: the "what libuv alone can do" reference for directd's benchmarks.
 *
 *   uvbase LISTEN-IP PORT                 echo
 *   uvbase LISTEN-IP PORT UPSTREAM-IP UPSTREAM-PORT   relay
 *
 * The same behaviour as directd, in plain C: 64 KiB read buffers from a pool,
 * each read offered to the other side with uv_try_write and queued from the
 * same buffer if the socket does not take it all; reading stops while more than
 * 1 MiB is queued towards the other side and resumes at half; EOF becomes a
 * shutdown after the queued bytes; an error resets both sides; TCP_NODELAY on
 * both; the upstream is read only once connected. It prints "ready" when it
 * listens and exits on SIGTERM.
 */
#define _POSIX_C_SOURCE 200809L
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define CHUNK (64 * 1024)
#define QUEUE_LIMIT (1 << 20)

typedef struct chunk_s {
  uv_write_t req;
  struct chunk_s *next;
  char data[CHUNK];
} chunk_t;

static chunk_t *pool;
static int pooled;

static chunk_t *chunk_take(void) {
  chunk_t *c = pool;
  if (c) { pool = c->next; pooled--; return c; }
  return malloc(sizeof *c);
}

static void chunk_give(chunk_t *c) {
  if (pooled >= 256) { free(c); return; }
  c->next = pool; pool = c; pooled++;
}

typedef struct session_s session_t;

typedef struct {
  session_t *session;
  uv_stream_t *source, *sink;
  int paused, finished;
  uv_shutdown_t shutdown;
} flow_t;

struct session_s {
  uv_tcp_t client, upstream;
  int has_upstream, closed, handles;
  flow_t flows[2];
  int nflows;
  uv_connect_t connect;
};

static struct sockaddr_storage upstream_addr;
static int relay;

static void on_handle_closed(uv_handle_t *h) {
  session_t *s = h->data;
  if (--s->handles == 0) free(s);
}

/* A reset (RST) on errors, as directd does; a plain close otherwise. */
static void close_handle(uv_tcp_t *h, int reset) {
  if (!reset || uv_tcp_close_reset(h, on_handle_closed) != 0)
    uv_close((uv_handle_t *) h, on_handle_closed);
}

static void session_close(session_t *s, int reset) {
  if (s->closed) return;
  s->closed = 1;
  close_handle(&s->client, reset);
  if (s->has_upstream) close_handle(&s->upstream, reset);
}

static flow_t *flow_reading(session_t *s, uv_stream_t *stream) {
  return s->nflows == 1 || s->flows[0].source == stream ? &s->flows[0] : &s->flows[1];
}

static flow_t *flow_writing(session_t *s, uv_stream_t *stream) {
  return s->nflows == 1 || s->flows[0].sink == stream ? &s->flows[0] : &s->flows[1];
}

static void on_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf) {
  chunk_t *c = chunk_take();
  (void) h; (void) size;
  /* No memory: libuv reports UV_ENOBUFS to on_read, which closes the session. */
  *buf = c ? uv_buf_init(c->data, CHUNK) : uv_buf_init(NULL, 0);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

static int flow_start(flow_t *f) {
  return uv_read_start(f->source, on_alloc, on_read);
}

static void on_write(uv_write_t *req, int status) {
  chunk_t *c = (chunk_t *) req;
  session_t *s = req->data;
  flow_t *f = flow_writing(s, req->handle);
  chunk_give(c);
  if (status < 0) { if (status != UV_ECANCELED) session_close(s, 1); return; }
  if (f->paused && !s->closed && uv_stream_get_write_queue_size(f->sink) <= QUEUE_LIMIT / 2) {
    f->paused = 0;
    if (flow_start(f) < 0) session_close(s, 1);
  }
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  flow_t *f = req->data;
  session_t *s = f->session;
  int i, done = 1;
  f->finished = 1;
  if (status < 0) { if (status != UV_ECANCELED) session_close(s, 1); return; }
  for (i = 0; i < s->nflows; i++) done &= s->flows[i].finished;
  if (done) session_close(s, 0);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  session_t *s = stream->data;
  flow_t *f = flow_reading(s, stream);
  chunk_t *c = buf->base ? (chunk_t *) (buf->base - offsetof(chunk_t, data)) : NULL;
  uv_buf_t out;
  int sent;
  if (nread <= 0) {
    if (c) chunk_give(c);
    if (nread == UV_EOF) {
      f->shutdown.data = f;
      if (uv_shutdown(&f->shutdown, f->sink, on_shutdown) < 0) session_close(s, 1);
    } else if (nread < 0) {
      session_close(s, 1);
    }
    return;
  }
  out = uv_buf_init(c->data, (unsigned int) nread);
  sent = uv_try_write(f->sink, &out, 1);
  if (sent == nread) { chunk_give(c); return; }
  if (sent < 0 && sent != UV_EAGAIN) { chunk_give(c); session_close(s, 1); return; }
  if (sent > 0) out = uv_buf_init(c->data + sent, (unsigned int) (nread - sent));
  c->req.data = s;
  if (uv_write(&c->req, f->sink, &out, 1, on_write) < 0) { chunk_give(c); session_close(s, 1); return; }
  if (uv_stream_get_write_queue_size(f->sink) > QUEUE_LIMIT && !f->paused) {
    f->paused = 1;
    uv_read_stop(f->source);
  }
}

static void on_connect(uv_connect_t *req, int status) {
  session_t *s = req->data;
  if (s->closed) return;
  if (status < 0) { session_close(s, 0); return; }
  uv_tcp_nodelay(&s->client, 1);
  uv_tcp_nodelay(&s->upstream, 1);
  s->nflows = 2;
  s->flows[0] = (flow_t) { s, (uv_stream_t *) &s->client, (uv_stream_t *) &s->upstream, 0, 0, {0} };
  s->flows[1] = (flow_t) { s, (uv_stream_t *) &s->upstream, (uv_stream_t *) &s->client, 0, 0, {0} };
  if (flow_start(&s->flows[0]) < 0 || flow_start(&s->flows[1]) < 0) session_close(s, 1);
}

static void on_connection(uv_stream_t *server, int status) {
  session_t *s;
  if (status < 0) return;
  s = calloc(1, sizeof *s);
  if (s == NULL || uv_tcp_init(server->loop, &s->client) < 0) { free(s); return; }
  s->client.data = s;
  s->handles = 1;
  if (uv_accept(server, (uv_stream_t *) &s->client) < 0) { session_close(s, 0); return; }
  if (!relay) {
    uv_tcp_nodelay(&s->client, 1);
    s->nflows = 1;
    s->flows[0] = (flow_t) { s, (uv_stream_t *) &s->client, (uv_stream_t *) &s->client, 0, 0, {0} };
    if (flow_start(&s->flows[0]) < 0) session_close(s, 1);
    return;
  }
  if (uv_tcp_init(server->loop, &s->upstream) < 0) { session_close(s, 0); return; }
  s->upstream.data = s;
  s->has_upstream = 1;
  s->handles = 2;
  s->connect.data = s;
  if (uv_tcp_connect(&s->connect, &s->upstream, (struct sockaddr *) &upstream_addr, on_connect) < 0)
    session_close(s, 0);
}

static void on_signal(uv_signal_t *h, int signum) {
  (void) signum;
  uv_stop(h->loop);
}

static int parse(const char *ip, const char *port, struct sockaddr_storage *out) {
  int p = atoi(port);
  if (strchr(ip, ':')) return uv_ip6_addr(ip, p, (struct sockaddr_in6 *) out);
  return uv_ip4_addr(ip, p, (struct sockaddr_in *) out);
}

int main(int argc, char **argv) {
  uv_loop_t *loop = uv_default_loop();
  struct sockaddr_storage listen_addr;
  uv_tcp_t server;
  uv_signal_t term;
  if (argc != 3 && argc != 5) {
    fprintf(stderr, "usage: %s LISTEN-IP PORT [UPSTREAM-IP UPSTREAM-PORT]\n", argv[0]);
    return 64;
  }
  signal(SIGPIPE, SIG_IGN);
  relay = argc == 5;
  if (parse(argv[1], argv[2], &listen_addr) < 0 || (relay && parse(argv[3], argv[4], &upstream_addr) < 0)) {
    fprintf(stderr, "bad address\n");
    return 64;
  }
  uv_tcp_init(loop, &server);
  if (uv_tcp_bind(&server, (struct sockaddr *) &listen_addr,
                  listen_addr.ss_family == AF_INET6 ? UV_TCP_IPV6ONLY : 0) < 0 ||
      uv_listen((uv_stream_t *) &server, 511, on_connection) < 0) {
    fprintf(stderr, "cannot listen\n");
    return 69;
  }
  uv_signal_init(loop, &term);
  uv_signal_start(&term, on_signal, SIGTERM);
  printf("ready\n");
  fflush(stdout);
  uv_run(loop, UV_RUN_DEFAULT);
  return 0;
}
