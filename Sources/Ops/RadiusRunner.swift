import Engine
import Glibc

/// A native RADIUS client (RFC 2865 Access-Request, RFC 2866 Accounting-Request) on the shard's ring: one UDP
/// socket per runner, connected to one server (aaa_radius uses one runner for the auth port, one for the
/// accounting port), one read always in flight on it, each request written with `submitWrite`, and its
/// retransmissions and total timeout on the shard's timer wheel.
///
/// - Packets are written and responses checked by `RadiusPacket`. A response is matched by identifier; one
///   that fails the checks, or has an unexpected code or a malformed length, is dropped and counted
///   (`badResponses`); the request keeps waiting.
/// - A request is sent again, byte for byte (same identifier and authenticator, RFC 2865 §2.5), every
///   `retransmitMilliseconds` until its total timeout.
/// - Identifiers: 256 per socket. A new request takes the next free one in round-robin order (so an
///   identifier is not reused at once, and a late answer to an old request misses); none free →
///   `.identifiersFull` at once.
///
/// - Invariant: used only on its shard's thread. At most one write per identifier is in flight (its buffer is
///   the identifier's packet, which is neither rewritten nor freed until the write completes); an identifier
///   with a write in flight is not reused. Exactly one read is in flight on the socket until `shutdown`.
/// - Note: packets live in preallocated per-identifier buffers; steady state allocates nothing.
public final class RadiusRunner {
    public struct Configuration: Sendable {
        public var server: SocketAddress
        public var secret: [UInt8]
        /// The interval between transmissions of one request.
        public var retransmitMilliseconds: UInt64 = 1000
        /// Whose completions and timers are this runner's: `.radius`, or `.radiusAccounting` for the second
        /// runner on the same shard.
        public var component = OpsComponent.radius

        public init(server: SocketAddress, secret: String) {
            self.server = server
            self.secret = Array(secret.utf8)
        }
    }

    static let maximumPacket = RadiusPacket.maximumLength
    /// Operation ids, channel 1: a write of identifier `slot`'s packet (generation 0: at most one per identifier
    /// is in flight, so none is needed). Channel 0, slot `readSlot`: the socket's read, with `readGeneration`.
    static let readSlot = 256

    enum Kind: UInt8 { case access, accounting }

    struct Request {
        var inUse = false
        var writeInFlight = false
        var kind = Kind.access
        var generation: UInt16 = 0
        var token: UInt64 = 0
        var timer: TimerHandle?
        var deadline: UInt64 = 0
        var length = 0
        var retransmissions = 0
    }

    public let configuration: Configuration
    unowned let shard: Shard
    unowned let delegate: any RadiusRunnerDelegate
    public let socket: Int32
    private let requests: UnsafeMutablePointer<Request>
    /// 256 packets of `maximumPacket` bytes, one per identifier.
    private let packets: UnsafeMutableRawPointer
    private let receiveBuffer: UnsafeMutableRawBufferPointer
    private var readGeneration: UInt16 = 0
    private var readInFlight = false
    private var stopped = false
    private var nextIdentifier = 0
    private var random = SystemRandomNumberGenerator()

    /// Requests waiting for their response now.
    public private(set) var inFlight = 0
    /// Packets sent again after their first transmission (all requests).
    public private(set) var retransmissions = 0
    /// Responses dropped: bad Response Authenticator or Message-Authenticator, unexpected code, bad length.
    public private(set) var badResponses = 0
    /// Responses for no request in flight (late, duplicate), and reads that failed (ICMP port unreachable).
    public private(set) var unmatchedResponses = 0
    public private(set) var readErrors = 0

    /// Opens the socket and starts reading.
    /// - Precondition: created on the shard's thread (in `ShardHandler.started`); the delegate outlives it.
    public init(shard: Shard, configuration: Configuration, delegate: any RadiusRunnerDelegate) throws(Errno) {
        self.shard = shard
        self.configuration = configuration
        self.delegate = delegate
        switch UDPClientSocket.connected(to: configuration.server) {
        case .success(let fd): socket = fd
        case .failure(let error): throw error
        }
        requests = .allocate(capacity: 256)
        requests.initialize(repeating: Request(), count: 256)
        packets = .allocate(byteCount: 256 * Self.maximumPacket, alignment: 16)
        receiveBuffer = .allocate(byteCount: Self.maximumPacket, alignment: 16)
        armRead()
    }

    deinit {
        requests.deallocate()
        packets.deallocate()
        receiveBuffer.deallocate()
    }

    // MARK: - Submitting

    /// Sends an Access-Request for `userName` / `password` (at most 128 bytes) plus `attributes`, retransmitted
    /// until `timeoutMilliseconds` (> 0) have passed. The delegate later gets `token` back with the outcome.
    public func submitAccess(userName: UnsafeRawBufferPointer, password: UnsafeRawBufferPointer,
                             attributes: borrowing RadiusAttributes, timeoutMilliseconds: UInt64,
                             token: UInt64) -> RadiusSubmission {
        guard let identifier = takeIdentifier() else { return .rejected(.identifiersFull) }
        // An identifier taken but not started stays free: nothing to give back on failure.
        guard let length = RadiusPacket.writeAccess(into: packetBuffer(identifier), identifier: UInt8(identifier),
                                                    userName: userName, password: password, attributes: attributes,
                                                    secret: configuration.secret, random: &random) else {
            return .rejected(.failed)
        }
        return start(identifier, kind: .access, length: length, timeoutMilliseconds: timeoutMilliseconds, token: token)
    }

    /// Sends an Accounting-Request with `attributes` (which should hold Acct-Status-Type and Acct-Session-Id,
    /// RFC 2866 §5), retransmitted until `timeoutMilliseconds` (> 0) have passed.
    public func submitAccounting(attributes: borrowing RadiusAttributes, timeoutMilliseconds: UInt64,
                                 token: UInt64) -> RadiusSubmission {
        guard let identifier = takeIdentifier() else { return .rejected(.identifiersFull) }
        guard let length = RadiusPacket.writeAccounting(into: packetBuffer(identifier), identifier: UInt8(identifier),
                                                        attributes: attributes, secret: configuration.secret) else {
            return .rejected(.failed)
        }
        return start(identifier, kind: .accounting, length: length, timeoutMilliseconds: timeoutMilliseconds,
                     token: token)
    }

    /// Stops waiting for a request without reporting it (its suspension gave up). Its identifier is free again;
    /// a response that still arrives is counted as unmatched.
    public func cancel(_ handle: RadiusHandle) {
        let identifier = Int(handle.identifier)
        guard requests[identifier].inUse, requests[identifier].generation == handle.generation else { return }
        release(identifier)
    }

    // MARK: - Requests

    private func packetBuffer(_ identifier: Int) -> UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(start: packets + identifier * Self.maximumPacket, count: Self.maximumPacket)
    }

    /// The next identifier (round robin) neither waiting for a response nor with a write in flight.
    private func takeIdentifier() -> Int? {
        guard !stopped else { return nil }
        for step in 0..<256 {
            let identifier = (nextIdentifier + step) & 255
            if !requests[identifier].inUse && !requests[identifier].writeInFlight {
                nextIdentifier = (identifier + 1) & 255
                return identifier
            }
        }
        return nil
    }

    private func start(_ identifier: Int, kind: Kind, length: Int, timeoutMilliseconds: UInt64,
                       token: UInt64) -> RadiusSubmission {
        precondition(timeoutMilliseconds > 0)
        let interval = min(configuration.retransmitMilliseconds, timeoutMilliseconds)
        let payload = OpsPacking.timerPayload(configuration.component, slot: identifier, generation: requests[identifier].generation)
        guard let timer = shard.schedule(after: interval, payload: payload) else { return .rejected(.failed) }
        requests[identifier].inUse = true
        requests[identifier].kind = kind
        requests[identifier].token = token
        requests[identifier].timer = timer
        requests[identifier].deadline = shard.now + timeoutMilliseconds
        requests[identifier].length = length
        requests[identifier].retransmissions = 0
        inFlight += 1
        send(identifier)
        return .accepted(RadiusHandle(identifier: UInt8(identifier), generation: requests[identifier].generation))
    }

    private func send(_ identifier: Int) {
        requests[identifier].writeInFlight = true
        let packet = UnsafeRawBufferPointer(start: packets + identifier * Self.maximumPacket,
                                            count: requests[identifier].length)
        shard.submitWrite(fd: socket, from: packet, id: OpsPacking.operationID(configuration.component, slot: identifier, channel: 1,
                                                                                generation: 0))
    }

    /// Frees an identifier; its generation moves on, so its late timer and stale handles miss it.
    private func release(_ identifier: Int) {
        if let timer = requests[identifier].timer { shard.cancel(timer) }
        requests[identifier].timer = nil
        requests[identifier].inUse = false
        requests[identifier].generation &+= 1
        inFlight -= 1
    }

    private func deliver(_ identifier: Int, code: RadiusCode, responseCode: UInt8, attributes: UnsafeRawBufferPointer) {
        let token = requests[identifier].token
        let completion = RadiusCompletion(code: code, responseCode: responseCode,
                                          retransmissions: requests[identifier].retransmissions,
                                          attributes: attributes)
        release(identifier)
        delegate.radiusCompleted(token: token, completion, on: shard)
    }

    // MARK: - Completions

    private func armRead() {
        readInFlight = true
        let id = OpsPacking.operationID(configuration.component, slot: Self.readSlot, channel: 0, generation: readGeneration)
        shard.submitRead(fd: socket, into: receiveBuffer, id: id)
    }

    /// Forward every `ShardHandler.operationCompleted` whose `OpsPacking.component(of:)` is `configuration.component`.
    public func operationCompleted(_ operation: OperationID, result: Int32, flags: UInt32) {
        let (slot, channel) = OpsPacking.slotAndChannel(of: operation)
        if channel == 1 {
            // A write: its buffer is free again. A short or failed write is left to the retransmission.
            guard slot < 256 else { return }
            requests[slot].writeInFlight = false
            return
        }
        guard slot == Self.readSlot, operation.generation == readGeneration, readInFlight else {
            unmatchedResponses += 1
            return
        }
        readInFlight = false
        if stopped { return }
        if result > 0 {
            received(Int(result))
        } else if result < 0 {
            // -ECONNREFUSED after an ICMP port unreachable: nothing listens yet; retransmissions go on.
            readErrors += 1
        }
        if !stopped && !readInFlight { armRead() }
    }

    private func received(_ count: Int) {
        let received = UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(receiveBuffer)[0..<count])
        guard let length = RadiusPacket.responseLength(received) else {
            badResponses += 1
            return
        }
        let identifier = Int(received[1])
        guard requests[identifier].inUse else {
            unmatchedResponses += 1
            return
        }
        let responseCode = received[0]
        let requestAuthenticator = UnsafeRawBufferPointer(start: packets + identifier * Self.maximumPacket + 4,
                                                          count: 16)
        guard let code = RadiusPacket.outcome(accounting: requests[identifier].kind == .accounting,
                                              responseCode: responseCode),
              RadiusPacket.verify(response: UnsafeRawBufferPointer(rebasing: received[0..<length]),
                                  requestAuthenticator: requestAuthenticator, secret: configuration.secret) else {
            badResponses += 1
            return
        }
        deliver(identifier, code: code, responseCode: responseCode,
                attributes: UnsafeRawBufferPointer(rebasing: received[20..<length]))
    }

    // MARK: - Timers

    /// Forward every `ShardHandler.timerFired` whose `OpsPacking.component(ofTimer:)` is `configuration.component`: the
    /// request's next transmission, or its end.
    public func timerFired(payload: UInt64) {
        let (identifier, generation) = OpsPacking.slotAndGeneration(ofTimer: payload)
        guard identifier < 256, requests[identifier].inUse, requests[identifier].generation == generation else {
            return
        }
        requests[identifier].timer = nil
        let now = shard.now
        if now >= requests[identifier].deadline {
            deliver(identifier, code: .timeout, responseCode: 0, attributes: .init(start: nil, count: 0))
            return
        }
        // The same bytes again; a write still in flight (the socket was slow) makes this turn's copy redundant.
        if !requests[identifier].writeInFlight {
            requests[identifier].retransmissions += 1
            retransmissions += 1
            send(identifier)
        }
        let next = min(configuration.retransmitMilliseconds, requests[identifier].deadline - now)
        requests[identifier].timer = shard.schedule(after: next, payload: payload)
        if requests[identifier].timer == nil {
            deliver(identifier, code: .timeout, responseCode: 0, attributes: .init(start: nil, count: 0))
        }
    }

    // MARK: - Shutdown

    /// Drops every request without reporting it, cancels the read and closes the socket. For
    /// `ShardHandler.stopping` (the engine has completed every operation by then, so the buffers are free).
    public func shutdown() {
        guard !stopped else { return }
        stopped = true
        for identifier in 0..<256 where requests[identifier].inUse { release(identifier) }
        if readInFlight {
            shard.cancelOperations(id: OpsPacking.operationID(configuration.component, slot: Self.readSlot, channel: 0,
                                                              generation: readGeneration))
        }
        UDPClientSocket.close(socket)
    }
}
