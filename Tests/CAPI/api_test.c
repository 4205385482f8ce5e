/*
 * Tests of every function in uvbind.h, from C, including misuse. Built and run
 * by Tests/CAPI/run.sh against the installed header and library. Prints one
 * line per failure and ends with "N passed, M failed".
 */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <uvbind.h>

static int passed, failed;

#define CHECK(cond) do { \
    if (cond) passed++; \
    else { failed++; fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond); } \
  } while (0)

#define STARTS_WITH(text, prefix) (strncmp((text), (prefix), strlen(prefix)) == 0)

/* A plain blocking connect: 0, or the errno (ECONNREFUSED: nothing listens). */
static int connect_to(const char *ip, int port) {
  struct sockaddr_in address;
  int fd = socket(AF_INET, SOCK_STREAM, 0), result;
  memset(&address, 0, sizeof address);
  address.sin_family = AF_INET;
  address.sin_port = htons((unsigned short) port);
  inet_pton(AF_INET, ip, &address.sin_addr);
  result = connect(fd, (struct sockaddr *) &address, sizeof address) == 0 ? 0 : errno;
  close(fd);
  return result;
}

static void sleep_ms(long ms) {
  struct timespec delay = { 0, ms * 1000000L };
  nanosleep(&delay, NULL);
}

static int has_ipv6_loopback(void) {
  char line[256];
  int found = 0;
  FILE *file = fopen("/proc/net/if_inet6", "r");
  if (file == NULL) return 0;
  while (fgets(line, sizeof line, file))
    if (STARTS_WITH(line, "00000000000000000000000000000001")) found = 1;
  fclose(file);
  return found;
}

static void test_versions_and_errors(void) {
  CHECK(uvbind_version() == UVBIND_VERSION_HEX);
  CHECK(strcmp(uvbind_version_string(), "0.2.0") == 0);
  CHECK(strcmp(uvbind_err_name(UVBIND_EFORMAT), "UVBIND_EFORMAT") == 0);
  CHECK(strcmp(uvbind_strerror(UVBIND_EFORMAT), "invalid bind interface address") == 0);
  CHECK(strcmp(uvbind_err_name(UVBIND_ECLOSED), "UVBIND_ECLOSED") == 0);
  CHECK(strcmp(uvbind_err_name(UV_EADDRINUSE), "EADDRINUSE") == 0);
  CHECK(strcmp(uvbind_strerror(UV_EADDRINUSE), "address already in use") == 0);
  CHECK(strcmp(uvbind_err_name(-987654), "UNKNOWN") == 0);
  CHECK(strcmp(uvbind_strerror(-987654), "unknown error") == 0);
  CHECK(strcmp(uvbind_err_name(0), "UNKNOWN") == 0);
  /* Static strings: the same pointer every time. */
  CHECK(uvbind_err_name(UVBIND_EPORT) == uvbind_err_name(UVBIND_EPORT));
}

static void test_validate(void) {
  char message[512];
  char tiny[10];
  CHECK(uvbind_validate("127.0.0.1", message, sizeof message) == 0);
  CHECK(message[0] == '\0');
  CHECK(uvbind_validate("999.999.999.999", message, sizeof message) == UVBIND_EFORMAT);
  CHECK(STARTS_WITH(message, "Invalid bind interface address \"999.999.999.999\""));
  CHECK(uvbind_validate("localhost", message, sizeof message) == UVBIND_EIFACE);
  CHECK(STARTS_WITH(message, "Unknown interface \"localhost\""));
  CHECK(uvbind_validate("fe80::1%nosuch0", message, sizeof message) == UVBIND_EZONE);
  CHECK(uvbind_validate("203.0.113.77", message, sizeof message) == UV_EADDRNOTAVAIL);
  CHECK(strstr(message, "not assigned to any interface") != NULL);
  CHECK(uvbind_validate("127.0.0.1,,", message, sizeof message) == UVBIND_EFORMAT);
  CHECK(uvbind_validate("\xff\xfe", message, sizeof message) == UVBIND_EFORMAT);
  CHECK(strstr(message, "not valid UTF-8") != NULL);
  /* Misuse: NULL value; NULL or tiny message buffers. */
  CHECK(uvbind_validate(NULL, message, sizeof message) == UV_EINVAL);
  CHECK(uvbind_validate("999.1.1.1", NULL, 100) == UVBIND_EFORMAT);
  CHECK(uvbind_validate("999.1.1.1", message, 0) == UVBIND_EFORMAT);
  memset(tiny, 'x', sizeof tiny);
  CHECK(uvbind_validate("999.1.1.1", tiny, sizeof tiny) == UVBIND_EFORMAT);
  CHECK(strlen(tiny) == sizeof tiny - 1 && STARTS_WITH("Invalid bind", tiny));
}

static void test_resolve(void) {
  uvbind_address_t addresses[4];
  char message[512];
  size_t count = 4;
  int v6 = has_ipv6_loopback();
  int err = uvbind_resolve(v6 ? "127.0.0.1, ::1" : "127.0.0.1", 4242, addresses, &count,
                           message, sizeof message);
  CHECK(err == 0);
  CHECK(count == (v6 ? 2u : 1u));
  CHECK(strcmp(addresses[0].text, "127.0.0.1:4242") == 0);
  CHECK(addresses[0].ipv6only == 0);
  CHECK(addresses[0].addr.ss_family == AF_INET);
  CHECK(((struct sockaddr_in *) &addresses[0].addr)->sin_port == htons(4242));
  CHECK(((struct sockaddr_in *) &addresses[0].addr)->sin_addr.s_addr == htonl(0x7F000001));
  if (v6) {
    struct in6_addr loopback = IN6ADDR_LOOPBACK_INIT;
    CHECK(strcmp(addresses[1].text, "[::1]:4242") == 0);
    CHECK(addresses[1].ipv6only == 1);
    CHECK(addresses[1].addr.ss_family == AF_INET6);
    CHECK(memcmp(&((struct sockaddr_in6 *) &addresses[1].addr)->sin6_addr, &loopback, sizeof loopback) == 0);
  }
  /* The empty value: both wildcards. */
  count = 4;
  CHECK(uvbind_resolve("", 21118, addresses, &count, message, sizeof message) == 0);
  CHECK(count >= 1 && strcmp(addresses[0].text, "0.0.0.0:21118") == 0);
  /* Too little room: UV_ENOBUFS and the number needed. */
  count = 1;
  CHECK(uvbind_resolve("127.0.0.1,127.0.0.2", 1, addresses, &count, message, sizeof message) == UV_ENOBUFS);
  CHECK(count == 2);
  count = 0;
  CHECK(uvbind_resolve("127.0.0.1", 1, NULL, &count, NULL, 0) == UV_ENOBUFS);
  CHECK(count == 1);
  /* Bad ports and misuse. */
  count = 4;
  CHECK(uvbind_resolve("127.0.0.1", 70000, addresses, &count, message, sizeof message) == UVBIND_EPORT);
  CHECK(STARTS_WITH(message, "Invalid direct access port \"70000\""));
  CHECK(uvbind_resolve("127.0.0.1", -1, addresses, &count, message, sizeof message) == UVBIND_EPORT);
  CHECK(uvbind_resolve("127.0.0.1", 1, addresses, NULL, message, sizeof message) == UV_EINVAL);
  CHECK(uvbind_resolve(NULL, 1, addresses, &count, message, sizeof message) == UV_EINVAL);
}

/* State shared with the callbacks through their data pointers. */
typedef struct {
  int connections;
  int accept_result;
  int closed;
  uv_tcp_t client;
  uv_tcp_t accepted;
  uv_connect_t connect;
  int connect_status;
  struct changes_s *changes;
} state_t;

static void on_connection(uvbind_listeners_t *listeners, uv_stream_t *server, int status, void *data) {
  state_t *state = data;
  state->connections++;
  if (status == 0) {
    uv_tcp_init(server->loop, &state->accepted);
    state->accept_result = uvbind_accept(listeners, server, (uv_stream_t *) &state->accepted);
  }
}

static void on_connect(uv_connect_t *req, int status) {
  ((state_t *) req->data)->connect_status = status;
}

static void on_closed(void *data) {
  ((state_t *) data)->closed++;
}

static void count_handle(uv_handle_t *handle, void *arg) {
  (void) handle;
  (*(int *) arg)++;
}

static int open_handles(uv_loop_t *loop) {
  int count = 0;
  uv_walk(loop, count_handle, &count);
  return count;
}

static void test_listen_accept_close(void) {
  uv_loop_t loop;
  uvbind_listeners_t *listeners = (uvbind_listeners_t *) &loop; /* must be reset to NULL */
  uvbind_address_t address;
  struct sockaddr_in target;
  char message[512];
  state_t state;
  int i;

  memset(&state, 0, sizeof state);
  uv_loop_init(&loop);

  /* Misuse first: every NULL is UV_EINVAL, and *listeners is NULL after. */
  CHECK(uvbind_listen(NULL, &loop, "127.0.0.1", 0, 0, on_connection, &state, message, sizeof message) == UV_EINVAL);
  CHECK(uvbind_listen(&listeners, NULL, "127.0.0.1", 0, 0, on_connection, &state, message, sizeof message) == UV_EINVAL);
  CHECK(listeners == NULL);
  CHECK(uvbind_listen(&listeners, &loop, NULL, 0, 0, on_connection, &state, message, sizeof message) == UV_EINVAL);
  CHECK(uvbind_listen(&listeners, &loop, "127.0.0.1", 0, 0, NULL, &state, message, sizeof message) == UV_EINVAL);
  CHECK(uvbind_listen(&listeners, &loop, "127.0.0.1", 65536, 0, on_connection, &state, message, sizeof message) == UVBIND_EPORT);
  CHECK(uvbind_listen(&listeners, &loop, "not an address", 0, 0, on_connection, &state, message, sizeof message) == UVBIND_EFORMAT);
  CHECK(listeners == NULL);
  CHECK(open_handles(&loop) == 0);

  /* A real listener on 127.0.0.1 with a kernel-chosen port. */
  CHECK(uvbind_listen(&listeners, &loop, "127.0.0.1", 0, 16, on_connection, &state, message, sizeof message) == 0);
  CHECK(listeners != NULL);
  CHECK(uvbind_listeners_count(listeners) == 1);
  CHECK(uvbind_listeners_address(listeners, 0, &address) == 0);
  CHECK(STARTS_WITH(address.text, "127.0.0.1:"));
  CHECK(((struct sockaddr_in *) &address.addr)->sin_port != 0);
  CHECK(uvbind_listeners_address(listeners, 1, &address) == UV_EINVAL);
  CHECK(uvbind_listeners_address(listeners, 0, NULL) == UV_EINVAL);
  CHECK(uvbind_listeners_stream(listeners, 0) != NULL);
  CHECK(uvbind_listeners_stream(listeners, 5) == NULL);
  CHECK(uvbind_listeners_count(NULL) == 0);

  /* A libuv client on the same loop connects; the callback accepts. */
  memcpy(&target, &address.addr, sizeof target);
  uv_tcp_init(&loop, &state.client);
  state.connect.data = &state;
  state.connect_status = 1;
  uv_tcp_connect(&state.connect, &state.client, (struct sockaddr *) &target, on_connect);
  for (i = 0; i < 200 && (state.connections == 0 || state.connect_status == 1); i++)
    uv_run(&loop, UV_RUN_ONCE);
  CHECK(state.connect_status == 0);
  CHECK(state.connections == 1);
  CHECK(state.accept_result == 0);
  /* Clients uv_accept would assert on: not a stream handle, or another loop's. */
  {
    uv_loop_t other;
    uv_tcp_t foreign, zeroed;
    memset(&zeroed, 0, sizeof zeroed);
    uv_loop_init(&other);
    uv_tcp_init(&other, &foreign);
    CHECK(uvbind_accept(listeners, uvbind_listeners_stream(listeners, 0), (uv_stream_t *) &zeroed) == UV_EINVAL);
    CHECK(uvbind_accept(listeners, uvbind_listeners_stream(listeners, 0), (uv_stream_t *) &foreign) == UV_EINVAL);
    uv_close((uv_handle_t *) &foreign, NULL);
    uv_run(&other, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(&other) == 0);
  }
  /* Accepting from a stream that is not one of ours. */
  CHECK(uvbind_accept(listeners, (uv_stream_t *) &state.client, (uv_stream_t *) &state.client) == UV_EINVAL);
  CHECK(uvbind_accept(listeners, NULL, (uv_stream_t *) &state.client) == UV_EINVAL);

  /* Close: the socket goes at once; a second close while closing is an error. */
  CHECK(uvbind_close(listeners, on_closed, &state) == 0);
  CHECK(connect_to("127.0.0.1", ntohs(target.sin_port)) == ECONNREFUSED);
  CHECK(uvbind_close(listeners, on_closed, &state) == UVBIND_ECLOSED);
  CHECK(uvbind_listeners_address(listeners, 0, &address) == UVBIND_ECLOSED);
  CHECK(uvbind_accept(listeners, uvbind_listeners_stream(listeners, 0), (uv_stream_t *) &state.client) == UVBIND_ECLOSED);
  CHECK(state.closed == 0);
  uv_close((uv_handle_t *) &state.client, NULL);
  uv_close((uv_handle_t *) &state.accepted, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(state.closed == 1);
  /* After the close callback the pointer is gone: a defined error, not a crash. */
  CHECK(uvbind_close(listeners, on_closed, &state) == UV_EINVAL);
  CHECK(uvbind_listeners_count(listeners) == 0);
  CHECK(uvbind_close(NULL, NULL, NULL) == UV_EINVAL);
  CHECK(uv_loop_close(&loop) == 0);
}

static void test_all_or_nothing(void) {
  uv_loop_t loop;
  uv_tcp_t blocker;
  struct sockaddr_in address;
  int length = sizeof address;
  uvbind_listeners_t *listeners = NULL;
  char message[512];
  state_t state;
  int port;

  memset(&state, 0, sizeof state);
  uv_loop_init(&loop);
  /* Take 127.0.0.2:P with a plain libuv listener. */
  uv_tcp_init(&loop, &blocker);
  uv_ip4_addr("127.0.0.2", 0, &address);
  uv_tcp_bind(&blocker, (struct sockaddr *) &address, 0);
  uv_listen((uv_stream_t *) &blocker, 1, NULL);
  uv_tcp_getsockname(&blocker, (struct sockaddr *) &address, &length);
  port = ntohs(address.sin_port);

  /* 127.0.0.1:P opens first, 127.0.0.2:P fails: nothing may stay open. */
  CHECK(uvbind_listen(&listeners, &loop, "127.0.0.1,127.0.0.2", port, 0, on_connection, &state,
                      message, sizeof message) == UV_EADDRINUSE);
  CHECK(listeners == NULL);
  CHECK(strstr(message, "Cannot listen on 127.0.0.2:") == message);
  CHECK(connect_to("127.0.0.1", port) == ECONNREFUSED);
  uv_close((uv_handle_t *) &blocker, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(open_handles(&loop) == 0);
  CHECK(uv_loop_close(&loop) == 0);
}

/* What uvbind_follow's change callback saw. */
typedef struct changes_s {
  int listening, stopped, waiting, failed, resync;
  int last_port;
  char last_address[UVBIND_ADDRESS_TEXT_SIZE];
  char last_element[64];
  char last_message[256];
  uvbind_listeners_t *seen;
} changes_t;

static void on_change(uvbind_listeners_t *listeners, const uvbind_change_t *change, void *data) {
  struct changes_s *changes = ((state_t *) data)->changes;
  changes->seen = listeners;
  snprintf(changes->last_message, sizeof changes->last_message, "%s", change->message);
  switch (change->type) {
  case UVBIND_LISTENING: changes->listening++; break;
  case UVBIND_STOPPED: changes->stopped++; break;
  case UVBIND_WAITING:
    changes->waiting++;
    snprintf(changes->last_element, sizeof changes->last_element, "%s", change->element);
    break;
  case UVBIND_FAILED: changes->failed++; break;
  case UVBIND_RESYNC: changes->resync++; break;
  }
  if (change->address != NULL) {
    snprintf(changes->last_address, sizeof changes->last_address, "%s", change->address->text);
    changes->last_port = ntohs(((const struct sockaddr_in *) &change->address->addr)->sin_port);
  }
}

/* Asks about the listeners from inside the first callbacks, then closes them there. */
static void on_change_then_close(uvbind_listeners_t *listeners, const uvbind_change_t *change, void *data) {
  state_t *state = data;
  uvbind_address_t address;
  if (change->type != UVBIND_LISTENING) return;
  state->connections = (int) uvbind_listeners_count(listeners);
  state->accept_result = uvbind_listeners_address(listeners, 0, &address);
  CHECK(uvbind_close(listeners, on_closed, state) == 0);
}

static void test_follow_closed_from_its_first_callback(void) {
  uv_loop_t loop;
  uvbind_listeners_t *listeners = NULL;
  state_t state;
  memset(&state, 0, sizeof state);
  state.accept_result = -1;
  uv_loop_init(&loop);
  CHECK(uvbind_follow(&listeners, &loop, "127.0.0.1", 0, 0, 0, on_connection, on_change_then_close, &state,
                      NULL, 0) == 0);
  CHECK(state.connections == 1 && state.accept_result == 0);
  CHECK(uvbind_close(listeners, NULL, NULL) == UVBIND_ECLOSED);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(state.closed == 1);
  CHECK(uvbind_listeners_count(listeners) == 0);
  CHECK(open_handles(&loop) == 0);
  CHECK(uv_loop_close(&loop) == 0);
}

static void test_follow_misuse(void) {
  uv_loop_t loop;
  uvbind_listeners_t *listeners = (uvbind_listeners_t *) &loop;
  char message[512];
  state_t state;
  memset(&state, 0, sizeof state);
  uv_loop_init(&loop);
  /* Syntax fails at once, whatever the order of the elements. */
  CHECK(uvbind_follow(&listeners, &loop, "10.0.0.1,::1%lo", 0, 0, 0, on_connection, on_change, &state,
                      message, sizeof message) == UVBIND_EFORMAT);
  CHECK(listeners == NULL);
  CHECK(uvbind_follow(&listeners, &loop, "::1%lo,10.0.0.1", 0, 0, 0, on_connection, on_change, &state,
                      message, sizeof message) == UVBIND_EFORMAT);
  /* A wildcard cannot be bound to a device. */
  CHECK(uvbind_follow(&listeners, &loop, "", 0, 0, UVBIND_FOLLOW_BIND_TO_DEVICE, on_connection, on_change,
                      &state, message, sizeof message) == UVBIND_EFORMAT);
  CHECK(strstr(message, "bind-to-device") != NULL);
  CHECK(uvbind_follow(&listeners, &loop, "lo", 0, 0, 0x80, on_connection, on_change, &state,
                      message, sizeof message) == UV_EINVAL);
  CHECK(uvbind_follow(&listeners, &loop, "lo", 70000, 0, 0, on_connection, on_change, &state,
                      message, sizeof message) == UVBIND_EPORT);
  CHECK(uvbind_follow(&listeners, &loop, "lo", 0, 0, 0, NULL, on_change, &state,
                      message, sizeof message) == UV_EINVAL);
  CHECK(uvbind_follow(NULL, &loop, "lo", 0, 0, 0, on_connection, on_change, &state, NULL, 0) == UV_EINVAL);
  CHECK(listeners == NULL);
  uv_run(&loop, UV_RUN_NOWAIT);
  CHECK(open_handles(&loop) == 0);
  CHECK(uv_loop_close(&loop) == 0);
}

/* In the host's namespace: an element that is missing waits, the rest listens. */
static void test_follow_waits_for_what_is_missing(void) {
  uv_loop_t loop;
  uvbind_listeners_t *listeners = NULL;
  uvbind_address_t address;
  char message[512];
  changes_t changes;
  state_t state;
  int port, spins;
  memset(&state, 0, sizeof state);
  memset(&changes, 0, sizeof changes);
  state.changes = &changes;
  uv_loop_init(&loop);
  CHECK(uvbind_follow(&listeners, &loop, "127.0.0.1, nosuch0", 0, 0, 0, on_connection, on_change, &state,
                      message, sizeof message) == 0);
  CHECK(listeners != NULL && changes.seen == listeners);
  CHECK(changes.waiting == 1 && strcmp(changes.last_element, "nosuch0") == 0);
  CHECK(changes.listening == 1);
  CHECK(uvbind_listeners_count(listeners) == 1);
  CHECK(uvbind_listeners_address(listeners, 0, &address) == 0);
  port = ntohs(((struct sockaddr_in *) &address.addr)->sin_port);
  CHECK(port != 0 && port == changes.last_port);
  CHECK(STARTS_WITH(changes.last_message, "listening on 127.0.0.1:"));
  CHECK(connect_to("127.0.0.1", port) == 0);
  for (spins = 0; spins < 200 && state.connections == 0; spins++) {
    uv_run(&loop, UV_RUN_NOWAIT);
    sleep_ms(5);
  }
  CHECK(state.connections == 1 && state.accept_result == 0);
  CHECK(connect_to("127.0.0.2", port) == ECONNREFUSED);
  if (state.connections) uv_close((uv_handle_t *) &state.accepted, NULL);
  CHECK(uvbind_close(listeners, on_closed, &state) == 0);
  CHECK(uvbind_close(listeners, on_closed, &state) == UVBIND_ECLOSED);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(state.closed == 1);
  CHECK(open_handles(&loop) == 0);
  CHECK(uv_loop_close(&loop) == 0);
}

/* Runs the loop until `done` is true or about 5 s pass. */
static int run_until(uv_loop_t *loop, const int *counter, int target) {
  int spins;
  for (spins = 0; spins < 2500 && *counter < target; spins++) {
    uv_run(loop, UV_RUN_NOWAIT);
    sleep_ms(2);
  }
  return *counter >= target;
}

/* Only in a network namespace of its own (run.sh runs it under unshare -n):
 * an interface that comes later, its address going and coming back. */
static void test_follow_in_namespace(void) {
  uv_loop_t loop;
  uvbind_listeners_t *listeners = NULL;
  char message[512];
  changes_t changes;
  state_t state;
  memset(&state, 0, sizeof state);
  memset(&changes, 0, sizeof changes);
  state.changes = &changes;
  uv_loop_init(&loop);
  CHECK(system("ip link set lo up") == 0);
  CHECK(uvbind_follow(&listeners, &loop, "vpn0", 21118, 0, 0, on_connection, on_change, &state,
                      message, sizeof message) == 0);
  CHECK(uvbind_listeners_count(listeners) == 0);
  CHECK(changes.waiting == 1 && strcmp(changes.last_element, "vpn0") == 0);
  CHECK(system("ip link add vpn0 type veth peer name vpn0p && ip link set vpn0 addrgenmode none"
               " && ip link set vpn0p up && ip link set vpn0 up"
               " && ip addr add 198.51.100.7/24 dev vpn0") == 0);
  CHECK(run_until(&loop, &changes.listening, 1));
  CHECK(strcmp(changes.last_address, "198.51.100.7:21118") == 0);
  CHECK(uvbind_listeners_count(listeners) == 1);
  CHECK(connect_to("198.51.100.7", 21118) == 0);
  CHECK(run_until(&loop, &state.connections, 1));
  if (state.connections) uv_close((uv_handle_t *) &state.accepted, NULL);
  CHECK(system("ip addr del 198.51.100.7/24 dev vpn0") == 0);
  CHECK(run_until(&loop, &changes.stopped, 1));
  CHECK(strcmp(changes.last_message, "stopped listening on 198.51.100.7:21118 (address removed)") == 0);
  CHECK(uvbind_listeners_count(listeners) == 0);
  CHECK(connect_to("198.51.100.7", 21118) != 0);
  CHECK(system("ip addr add 198.51.100.7/24 dev vpn0") == 0);
  CHECK(run_until(&loop, &changes.listening, 2));
  CHECK(changes.failed == 0);
  CHECK(uvbind_close(listeners, on_closed, &state) == 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(state.closed == 1);
  CHECK(uv_loop_close(&loop) == 0);
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "follow-in-namespace") == 0) {
    test_follow_in_namespace();
    printf("c-api follow (namespace): %d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
  }
  test_versions_and_errors();
  test_validate();
  test_resolve();
  test_listen_accept_close();
  test_all_or_nothing();
  test_follow_misuse();
  test_follow_waits_for_what_is_missing();
  test_follow_closed_from_its_first_callback();
  printf("c-api: %d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
