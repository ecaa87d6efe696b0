import Glibc

/// Runs a fuzz target's function over inputs saved as files, outside libFuzzer: each path is a file, or a
/// directory whose files are all run. Prints how many ran; a trap points at the input being run.
public enum FuzzReplay {
    public static func replay(_ paths: ArraySlice<String>, _ body: (UnsafeRawBufferPointer) -> Void) {
        var count = 0
        for path in paths {
            for file in files(at: path) {
                guard let bytes = read(file) else {
                    report("cannot read \(file)")
                    exit(2)
                }
                report("running \(file)")
                bytes.withUnsafeBytes { body($0) }
                count += 1
            }
        }
        print("replayed \(count) input(s)")
    }

    private static func report(_ line: String) {
        let text = line + "\n"
        _ = text.withCString { write(STDERR_FILENO, $0, strlen($0)) }
    }

    private static func files(at path: String) -> [String] {
        guard let directory = opendir(path) else { return [path] }
        defer { closedir(directory) }
        var names: [String] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if entry.pointee.d_type == UInt8(DT_REG) { names.append(path + "/" + name) }
        }
        return names.sorted()
    }

    private static func read(_ path: String) -> [UInt8]? {
        guard let file = fopen(path, "rb") else { return nil }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = fread(&chunk, 1, chunk.count, file)
            if n <= 0 { break }
            bytes += chunk[0..<n]
        }
        return bytes
    }
}

#if FUZZING
/// Starts libFuzzer's driver on `callback` (a target's `LLVMFuzzerTestOneInput`). Called from the target's
/// `<module>_main`, the entry point SwiftPM links an executable with (it defines `main` to it), so libFuzzer's
/// own `main` is left out by the linker.
public func runLibFuzzer(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?,
                         _ callback: @convention(c) (UnsafePointer<UInt8>, Int) -> Int32) -> Int32 {
    var count = argc
    var arguments = argv
    return LLVMFuzzerRunDriver(&count, &arguments, callback)
}

@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<Int32>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>, Int) -> Int32) -> Int32
#endif
