// The C surface UVBind and directd use: libuv, plus the libc headers for what
// libuv does not wrap (interface indexes, malloc_trim).
#ifndef CUV_H
#define CUV_H

#include <uv.h>
#include <net/if.h>
#include <netinet/in.h>
/* malloc_trim: directd gives freed relay buffers back to the system. */
#include <malloc.h>

#endif
