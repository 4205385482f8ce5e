// The C surface UVBind and directd use: libuv, plus the libc headers for what
// libuv does not wrap (interface indexes, malloc_trim, splice, the urgent mark).
#ifndef CUV_H
#define CUV_H

#include <uv.h>
#include <net/if.h>
#include <netinet/in.h>
/* malloc_trim: directd gives freed relay buffers back to the system. */
#include <malloc.h>
/* splice(2) and pipe2(2): directd's zero-copy relay. Both are GNU extensions,
 * declared by <fcntl.h> and <unistd.h> only under _GNU_SOURCE, which Swift's
 * Glibc module is not built with; these are the same prototypes. */
#include <sys/types.h>
#define CUV_SPLICE_F_MOVE 1
#define CUV_SPLICE_F_NONBLOCK 2
#define CUV_F_SETPIPE_SZ 1031
#define CUV_F_GETPIPE_SZ 1032
extern ssize_t splice(int fd_in, __off64_t *off_in, int fd_out, __off64_t *off_out,
                      size_t len, unsigned int flags);
extern int pipe2(int pipefd[2], int flags);

/* Whether a TCP socket's next byte is at the urgent mark (SIOCATMARK): splice(2)
 * stops there for good (EAGAIN, or 0 after FIN) where recv(2) steps over the
 * urgent byte, so the relay copies past it. 1 at the mark, 0 not, -1 on error. */
#include <sys/ioctl.h>
#include <sys/socket.h>
static inline int cuv_at_urgent_mark(int fd) {
  int mark = 0;
  return ioctl(fd, SIOCATMARK, &mark) < 0 ? -1 : (mark != 0);
}

/* memfd_create(2) and file seals: directd's upgrade hands its state to the new
 * process in a sealed memfd. GNU extensions, as splice above. */
#define CUV_MFD_CLOEXEC 1U
#define CUV_MFD_ALLOW_SEALING 2U
#define CUV_F_ADD_SEALS 1033
#define CUV_F_GET_SEALS 1034
#define CUV_F_SEAL_SEAL 1
#define CUV_F_SEAL_SHRINK 2
#define CUV_F_SEAL_GROW 4
#define CUV_F_SEAL_WRITE 8
extern int memfd_create(const char *name, unsigned int flags);

/* What an in-place upgrade carries of a stream's libuv write queue: the bytes
 * queued with uv_write and not yet written, in order. libuv keeps each pending
 * request's unwritten part as bufs[write_index..nbufs) (advanced in place after
 * a partial write), on the stream's write_queue; requests written in full have
 * left it. Both queue layouts (void* [2] before 1.46, struct uv__queue after)
 * start with the next pointer. Copies at most `capacity` bytes into `out` and
 * returns the total, which the caller checks against
 * uv_stream_get_write_queue_size: a mismatch means the layout is not what this
 * reads, and the session is not handed over. */
#include <stddef.h>
#include <string.h>
static inline size_t cuv_stream_unsent(const uv_stream_t *stream, char *out, size_t capacity) {
  void *const *head = (void *const *)&stream->write_queue;
  size_t total = 0;
  for (void *const *node = (void *const *)head[0]; node != head; node = (void *const *)node[0]) {
    const uv_write_t *req = (const uv_write_t *)((const char *)node - offsetof(uv_write_t, queue));
    for (unsigned int i = req->write_index; i < req->nbufs; i++) {
      size_t length = req->bufs[i].len;
      if (total + length <= capacity) memcpy(out + total, req->bufs[i].base, length);
      total += length;
    }
  }
  return total;
}

/* A connection libuv accepted for a listener but the server has not taken
 * with uv_accept yet (directd leaves it there while descriptors are short;
 * libuv then stops watching the listener): its descriptor, or -1. An upgrade
 * hands it over with the listener, so that it is not lost. */
static inline int cuv_stream_accepted_fd(const uv_stream_t *stream) {
  return stream->accepted_fd;
}

#endif
