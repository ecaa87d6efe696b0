import Engine
import FuzzReplay
import Script

/// The script front end (lexer, include splicing, parser, configuration, checker and compiler) on arbitrary
/// bytes: it must answer with a CompileError or a program, never trap, hang or touch memory it does not own.
/// Names are not resolved and includes not read, so an input depends on nothing outside it.
///
/// Built with `-sanitize=fuzzer,address -DFUZZING` (`make fuzz`), this is a libFuzzer target; built normally it
/// replays inputs given as files (a crash libFuzzer saved, or a whole corpus directory).
enum FuzzScript {
    static func run(_ bytes: UnsafeRawBufferPointer) {
        SocketSpec.resolvesNames = false
        ScriptLoader.readsIncludes = false
        let text = String(decoding: bytes, as: UTF8.self)
        do {
            let program = try ScriptProgram.parse(text, file: "fuzz.cfg")
            _ = program.warnings.count
        } catch {
            precondition(error.location.line >= 1 && error.location.column >= 1, "an error outside the text: \(error)")
        }
    }
}

#if FUZZING
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzScript(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    FuzzScript.run(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

@_cdecl("fuzz_script_main")
public func fuzzEntry(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    runLibFuzzer(argc, argv, fuzzScript)
}
#else
@main
struct FuzzScriptReplay {
    static func main() { FuzzReplay.replay(CommandLine.arguments.dropFirst(), FuzzScript.run) }
}
#endif
