import CUV
#if canImport(Glibc)
import Glibc
#endif

/// The pipes that spliced connections move their bytes through, bounded in
/// number, made on demand and reused.
///
/// A pipe is taken when a direction's source has bytes and given back as soon
/// as it is empty again (the source has nothing more for now), so an idle
/// connection holds no pipe: pipes follow traffic, as the buffer pool's chunks
/// do. Taking and giving back is an array pop and push; the descriptors stay
/// open across connections.
///
/// Bounds:
/// - at most `limit` pipes are open at once (in use and free together);
/// - a new pipe is made only while the descriptor budget (`hasRoom`, the accept
///   gate's) has room for its two descriptors;
/// - free pipes beyond `keep` are closed at once.
/// When no pipe can be had, `take` answers nil and the direction copies
/// instead: a connection never fails for want of a pipe.
///
/// A pipe that may still hold bytes (a connection closed mid-transfer) is
/// `destroy`ed, never given back: its bytes belong to a stream that is gone.
final class PipePool {
    struct Pipe {
        /// Bytes come out here (splice from it into the sink)…
        let readEnd: Int32
        /// …after going in here (splice into it from the source).
        let writeEnd: Int32
    }

    /// Pipes open at most, in use and free.
    /// A reload may change it (memory-limit); pipes open above a smaller limit
    /// close as they come back.
    var limit: Int
    /// Bytes a pipe holds (`F_SETPIPE_SZ`); 0 keeps the kernel's default (64 KiB).
    /// An empty pipe holds no pages, whatever its size.
    let pipeSize: Int
    private let keep: Int
    private var free: [Pipe] = []
    /// Pipes open now, in use and free.
    private(set) var open = 0
    /// Whether the process may open `count` more descriptors (the accept gate's budget).
    var hasRoom: (Int) -> Bool = { _ in true }
    /// Told of every pipe opened (+2) or closed (-2): pipes count against the
    /// descriptor budget, whichever connection uses them.
    var descriptorsChanged: (Int) -> Void = { _ in }

    init(limit: Int, pipeSize: Int, keep: Int = 64) {
        self.limit = limit
        self.pipeSize = pipeSize
        self.keep = keep
    }

    deinit {
        free.forEach { Self.close($0) }
    }

    /// An empty pipe, or nil when none can be had (the limit, the descriptor
    /// budget, or pipe2 failing with EMFILE/ENFILE).
    func take() -> Pipe? {
        if let pipe = free.popLast() { return pipe }
        guard open < limit, hasRoom(2) else { return nil }
        var ends: (Int32, Int32) = (-1, -1)
        let made = withUnsafeMutableBytes(of: &ends) {
            pipe2($0.baseAddress!.assumingMemoryBound(to: Int32.self), O_CLOEXEC | O_NONBLOCK) == 0
        }
        guard made else { return nil }
        if pipeSize > 0 {
            // Best effort: above /proc/sys/fs/pipe-max-size, or past the user's
            // pipe-user-pages-soft, the pipe keeps its default size.
            _ = fcntl(ends.1, CUV_F_SETPIPE_SZ, Int32(pipeSize))
        }
        open += 1
        descriptorsChanged(2)
        return Pipe(readEnd: ends.0, writeEnd: ends.1)
    }

    /// Counts a pipe an upgrade handed over (with bytes in it) as one of this
    /// pool's, in use.
    func adopt(_ pipe: Pipe) {
        open += 1
        descriptorsChanged(2)
    }

    /// Takes back an empty pipe.
    func give(_ pipe: Pipe) {
        if free.count < keep, open <= limit {
            free.append(pipe)
        } else {
            destroy(pipe)
        }
    }

    /// Closes a pipe that may hold bytes of a stream that ended.
    func destroy(_ pipe: Pipe) {
        Self.close(pipe)
        open -= 1
        descriptorsChanged(-2)
    }

    private static func close(_ pipe: Pipe) {
        Glibc.close(pipe.readEnd)
        Glibc.close(pipe.writeEnd)
    }
}
