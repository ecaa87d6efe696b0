#define _GNU_SOURCE
#include <errno.h>
#include <unistd.h>
#include <sys/syscall.h>
#include "CUring.h"

int CUring_pin_current_thread(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

int CUring_pipe2(int fds[2], int flags) {
    return pipe2(fds, flags) == 0 ? 0 : -errno;
}

int CUring_pidfd_open(pid_t pid) {
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
    long fd = syscall(SYS_pidfd_open, pid, 0);
    return fd >= 0 ? (int)fd : -errno;
}

extern void __asan_poison_memory_region(void const volatile *address, size_t size) __attribute__((weak));
extern void __asan_unpoison_memory_region(void const volatile *address, size_t size) __attribute__((weak));

void CUring_asan_poison(const void *address, size_t count) {
    if (__asan_poison_memory_region) __asan_poison_memory_region(address, count);
}

void CUring_asan_unpoison(const void *address, size_t count) {
    if (__asan_unpoison_memory_region) __asan_unpoison_memory_region(address, count);
}
