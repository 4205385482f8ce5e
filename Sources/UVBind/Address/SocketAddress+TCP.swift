import CUV

extension SocketAddress {
    /// The address a libuv TCP handle is bound to (`uv_tcp_getsockname`), with
    /// the kernel's port: for a listener, where it really listens.
    public static func local(of handle: UnsafeMutablePointer<uv_tcp_t>) throws(UVError) -> SocketAddress {
        try read { uv_tcp_getsockname(handle, $0, $1) }
    }

    /// The address of the peer of a connected libuv TCP handle (`uv_tcp_getpeername`).
    public static func peer(of handle: UnsafeMutablePointer<uv_tcp_t>) throws(UVError) -> SocketAddress {
        try read { uv_tcp_getpeername(handle, $0, $1) }
    }

    /// The one place a sockaddr is read back from the kernel: room for any
    /// family, then only IPv4 and IPv6 are accepted (EAFNOSUPPORT otherwise).
    private static func read(
        _ call: (UnsafeMutablePointer<sockaddr>, UnsafeMutablePointer<Int32>) -> Int32
    ) throws(UVError) -> SocketAddress {
        var storage = sockaddr_storage()
        var length = Int32(MemoryLayout<sockaddr_storage>.size)
        let (status, address) = withUnsafeMutablePointer(to: &storage) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                let status = call(sa, &length)
                return (status, status == 0 ? SocketAddress(sa) : nil)
            }
        }
        if let error = UVError.check(status) { throw error }
        guard let address else { throw UVError.familyNotSupported }
        return address
    }
}
