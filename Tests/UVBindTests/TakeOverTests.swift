import CUV
#if canImport(Glibc)
import Glibc
#endif
import Testing
@_spi(Daemon) @testable import UVBind

/// `ListenerGroup.takeOver`: a descriptor handed over for a target is served
/// instead of a new socket (a restart's stored listener, its backlog intact);
/// one the adoption checks refuse is closed, and nothing opens in its place.
@Suite(.serialized)
struct TakeOverTests {
    /// A TCP socket on 127.0.0.1, kernel's port, listening unless told not to.
    func loopbackSocket(listening: Bool = true) -> (fd: Int32, port: UInt16) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        precondition(fd >= 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        precondition(bound && (!listening || listen(fd, 16) == 0))
        return (fd, UInt16(bigEndian: address.sin_port))
    }

    func inode(_ fd: Int32) -> UInt64 {
        var status = stat()
        return fstat(fd, &status) == 0 ? UInt64(status.st_ino) : 0
    }

    /// `fd` no longer names the socket with `inode` (tests in parallel may
    /// reuse the number at once, so the number alone proves nothing).
    func isClosed(_ fd: Int32, was inode: UInt64) -> Bool {
        fcntl(fd, F_GETFD) == -1 || self.inode(fd) != inode
    }

    @Test func aHandedOverSocketIsServedForItsTarget() throws {
        let loop = TestLoop()
        let (fd, port) = loopbackSocket()
        let socketInode = inode(fd)
        var asked: [ListenTarget] = []
        let group = try ListenerGroup.open(BindPlan(value: "127.0.0.1,127.0.0.2", port: port), loop: loop.loop,
                                           takeOver: { target in
            asked.append(target)
            return target.address.ip == .v4(.loopback) ? fd : nil
        }) { _, _ in }
        #expect(asked.map(\.address.description) == ["127.0.0.1:\(port)", "127.0.0.2:\(port)"], "asked once per target")
        let first = try #require(group.listeners.first)
        #expect(first.isAdopted && first.fileDescriptor.map(inode) == socketInode, "the same socket")
        #expect(group.listeners.count == 2 && !group.listeners[1].isAdopted, "the other target opens a new socket")
        // Reconciled like any other: kept while wanted.
        let changes = try group.reconcile(to: BindPlan(value: "127.0.0.1", port: port))
        #expect(changes.kept.map { $0 === first } == [true])
        group.close()
        #expect(isClosed(fd, was: socketInode), "closed with its listener")
        #expect(loop.close() == 0)
    }

    @Test func aRefusedSocketIsClosedAndNothingOpensInstead() throws {
        let loop = TestLoop()
        let (fd, port) = loopbackSocket(listening: false)
        let socketInode = inode(fd)
        let error = #expect(throws: BindError.self) {
            try ListenerGroup.open(BindPlan(value: "127.0.0.1", port: port), loop: loop.loop,
                                   takeOver: { _ in fd }) { _, _ in }.close()
        }
        #expect(error?.step == .adoptListening, "\(String(describing: error))")
        #expect(isClosed(fd, was: socketInode), "the group closed the descriptor it was given")
        #expect(ListeningSockets.on(port: port).isEmpty, "no socket of its own in its place")
        #expect(loop.close() == 0)
    }
}
