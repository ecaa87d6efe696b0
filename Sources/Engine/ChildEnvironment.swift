import Glibc

/// The environment a child gets when the caller adds variables: the caller's `NAME=value` entries, then
/// the engine's own `environ` minus the names the caller sets. With a duplicate name getenv takes the first
/// and dash the last, so none may be left.
public enum ChildEnvironment {
    /// How many pointers `merge` writes for `entries` (NUL-separated `NAME=value`s), the closing NULL included.
    public static func capacityNeeded(adding entries: UnsafeRawBufferPointer) -> Int {
        var inherited = 0
        while environ[inherited] != nil { inherited += 1 }
        return inherited + count(entries) + 1
    }

    /// Writes the merged NULL-terminated array into `array`, which holds `capacityNeeded(adding:)` pointers.
    /// The pointers point into `entries` and `environ`: both must outlive the array's use.
    public static func merge(adding entries: UnsafeRawBufferPointer,
                             into array: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) {
        var n = 0
        forEachEntry(entries) { entry in
            array[n] = UnsafeMutablePointer(mutating: entry)
            n += 1
        }
        let added = n
        var i = 0
        while let inherited = environ[i] {
            if !(0..<added).contains(where: { sameName(inherited, array[$0]!) }) {
                array[n] = inherited
                n += 1
            }
            i += 1
        }
        array[n] = nil
    }

    private static func count(_ entries: UnsafeRawBufferPointer) -> Int {
        var n = 0
        forEachEntry(entries) { _ in n += 1 }
        return n
    }

    /// Each non-empty NUL-terminated entry; a last entry without its NUL is skipped (the caller's storage
    /// always ends in one).
    private static func forEachEntry(_ entries: UnsafeRawBufferPointer, _ body: (UnsafePointer<CChar>) -> Void) {
        guard let base = entries.baseAddress else { return }
        var start = 0
        for i in 0..<entries.count where entries[i] == 0 {
            if i > start { body((base + start).assumingMemoryBound(to: CChar.self)) }
            start = i + 1
        }
    }

    /// Whether two `NAME=value` entries name the same variable.
    private static func sameName(_ a: UnsafePointer<CChar>, _ b: UnsafePointer<CChar>) -> Bool {
        var i = 0
        while a[i] == b[i] {
            if a[i] == 0 || a[i] == 61 { return true }  // 61: "="
            i += 1
        }
        return false
    }
}
