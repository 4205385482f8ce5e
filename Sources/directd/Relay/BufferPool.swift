import CUV
#if canImport(Glibc)
import Glibc
#endif

/// Read buffers, each with the write request that forwards it, reused across
/// reads and connections so that the data path allocates nothing once warm,
/// and bounded in total by `memory-limit`.
///
/// A chunk is one allocation: a `uv_write_t` header, then `size` bytes of data.
/// A read lands in a chunk's data; the same chunk's request writes it on; the
/// write callback gives it back. Idle connections hold no chunk (libuv asks for
/// a buffer only when a socket is readable), so memory follows traffic, not the
/// number of connections.
///
/// Bounds:
/// - **In total.** At most `limit` chunks are out at once. When none is left,
///   `take` answers nil, the reader stops and waits here (`wait`), and it is
///   started again, first come first served, as chunks come back. Peers that
///   do not read are what fills the budget (their data sits queued), so they
///   are the ones that stop the readers: haproxy's buffer wait queue works the
///   same way.
/// - **Given back.** Free chunks beyond `keep` go back to the allocator at once,
///   and `trim` asks the allocator to return freed pages to the system, so that
///   a burst leaves no resident memory behind.
final class BufferPool {
    static let size = 64 * 1024
    private static let header = (MemoryLayout<uv_write_t>.size + 63) & ~63
    /// What one chunk costs, for the budget.
    static let chunkBytes = header + size

    private var free: [UnsafeMutableRawPointer] = []
    /// Free chunks kept for reuse; beyond that they go back to the allocator.
    private let keep: Int
    /// Chunks allowed out at once.
    private(set) var limit: Int
    /// Chunks out now (in a read, or queued in a write).
    private(set) var outstanding = 0
    /// Chunks freed since the last `trim`.
    private var releasedSinceTrim = 0
    /// Readers waiting for a chunk, in the order they asked.
    private var waiting: [ChunkWaiter] = []
    private var waitingHead = 0

    /// `memoryLimit` bytes of chunks at most (at least four chunks, so that a
    /// relay can always make progress).
    init(memoryLimit: Int, keep: Int = 16) {
        self.keep = keep
        self.limit = Self.chunks(for: memoryLimit)
        free.reserveCapacity(keep)
    }

    deinit {
        free.forEach { $0.deallocate() }
    }

    static func chunks(for memoryLimit: Int) -> Int {
        max(memoryLimit / chunkBytes, 4)
    }

    /// A new budget (a reload); chunks out above it come back in their own time.
    func setMemoryLimit(_ memoryLimit: Int) {
        limit = Self.chunks(for: memoryLimit)
        wakeWaiters()
    }

    /// A chunk, or nil when the budget is spent (then `wait`).
    @inline(__always)
    func take() -> UnsafeMutableRawPointer? {
        guard outstanding < limit else { return nil }
        outstanding += 1
        return free.popLast()
            ?? UnsafeMutableRawPointer.allocate(byteCount: Self.chunkBytes, alignment: 64)
    }

    @inline(__always)
    func give(_ chunk: UnsafeMutableRawPointer) {
        outstanding -= 1
        if free.count < keep {
            free.append(chunk)
        } else {
            chunk.deallocate()
            releasedSinceTrim += 1
        }
        if waitingHead < waiting.count { wakeWaiters() }
    }

    /// Queues a reader until a chunk is free.
    func wait(_ waiter: ChunkWaiter) {
        waiting.append(waiter)
    }

    /// Readers waiting for a chunk now.
    var waitingCount: Int { waiting.count - waitingHead }

    /// Starts waiting readers again while chunks are free. Each one that starts
    /// reading takes a chunk only when its socket is readable, so more may be
    /// woken than there are chunks: the rest come back here.
    private func wakeWaiters() {
        var room = limit - outstanding
        while room > 0, waitingHead < waiting.count {
            let waiter = waiting[waitingHead]
            waitingHead += 1
            if waiter.resumeAfterWaiting() { room -= 1 }
        }
        // Drop the woken entries once they are half the queue, so that a queue
        // that never quite empties (steady pressure) does not grow forever.
        if waitingHead == waiting.count {
            waiting.removeAll(keepingCapacity: waiting.count <= 1024)
            waitingHead = 0
        } else if waitingHead > 64, waitingHead * 2 > waiting.count {
            waiting.removeFirst(waitingHead)
            waitingHead = 0
        }
    }

    /// Returns freed memory to the system when chunks were freed since the last
    /// call: glibc keeps freed blocks of this size in its heap, where they would
    /// stay resident. Called from the server's once-a-tick housekeeping.
    func trim() {
        guard releasedSinceTrim > 0 else { return }
        releasedSinceTrim = 0
        malloc_trim(0)
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

/// A reader that stopped because the pool's budget was spent.
protocol ChunkWaiter: AnyObject {
    /// Starts reading again; false if there is nothing to resume (closed since).
    func resumeAfterWaiting() -> Bool
}
