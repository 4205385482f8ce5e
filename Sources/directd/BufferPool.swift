import CUV

/// Read buffers, each with the write request that forwards it, reused across
/// reads and connections so that the data path allocates nothing once warm.
///
/// A chunk is one allocation: a `uv_write_t` header, then `size` bytes of data.
/// A read lands in a chunk's data; the same chunk's request writes it on; the
/// write callback gives it back. Idle connections hold no chunk (libuv asks for
/// a buffer only when a socket is readable), so memory follows traffic, not the
/// number of connections.
final class BufferPool {
    static let size = 64 * 1024
    private static let header = (MemoryLayout<uv_write_t>.size + 63) & ~63

    private var free: [UnsafeMutableRawPointer] = []
    /// Free chunks kept for reuse; beyond that they go back to the allocator.
    private let keep: Int

    init(keep: Int = 256) {
        self.keep = keep
        free.reserveCapacity(keep)
    }

    deinit {
        free.forEach { $0.deallocate() }
    }

    func take() -> UnsafeMutableRawPointer {
        free.popLast()
            ?? UnsafeMutableRawPointer.allocate(byteCount: Self.header + Self.size, alignment: 64)
    }

    func give(_ chunk: UnsafeMutableRawPointer) {
        if free.count < keep { free.append(chunk) } else { chunk.deallocate() }
    }

    static func data(of chunk: UnsafeMutableRawPointer) -> UnsafeMutablePointer<CChar> {
        (chunk + header).assumingMemoryBound(to: CChar.self)
    }

    /// The chunk a buffer that `data(of:)` handed out belongs to.
    static func chunk(ofData data: UnsafeMutablePointer<CChar>) -> UnsafeMutableRawPointer {
        UnsafeMutableRawPointer(data) - header
    }

    static func request(of chunk: UnsafeMutableRawPointer) -> UnsafeMutablePointer<uv_write_t> {
        chunk.assumingMemoryBound(to: uv_write_t.self)
    }
}
