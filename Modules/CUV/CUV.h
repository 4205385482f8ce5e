// The C surface UVBind uses: libuv, plus the two libc headers it needs for
// interface indexes (if_nametoindex) that libuv does not wrap.
#ifndef CUV_H
#define CUV_H

#include <uv.h>
#include <net/if.h>
#include <netinet/in.h>

#endif
