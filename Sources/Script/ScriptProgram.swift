import Engine
import TM

/// A checked script, ready to be compiled once per shard: the parsed source, its configuration, and the
/// library that provides its functions.
public struct ScriptProgram: Sendable {
    public let source: ScriptSource
    public let configuration: ScriptConfiguration
    public let library: ScriptLibrary
    /// Warnings from the check (ignored globals, blocking calls…), for the start-up log.
    public let warnings: [String]
    /// The secret behind transaction branches and the transaction table's hash seed: random per process.
    let branchKey = BranchKey(k0: UInt64.random(in: 0...UInt64.max), k1: UInt64.random(in: 0...UInt64.max))
    let tableSeed = UInt64.random(in: 0...UInt64.max)

    /// Loads and checks a script file completely: configuration and every route.
    public static func load(path: String, library: ScriptLibrary = .core) throws(CompileError) -> ScriptProgram {
        try check(ScriptLoader.load(path: path), library: library, lines: SourceLines(), file: path)
    }

    /// Checks script text (tests, and the one-line script behind `--forward`).
    public static func parse(_ text: String, file: String = "<script>",
                             library: ScriptLibrary = .core) throws(CompileError) -> ScriptProgram {
        let lines = SourceLines()
        lines.register(file: file, text: text)
        return try check(ScriptLoader.parse(text, file: file), library: library, lines: lines, file: file)
    }

    static func check(_ parsed: ScriptSource, library: ScriptLibrary, lines: SourceLines,
                      file: String) throws(CompileError) -> ScriptProgram {
        // OpenSIPS 1.x/2.x scripts call their main route route[0].
        var source = parsed
        for i in source.routes.indices where source.routes[i].kind == .request && source.routes[i].name == "0" {
            source.routes[i].name = ""
        }
        let configuration = try ScriptConfiguration.build(source, library: library, lines: lines)
        let compiler = ScriptCompiler(source: source, library: library, configuration: configuration, lines: lines)
        _ = try compiler.compile()
        var warnings = configuration.warnings + compiler.warnings
        if !source.routes.contains(where: { $0.kind == .request && $0.name.isEmpty }) {
            // OpenSIPS runs such a script too (its other routes may be timers and events): requests are dropped.
            warnings.append("\(file): warning: the script has no main route: every request is dropped "
                + "(counted in 'dropped'); add route { … } to handle them")
        }
        return ScriptProgram(source: source, configuration: configuration, library: library, warnings: warnings)
    }

    /// The compiled routes for one shard. The program was checked, so this cannot fail.
    func compile() -> CompiledScript {
        let compiler = ScriptCompiler(source: source, library: library, configuration: configuration, lines: SourceLines())
        do {
            return try compiler.compile()
        } catch {
            preconditionFailure("a checked script failed to compile again: \(error)")
        }
    }
}
