import CUV

/// What libuv still holds queued for a stream: the bytes given to `uv_write`
/// and not yet written, in order (an upgrade carries them to the new process).
enum WriteQueue {
    /// nil when libuv's queue does not add up to its own count (a libuv whose
    /// request layout this does not read): the caller keeps the session.
    static func unsent(of stream: UnsafeMutablePointer<uv_stream_t>) -> [UInt8]? {
        let queued = uv_stream_get_write_queue_size(stream)
        guard queued > 0 else { return [] }
        var bytes = [UInt8](repeating: 0, count: queued)
        let total = bytes.withUnsafeMutableBytes { buffer in
            cuv_stream_unsent(stream, buffer.baseAddress!.assumingMemoryBound(to: CChar.self), queued)
        }
        return total == queued ? bytes : nil
    }
}
