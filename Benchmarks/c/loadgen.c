/*
 * loadgen: the load directd's benchmarks need where no packaged tool fits.
 * One libuv loop, loopback only, bounded in count and time.
 *
 *   loadgen pingpong IP PORT CONNECTIONS SECONDS SIZE
 *       CONNECTIONS clients each send SIZE bytes and wait for them back, again
 *       and again, for SECONDS. Prints "roundtrips_per_second N".
 *   loadgen churn IP PORT COUNT CONCURRENCY
 *       COUNT connections, CONCURRENCY at a time: connect, send one byte, read
 *       it back, close. Prints "connections_per_second N failed N".
 *   loadgen hold IP PORT COUNT SECONDS
 *       Opens COUNT connections (200 connecting at a time), exchanges one byte
 *       on each so that each is relayed end to end, prints "held N failed N
 *       pending 0", then holds them until SIGTERM or SECONDS pass. If SECONDS
 *       pass first, it prints the same line with the connections still pending.
 */
#define _POSIX_C_SOURCE 200809L
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

typedef struct {
  uv_tcp_t tcp;
  uv_connect_t connect;
  uv_write_t write;
  char *buffer;
  size_t expected, received;
  int writing, resend; /* the one write request is busy; send again when it frees */
} conn_t;

static uv_loop_t *loop;
static struct sockaddr_storage target;
static char *mode;
static size_t message_size = 1;
static char *message;
static long long roundtrips, completed, failed, started, total, held;
static int concurrency, stopping, reported;
static uv_timer_t timer;
static uv_signal_t term;

static void start_one(void);
static void send_message(conn_t *c);

static void report_held(void) {
  if (reported) return;
  reported = 1;
  printf("held %lld failed %lld pending %lld\n", held, failed, total - held - failed);
  fflush(stdout);
}

static void on_closed(uv_handle_t *h) {
  conn_t *c = h->data;
  free(c->buffer);
  free(c);
  if (strcmp(mode, "churn") == 0) {
    if (started < total) start_one();
    else if (completed + failed == total) uv_stop(loop);
  }
}

static void finish(conn_t *c, int ok) {
  if (ok) completed++; else failed++;
  if (!uv_is_closing((uv_handle_t *) &c->tcp)) uv_close((uv_handle_t *) &c->tcp, on_closed);
}

static void on_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf) {
  conn_t *c = h->data;
  (void) size;
  *buf = uv_buf_init(c->buffer, (unsigned int) message_size);
}


static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  conn_t *c = s->data;
  (void) buf;
  if (nread < 0) { finish(c, 0); return; }
  c->received += (size_t) nread;
  if (c->received < c->expected) return;
  c->received = 0;
  if (strcmp(mode, "pingpong") == 0) {
    roundtrips++;
    if (!stopping) send_message(c);
  } else if (strcmp(mode, "churn") == 0) {
    finish(c, 1);
  } else { /* hold: stay open, stop reading */
    uv_read_stop(s);
    held++;
    if (held + failed == total) report_held();
    else if (started < total) start_one();
  }
}

/* The echo can come back before libuv has run this callback; the request is
 * reused only once it has. */
static void on_write(uv_write_t *req, int status) {
  conn_t *c = req->data;
  c->writing = 0;
  if (status < 0) { finish(c, 0); return; }
  if (c->resend) { c->resend = 0; send_message(c); }
}

static void send_message(conn_t *c) {
  uv_buf_t out = uv_buf_init(message, (unsigned int) message_size);
  c->expected = message_size;
  if (c->writing) { c->resend = 1; return; }
  c->writing = 1;
  c->write.data = c;
  if (uv_write(&c->write, (uv_stream_t *) &c->tcp, &out, 1, on_write) < 0) finish(c, 0);
}

static void on_connect(uv_connect_t *req, int status) {
  conn_t *c = req->data;
  if (status < 0) {
    finish(c, 0);
    if (strcmp(mode, "hold") == 0) {
      if (held + failed == total) report_held();
      else if (started < total) start_one();
    }
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  if (uv_read_start((uv_stream_t *) &c->tcp, on_alloc, on_read) < 0) { finish(c, 0); return; }
  send_message(c);
}

static void start_one(void) {
  conn_t *c = calloc(1, sizeof *c);
  c->buffer = malloc(message_size);
  c->tcp.data = c;
  c->connect.data = c;
  started++;
  uv_tcp_init(loop, &c->tcp);
  if (uv_tcp_connect(&c->connect, &c->tcp, (struct sockaddr *) &target, on_connect) < 0) finish(c, 0);
}

static void on_timer(uv_timer_t *t) {
  (void) t;
  stopping = 1;
  if (strcmp(mode, "hold") == 0) report_held();
  uv_stop(loop);
}

static void on_term(uv_signal_t *s, int signum) {
  (void) s; (void) signum;
  uv_stop(loop);
}

int main(int argc, char **argv) {
  long count, seconds = 0, i;
  uint64_t begin;
  double elapsed;
  if (argc < 6) {
    fprintf(stderr, "usage: loadgen pingpong|churn|hold IP PORT COUNT SECONDS|CONCURRENCY [SIZE]\n");
    return 64;
  }
  signal(SIGPIPE, SIG_IGN);
  loop = uv_default_loop();
  mode = argv[1];
  if ((strchr(argv[2], ':') ? uv_ip6_addr(argv[2], atoi(argv[3]), (struct sockaddr_in6 *) &target)
                            : uv_ip4_addr(argv[2], atoi(argv[3]), (struct sockaddr_in *) &target)) < 0) {
    fprintf(stderr, "bad address\n");
    return 64;
  }
  count = atol(argv[4]);
  total = count;
  if (strcmp(mode, "pingpong") == 0) {
    seconds = atol(argv[5]);
    message_size = argc > 6 ? (size_t) atol(argv[6]) : 64;
  } else if (strcmp(mode, "churn") == 0) {
    concurrency = atoi(argv[5]);
  } else if (strcmp(mode, "hold") == 0) {
    seconds = atol(argv[5]);
    concurrency = 200;
  } else {
    fprintf(stderr, "unknown mode %s\n", mode);
    return 64;
  }
  message = malloc(message_size);
  memset(message, 'x', message_size);
  uv_signal_init(loop, &term);
  uv_signal_start(&term, on_term, SIGTERM);
  uv_unref((uv_handle_t *) &term);
  uv_timer_init(loop, &timer);
  if (seconds > 0) uv_timer_start(&timer, on_timer, (uint64_t) seconds * 1000, 0);
  begin = uv_hrtime();
  if (strcmp(mode, "pingpong") == 0) {
    for (i = 0; i < count; i++) start_one();
  } else {
    for (i = 0; i < concurrency && i < count; i++) start_one();
  }
  if (strcmp(mode, "hold") == 0) uv_ref((uv_handle_t *) &term);
  uv_run(loop, UV_RUN_DEFAULT);
  elapsed = (double) (uv_hrtime() - begin) / 1e9;
  if (strcmp(mode, "pingpong") == 0)
    printf("roundtrips_per_second %.0f failed %lld\n", (double) roundtrips / elapsed, failed);
  else if (strcmp(mode, "churn") == 0)
    printf("connections_per_second %.0f failed %lld\n", (double) completed / elapsed, failed);
  return 0;
}
