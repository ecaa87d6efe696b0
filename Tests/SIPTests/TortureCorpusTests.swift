import Testing

@testable import SIP

/// What a proxy does with each RFC 4475 message, as one table: every file in the corpus must be here
/// (the field-level checks live in the Torture*Tests suites).
@Suite struct TortureCorpusTests {
    enum Outcome: Equatable, CustomStringConvertible {
        /// Parses and validates.
        case accepted
        /// `parse` throws; `answerable` says whether a reply can be sent.
        case unframed(SIPParseError.Reason, answerable: Bool)
        /// Parses, `validate` throws.
        case rejected(SIPParseError.Reason, answerable: Bool)

        var description: String {
            switch self {
            case .accepted: "accepted"
            case .unframed(let reason, let answerable): "parse: \(reason) answerable=\(answerable)"
            case .rejected(let reason, let answerable): "validate: \(reason) answerable=\(answerable)"
            }
        }
    }

    static let expected: [String: Outcome] = [
        // §3.1.1 valid
        "wsinv": .accepted, "intmeth": .accepted, "esc01": .accepted, "escnull": .accepted,
        "esc02": .accepted, "lwsdisp": .accepted, "longreq": .accepted, "dblreq": .accepted,
        "semiuri": .accepted, "transports": .accepted, "mpart01": .accepted, "unreason": .accepted,
        "noreason": .accepted,
        // §3.1.2 invalid; lwsstart, trws, escruri, baddate and regbadct are accepted as the RFC allows.
        "badinv01": .rejected(.badVia, answerable: false),
        "clerr": .unframed(.contentLengthExceedsDatagram, answerable: true),
        "ncl": .unframed(.badContentLength, answerable: true),
        "scalar02": .rejected(.badCSeq, answerable: true),
        "scalarlg": .rejected(.badCSeq, answerable: false),
        "quotbal": .rejected(.badTo, answerable: true),
        "ltgtruri": .rejected(.badRequestURI, answerable: true),
        "lwsruri": .rejected(.badRequestURI, answerable: true),
        "lwsstart": .accepted, "trws": .accepted, "escruri": .accepted, "baddate": .accepted,
        "regbadct": .accepted,
        "badaspec": .rejected(.badTo, answerable: true),
        "baddn": .unframed(.missingEmptyLine, answerable: true),
        "badvers": .rejected(.unsupportedVersion, answerable: true),
        "mismatch01": .rejected(.cseqMethodMismatch, answerable: true),
        "mismatch02": .rejected(.cseqMethodMismatch, answerable: true),
        "bigcode": .unframed(.badStartLine, answerable: false),
        // §3.2 transaction layer, §3.3 application layer, §3.4 backward compatibility
        "badbranch": .accepted,
        "insuf": .rejected(.missingCallID, answerable: true),
        "unkscm": .accepted, "novelsc": .accepted, "unksm2": .accepted, "bext01": .accepted,
        "invut": .accepted, "regaut01": .accepted,
        "multi01": .rejected(.multipleCSeq, answerable: true),
        "mcl01": .unframed(.multipleContentLength, answerable: true),
        "bcast": .accepted, "zeromf": .accepted, "cparam01": .accepted, "cparam02": .accepted,
        "regescrt": .accepted, "sdp01": .accepted, "inv2543": .accepted,
    ]

    static func outcome(_ p: Parsed) -> Outcome {
        if let error = p.parseError { return .unframed(error.reason, answerable: p.message.isAnswerable) }
        if let error = p.validationError() { return .rejected(error.reason, answerable: p.message.isAnswerable) }
        return .accepted
    }

    @Test func corpusHasAll49MessagesAndTheTableCoversThem() throws {
        let names = try TortureCorpus.names()
        #expect(names.count == 49)
        #expect(Set(names) == Set(Self.expected.keys))
    }

    @Test(arguments: expected.keys.sorted())
    func messageGetsTheOutcomeRFC4475Asks(_ name: String) throws {
        let p = try Parsed(file: name)
        #expect(Self.outcome(p) == Self.expected[name], "\(name)")
    }

    /// Every answerable rejection produces a reply that itself parses, validates and carries the
    /// reason phrase and status RFC 4475 asks for.
    @Test(arguments: expected.keys.sorted())
    func answerableMessagesGetAWellFormedReply(_ name: String) throws {
        let p = try Parsed(file: name)
        let reason: SIPParseError.Reason
        switch Self.outcome(p) {
        case .unframed(let r, true), .rejected(let r, true): reason = r
        default: return
        }
        let reply = Parsed(try build { out throws(SIPBuildError) in
            try p.message.writeReply(into: out, statusCode: reason.statusCode, reason: reason.phrase)
        })
        #expect(reply.parseError == nil)
        #expect(reply.message.statusCode == reason.statusCode)
        #expect(reply.string(reply.message.reasonPhrase) == reason.phrase.description)
        #expect(reply.message.count(of: .via) == p.message.count(of: .via))
        #expect(reply.message.body.count == 0)
    }
}
