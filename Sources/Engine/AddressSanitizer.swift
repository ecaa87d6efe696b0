import CUring

/// Marks memory that ringsip recycles itself (a store's free blocks) as unreadable under AddressSanitizer
/// (`make test-asan`), so a view that outlives its block traps at the read instead of returning old bytes.
/// Without the sanitizer both calls do nothing.
public enum AddressSanitizer {
    @inline(__always)
    public static func poison(_ address: UnsafeRawPointer, count: Int) {
        CUring_asan_poison(address, count)
    }

    @inline(__always)
    public static func unpoison(_ address: UnsafeRawPointer, count: Int) {
        CUring_asan_unpoison(address, count)
    }
}
