import CUring
import Glibc

/// Reads, writes and polls on descriptors the layers above own (pipes to a child, a database socket), so
/// their I/O runs on the shard's ring like everything else. Each completion goes to
/// `ShardHandler.operationCompleted` with the caller's `OperationID`.
///
/// - Invariant: a buffer passed here is the caller's, and must stay valid until the operation's completion
///   has been delivered (also after `cancelOperations`: a cancelled operation still completes, with
///   `-ECANCELED` or with its result if it finished first).
extension Shard {
    @inline(__always)
    private func operationTag(_ id: OperationID) -> UInt64 {
        Tag(kind: .operation, shard: index, generation: id.generation, slot: id.slot).rawValue
    }

    /// Reads up to `buffer.count` bytes from `fd` at its current position (pipes and sockets have no offset).
    /// Completes with the byte count, 0 at end of file, or `-errno`.
    public func submitRead(fd: Int32, into buffer: UnsafeMutableRawBufferPointer, id: OperationID) {
        let sqe = ring.sqe()
        // Offset -1: "the file position", which is what a pipe or socket needs.
        io_uring_prep_read(sqe, fd, buffer.baseAddress, UInt32(buffer.count), UInt64.max)
        sqe.pointee.user_data = operationTag(id)
    }

    /// Writes `buffer` to `fd`; may complete with fewer bytes than asked (a pipe takes what fits), then the
    /// caller submits the rest. Completes with the byte count or `-errno` (`-EPIPE` once the reader is gone).
    /// - Precondition: SIGPIPE blocked or ignored in the process: a write to a broken pipe raises it on the
    ///   submitting thread (ringsipd blocks it at start-up).
    public func submitWrite(fd: Int32, from buffer: UnsafeRawBufferPointer, id: OperationID) {
        let sqe = ring.sqe()
        io_uring_prep_write(sqe, fd, buffer.baseAddress, UInt32(buffer.count), UInt64.max)
        sqe.pointee.user_data = operationTag(id)
    }

    /// A one-shot poll: completes once `fd` is ready for any of `events` (POLLIN, POLLOUT…) with the ready
    /// mask, or with `-errno`. A pidfd polls readable when its process has exited.
    public func submitPoll(fd: Int32, events: Int16, id: OperationID) {
        let sqe = ring.sqe()
        io_uring_prep_poll_add(sqe, fd, UInt32(UInt16(bitPattern: events)))
        sqe.pointee.user_data = operationTag(id)
    }

    /// Cancels every pending operation submitted with `id` (IORING_OP_ASYNC_CANCEL by user_data, all
    /// matches). Each still completes through `operationCompleted`, usually with `-ECANCELED`; one already
    /// finished keeps its result. Cancelling nothing is harmless.
    public func cancelOperations(id: OperationID) {
        let sqe = ring.sqe()
        io_uring_prep_cancel64(sqe, operationTag(id), Int32(IORING_ASYNC_CANCEL_ALL))
        sqe.pointee.user_data = Tag(kind: .timeoutUpdate, shard: index, generation: 0, slot: 0).rawValue
    }
}
