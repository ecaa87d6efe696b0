// CAllocCounter: counts heap allocations made by the calling thread, for the allocation checks in perf/ and
// Tests/PerfTests. Linking this target replaces malloc/calloc/realloc for the whole process with thin
// wrappers over glibc's __libc_* entry points; counting is per thread, so other threads add no noise.
// Only test and benchmark binaries link it; ringsipd never does.
#ifndef CALLOCCOUNTER_H
#define CALLOCCOUNTER_H

#include <stdint.h>

/// Allocations (malloc, calloc, realloc) made by this thread since it started.
uint64_t CAllocCounter_thread_allocations(void);

#endif
