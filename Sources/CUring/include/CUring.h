// CUring: liburing for Swift, plus the few C calls Swift cannot reach directly.
//
// Order matters: the glibc headers must come before <liburing.h>, or Swift's Clang importer sees two
// definitions of fd_set (one from each module) and the build fails.
#ifndef CURING_H
#define CURING_H

#include <sys/socket.h>
#include <sys/select.h>
#include <sys/uio.h>
#include <sys/types.h>
#include <netinet/in.h>
#include <signal.h>
#include <time.h>
#include <fcntl.h>
#include <sched.h>
#include <pthread.h>
#include <liburing.h>

// CPU_ZERO/CPU_SET are function-like macros, and pthread_setaffinity_np is hidden without _GNU_SOURCE,
// which Swift's Glibc module does not define. Returns 0 or an errno value.
int CUring_pin_current_thread(int cpu);

// pipe2 is hidden without _GNU_SOURCE, and glibc 2.36 has no pidfd_open wrapper (syscall() is variadic).
// Both return the result (0 / a descriptor) or -errno.
int CUring_pipe2(int fds[2], int flags);
int CUring_pidfd_open(pid_t pid);

// AddressSanitizer's manual poisoning, for memory ringsip recycles itself (store blocks on a free list): a read
// of a released block then traps under `make test-asan` like a use after free. The runtime's functions are
// weak references here, so the calls do nothing in a build without the sanitizer.
void CUring_asan_poison(const void *address, size_t count);
void CUring_asan_unpoison(const void *address, size_t count);

// The liburing 2.3 IOSQE_* flags are macros over an enum; Swift imports the enum, not the macros.
// Named here once so Swift reads the same names as the kernel headers.
static const unsigned char CUring_IOSQE_BUFFER_SELECT = IOSQE_BUFFER_SELECT;
static const unsigned char CUring_IOSQE_CQE_SKIP_SUCCESS = IOSQE_CQE_SKIP_SUCCESS;
static const unsigned char CUring_IOSQE_IO_LINK = IOSQE_IO_LINK;

#endif
