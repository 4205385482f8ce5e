import CUV
import UVBind

/// How relayed bytes move (`relay-mode`).
enum RelayMode: String, CaseIterable, CustomStringConvertible {
    /// splice(2) where the kernel can, copying where it cannot (the default).
    case auto
    /// splice(2); a connection whose sockets the kernel cannot splice fails.
    case splice
    /// Through user-space buffers, as before splice existed.
    case copy

    var description: String { rawValue }

    /// What the start-up log and `directd check` say.
    var explanation: String {
        switch self {
        case .auto: "relay mode auto: splice(2) through pooled pipes, copying where the kernel cannot splice or descriptors are short"
        case .splice: "relay mode splice: splice(2) through pooled pipes (copying only where descriptors are short)"
        case .copy: "relay mode copy: through pooled user-space buffers"
        }
    }
}

/// Makes a relayed session's two directions: splicing ones when the mode and
/// the descriptor budget allow, copying ones otherwise. The session asks once,
/// when its upstream has connected; echo always copies (its one socket is
/// both source and sink, and an echo is about round trips, not volume).
final class RelayStrategy {
    let mode: RelayMode
    let pipes: PipePool
    /// Whether the process may open `count` more descriptors (the accept gate's budget).
    var hasRoom: (Int) -> Bool = { _ in true }

    init(mode: RelayMode, pipes: PipePool) {
        self.mode = mode
        self.pipes = pipes
    }

    /// Descriptors a spliced connection takes beyond its two sockets: a
    /// duplicate of each, and (while bytes flow) a pipe per direction.
    static let spliceDescriptors = 2 + 4

    func directions(for session: Session, client: UnsafeMutablePointer<uv_stream_t>,
                    upstream: UnsafeMutablePointer<uv_stream_t>) -> [any RelayDirection] {
        if mode != .copy, hasRoom(Self.spliceDescriptors),
           let clientSocket = SplicedSocket(loop: session.loop, stream: client) {
            if let upstreamSocket = SplicedSocket(loop: session.loop, stream: upstream) {
                return [
                    SpliceDirection(session: session, source: client, sink: upstream,
                                    input: clientSocket, output: upstreamSocket, pipes: pipes, mode: mode),
                    SpliceDirection(session: session, source: upstream, sink: client,
                                    input: upstreamSocket, output: clientSocket, pipes: pipes, mode: mode),
                ]
            }
            clientSocket.close()
        }
        // Descriptors are short (or the mode is copy): copying needs none.
        if mode != .copy { Log.debug("#\(session.id): copying: descriptors short for splicing") }
        return [CopyDirection(session: session, source: client, sink: upstream),
                CopyDirection(session: session, source: upstream, sink: client)]
    }
}
