import Engine
import Glibc
import SIP
import Script
import Synchronization

/// OpenSIPS' auth and auth_db modules: `www_challenge`/`proxy_challenge` (401/407 with a Digest challenge),
/// `www_authorize`/`proxy_authorize` (RFC 2617 Digest, MD5, qop auth or none) against the `subscriber` table,
/// `consume_credentials`.
///
/// The stored credentials are fetched before the route runs (`CredentialsService`, a `RequestPrefetching`
/// service): a request that carries Digest credentials waits for its subscriber row on the shard's MariaDB pool
/// while the shard goes on, then is routed from the start with the row at hand, so `www_authorize` answers at once.
/// A request without credentials is routed at once (and challenged by the script).
public enum AuthModule {
    public static var modules: [ScriptModule] {
        let auth = ScriptModule(name: "auth", parameters: [
            .init("secret", .string), .init("nonce_expire", .integer, range: 1...3600, unit: "seconds"),
            .ignored("disable_nonce_check", "nonce counts are always checked"),
            .ignored("rpid_prefix", "Remote-Party-ID is not built"), .ignored("rpid_suffix", "Remote-Party-ID is not built"),
            .ignored("realm_prefix", "realms are taken as given"),
            .ignored("username_spec", "pv_www_authorize is not built"), .ignored("password_spec", "pv_www_authorize is not built"),
            .ignored("calculate_ha1", "set it on auth_db, whose table holds the passwords"),
        ], functions: [
            ScriptFunction("www_challenge", module: "auth", arguments: 1...3, allowedIn: .request) { call, compiler throws(CompileError) in
                try challenge(call, compiler, proxy: false)
            },
            ScriptFunction("proxy_challenge", module: "auth", arguments: 1...3, allowedIn: .request) { call, compiler throws(CompileError) in
                try challenge(call, compiler, proxy: true)
            },
            ScriptFunction("consume_credentials", module: "auth", arguments: 0...0, allowedIn: .request, compile: consume),
        ])
        let authDB = ScriptModule(name: "auth_db", parameters: [
            .init("db_url", .string, validate: DatabaseModule.resolveURL),
            .init("user_column", .string), .init("domain_column", .string), .init("password_column", .string),
            .init("password_column_2", .string), .init("calculate_ha1", .integer, range: 0...1),
            .init("use_domain", .integer, range: 0...1), .init("db_connections", .integer, range: 1...64),
            .init("credentials_cache", .integer, range: 0...86_400, unit: "seconds"),
            .ignored("load_credentials", "no subscriber column is copied into AVPs yet"),
            .ignored("skip_version_check", "the subscriber table's version is not checked"),
        ], functions: [
            ScriptFunction("www_authorize", module: "auth_db", arguments: 2...2, allowedIn: .request) { call, compiler throws(CompileError) in
                try authorize(call, compiler, proxy: false)
            },
            ScriptFunction("proxy_authorize", module: "auth_db", arguments: 2...2, allowedIn: .request) { call, compiler throws(CompileError) in
                try authorize(call, compiler, proxy: true)
            },
        ], service: { context, shard, configuration in
            CredentialsService(context: context, shard: shard, configuration: configuration)
        })
        return [auth, authDB]
    }

    /// The secret every shard's nonces are signed with: the `secret` modparam, else random bytes drawn once per
    /// process (nonces do not outlive a restart).
    static let randomSecret: [UInt8] = (0..<16).map { _ in UInt8.random(in: 0...255) }

    static func issuer(_ configuration: ScriptConfiguration) -> NonceIssuer {
        var secret = randomSecret
        if case .string(let text)? = configuration.moduleParameters["auth"]?["secret"], !text.isEmpty { secret = Array(text.utf8) }
        return NonceIssuer(secret: secret, lifetime: configuration.integer("auth", "nonce_expire", default: 30))
    }

    /// The realm a challenge or a check uses: the argument, or when it is empty the To host of a REGISTER (www)
    /// and the From host of anything else (proxy), as OpenSIPS does.
    static func realm(_ argument: ScriptCompiler.Evaluate, _ context: ScriptContext, proxy: Bool) -> String {
        if case .text(let text) = argument(context), text.count > 0 { return String(decoding: text, as: UTF8.self) }
        let message = context.message
        guard let address = proxy ? message.from : message.to else { return "" }
        return message.string(address.uri.host).lowercased()
    }

    // MARK: - Challenge

    @Sendable static func challenge(_ call: FunctionCall, _ compiler: ScriptCompiler, proxy: Bool) throws(CompileError) -> CompiledCall {
        let realmArgument = try compiler.value(call.arguments[0]!)
        // 3.x: "auth", "auth-int", "auth,auth-int" or ""; 2.x: 1 or 0.
        var qopAuth = false
        if call.arguments.count > 1, let argument = call.arguments[1] {
            guard let text = compiler.constantText(argument) else {
                throw compiler.error("\(call.name)'s qop is a constant: \"auth\", \"\" (or 1 / 0)", at: argument.location)
            }
            qopAuth = text == "1" || text.split(separator: ",").contains { String($0).trimming(" \t") == "auth" }
        }
        let issuer = issuer(compiler.configuration)
        guard let service = compiler.serviceIndex(of: "auth_db") else {
            throw compiler.error("\(call.name) needs auth_db (loadmodule \"auth_db.so\"): it checks what the challenge asks for",
                                 at: call.location)
        }
        let status = proxy ? 407 : 401
        let header = proxy ? "Proxy-Authenticate" : "WWW-Authenticate"
        return { context in
            guard context.hasMessage, context.message.isRequest else { return -1 }
            let credentials = context.service(service) as? CredentialsService
            let realm = realm(realmArgument, context, proxy: proxy)
            let nonce = issuer.make(now: Int(time(nil)), serial: credentials?.nextSerial() ?? 0)
            var line = "\(header): Digest realm=\"\(realm)\", nonce=\"\(nonce)\""
            if qopAuth { line += ", qop=\"auth\"" }
            line += ", algorithm=MD5"
            // Only the route of a request held for its credentials has checked a nonce.
            if credentials?.current != nil && credentials?.staleNow == true { line += ", stale=true" }
            line += "\r\n"
            let reason: StaticString = proxy ? "Proxy Authentication Required" : "Unauthorized"
            return context.replyToRequest(status: status, reason: reason, headers: line) ? 1 : -1
        }
    }

    // MARK: - Authorize

    /// OpenSIPS' codes: 1 authorized; -1 no such user; -2 wrong password; -3 stale nonce — expired, not ours, or
    /// its count replayed (challenge again with stale=true); -4 no credentials for this realm; -5 anything else
    /// (an algorithm other than MD5, a database error).
    @Sendable static func authorize(_ call: FunctionCall, _ compiler: ScriptCompiler, proxy: Bool) throws(CompileError) -> CompiledCall {
        let realmArgument = try compiler.value(call.arguments[0]!)
        guard let table = compiler.constantText(call.arguments[1]), !table.isEmpty,
              table.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) else {
            throw compiler.error("\(call.name)'s second argument is the subscriber table's name, a constant",
                                 at: call.arguments[1]?.location ?? call.location)
        }
        guard DatabaseModule.url(of: "auth_db", in: compiler.configuration) != nil else {
            throw compiler.error("\(call.name) needs modparam(\"auth_db\", \"db_url\", \"mysql://…\") or db_default_url",
                                 at: call.location)
        }
        guard let service = compiler.serviceIndex(of: "auth_db") else {
            throw compiler.error("\(call.name) needs auth_db: loadmodule \"auth_db.so\"", at: call.location)
        }
        CredentialsService.tables.withLock { if $0.isEmpty || !$0.contains(table) { $0.append(table) } }
        let issuer = issuer(compiler.configuration)
        let calculate = compiler.configuration.integer("auth_db", "calculate_ha1", default: 0) == 1
        return { context in
            guard context.hasMessage, context.message.isRequest,
                  let credentials = context.service(service) as? CredentialsService else { return -5 }
            let message = context.message
            let realm = realm(realmArgument, context, proxy: proxy)
            guard let (digest, _) = CredentialsService.credentials(in: message, proxy: proxy, realm: realm) else { return -4 }
            // A nonce that is not ours (another daemon's, or ours before a restart changed the secret) is taken as
            // stale, as OpenSIPS does: the phone gets a fresh challenge rather than an error.
            guard issuer.check(digest.nonce, now: Int(time(nil))) == .valid else {
                credentials.staleNow = true
                return -3
            }
            guard digest.algorithm.isEmpty || digest.algorithm.lowercased() == "md5" else { return -5 }
            guard let fetched = credentials.current, fetched.username == digest.username, fetched.realm == digest.realm,
                  fetched.table == table else { return -5 }
            let secret: String
            switch fetched.outcome {
            case .found(let value): secret = value
            case .notFound: return -1
            case .failed: return -5
            }
            let ha1 = calculate ? md5Hex("\(digest.username):\(digest.realm):\(secret)") : secret.lowercased()
            guard digest.expectedResponse(ha1: ha1, method: message.string(message.methodName)) == digest.response else {
                return -2
            }
            if !digest.qop.isEmpty {
                guard let count = UInt32(digest.nc, radix: 16), credentials.acceptCount(count, for: digest.nonce) else {
                    credentials.staleNow = true
                    return -3
                }
            }
            return 1
        }
    }

    @Sendable static func consume(_ call: FunctionCall, _ compiler: ScriptCompiler) throws(CompileError) -> CompiledCall {
        return { context in
            guard context.hasMessage, context.message.isRequest else { return -1 }
            let message = context.message
            var removed = false
            for kind in [SIPHeaderKind.authorization, .proxyAuthorization] {
                var index = message.firstIndex(of: kind)
                while let i = index {
                    message.removeHeader(at: i)
                    removed = true
                    index = message.nextIndex(sameKindAs: i)
                }
            }
            return removed ? 1 : -1
        }
    }
}
