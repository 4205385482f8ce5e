// directd's way to prctl(2) and capset(2)/capget(2): glibc declares prctl and
// syscall variadic, and Swift cannot call a variadic C function. Header-only:
// each wrapper is one call, for the calling thread (Linux keeps capabilities
// and no_new_privs per thread).
#ifndef DIRECTD_CPRIVILEGE_H
#define DIRECTD_CPRIVILEGE_H

#include <linux/capability.h>
#include <stdint.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

/// prctl(option, value, 0, 0, 0): PR_SET_KEEPCAPS, PR_SET_NO_NEW_PRIVS, PR_GET_NO_NEW_PRIVS.
static inline int directd_prctl(int option, unsigned long value) {
    return prctl(option, value, 0UL, 0UL, 0UL);
}

/// Sets the effective and permitted sets to these capabilities (0 to 31; the
/// rest and the inheritable set empty).
static inline int directd_capset(uint32_t effective, uint32_t permitted) {
    struct __user_cap_header_struct header = { _LINUX_CAPABILITY_VERSION_3, 0 };
    struct __user_cap_data_struct data[2] = { { effective, permitted, 0 }, { 0, 0, 0 } };
    return (int)syscall(SYS_capset, &header, data);
}

/// The effective and permitted sets, all 64 bits; -1 on failure.
static inline int directd_capget(uint64_t *effective, uint64_t *permitted) {
    struct __user_cap_header_struct header = { _LINUX_CAPABILITY_VERSION_3, 0 };
    struct __user_cap_data_struct data[2] = { { 0, 0, 0 }, { 0, 0, 0 } };
    int result = (int)syscall(SYS_capget, &header, data);
    if (result != 0) return result;
    *effective = (uint64_t)data[1].effective << 32 | data[0].effective;
    *permitted = (uint64_t)data[1].permitted << 32 | data[0].permitted;
    return 0;
}

#endif
