import Engine

/// What an HTTP request ended with; the script layer puts `rawValue` in `$rc`.
///
/// The values are OpenSIPS rest_client's (modules/rest_client/rest_methods.h: `RCL_OK` 1, `RCL_CONNECT_REFUSED`
/// -1, `RCL_CONNECT_TIMEOUT` -2, `RCL_TRANSFER_TIMEOUT` -3, `RCL_INTERNAL_ERR` -10), so existing scripts read
/// the same `$rc`; any HTTP status the server returned (a 503 too) is a success, its status beside it.
/// ringsip adds `.queueFull`, which OpenSIPS cannot return since it never queues.
public enum HTTPCode: Int32, Sendable {
    /// A response arrived, whatever its status (`HTTPCompletion.status`).
    case success = 1
    /// The connection was refused or could not be made (`CURLE_COULDNT_CONNECT`).
    case refused = -1
    /// `connectionTimeout` expired before the connection was up.
    case connectTimeout = -2
    /// Connected, but the whole transfer outlasted its timeout (or it timed out waiting in the queue).
    case transferTimeout = -3
    /// The shard already runs its maximum of transfers and its wait queue is full: refused at once.
    case queueFull = -5
    /// Anything else: a bad URL, a resolve failure, a TLS error, a response beyond `maxTransferSize`
    /// (`HTTPCompletion.bodyTooLarge`), the wheel full.
    case failed = -10
}

/// The HTTP methods rest_client offers.
public enum HTTPMethod: UInt8, Sendable {
    case get, post, put
}

/// The outcome of `HTTPRunner.submit`.
public enum HTTPSubmission: Equatable, Sendable {
    /// The request runs (or waits in the shard's queue); the delegate hears of it exactly once, unless it is
    /// cancelled first.
    case accepted(HTTPHandle)
    /// Refused at once (`.queueFull`, `.failed`); no delegate call follows.
    case rejected(HTTPCode)
}

/// Names one submitted request: its slot and that slot's generation, so a late cancel does nothing.
public struct HTTPHandle: Equatable, Sendable {
    let slot: Int32
    let generation: UInt16

    init(slot: Int32, generation: UInt16) {
        self.slot = slot
        self.generation = generation
    }

    /// The handle as 48 bits (slot 32 | generation 16), for callers that store it in an integer.
    public var packed: UInt64 { UInt64(UInt32(bitPattern: slot)) << 16 | UInt64(generation) }

    public init(packed: UInt64) {
        self.init(slot: Int32(bitPattern: UInt32(truncatingIfNeeded: packed >> 16)),
                  generation: UInt16(truncatingIfNeeded: packed))
    }
}

/// One finished request, seen by the delegate.
///
/// - Invariant: `body` and `contentType` point into the runner's per-transfer buffers (and libcurl's handle)
///   and are valid only during the delegate call; whatever must outlive it is copied.
public struct HTTPCompletion: ~Copyable {
    public let code: HTTPCode
    /// The HTTP status of the response; 0 when none arrived.
    public let status: Int
    /// The response's Content-Type, empty when it had none.
    public let contentType: UnsafeRawBufferPointer
    public let body: UnsafeRawBufferPointer
    /// The response was larger than `maxTransferSize`: the transfer was aborted (`code` is `.failed`).
    public let bodyTooLarge: Bool
    /// libcurl's `CURLcode`, for logs (0 when libcurl never ran the request).
    public let curlCode: Int32
}

/// Receives finished requests, on the shard's thread. The delegate may submit or cancel from inside the call.
public protocol HTTPRunnerDelegate: AnyObject {
    func httpCompleted(token: UInt64, _ completion: borrowing HTTPCompletion, on shard: Shard)
}
