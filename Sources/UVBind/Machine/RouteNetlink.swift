import CUV
#if canImport(Glibc)
import Glibc
#endif

/// The kernel's routing socket (rtnetlink, `NETLINK_ROUTE`): the one place
/// UVBind speaks it, for two things:
/// - an event socket subscribed to link and address changes, whose messages are
///   only hints that something changed (`openEvents`, `drain`);
/// - a dump of every link and address (`readTable`), which, unlike
///   `uv_interface_addresses`, carries each address's flags, so that an IPv6
///   address still under duplicate address detection is not taken as usable.
///
/// The constants are the kernel's ABI (linux/netlink.h, linux/rtnetlink.h,
/// linux/if_addr.h), spelled here so that no kernel header joins the C module
/// directd also imports.
enum RouteNetlink {
    // linux/netlink.h
    static let netlinkRoute: Int32 = 0
    static let messageDone: UInt16 = 3        // NLMSG_DONE
    static let messageError: UInt16 = 2       // NLMSG_ERROR
    static let flagRequest: UInt16 = 0x1      // NLM_F_REQUEST
    static let flagDump: UInt16 = 0x300       // NLM_F_ROOT | NLM_F_MATCH
    static let flagDumpInterrupted: UInt16 = 0x10 // NLM_F_DUMP_INTR
    // linux/rtnetlink.h
    static let newLink: UInt16 = 16, getLink: UInt16 = 18  // RTM_NEWLINK, RTM_GETLINK
    static let newAddress: UInt16 = 20, getAddress: UInt16 = 22 // RTM_NEWADDR, RTM_GETADDR
    static let groupLink: UInt32 = 0x1        // RTMGRP_LINK
    static let groupIPv4Address: UInt32 = 0x10  // RTMGRP_IPV4_IFADDR
    static let groupIPv6Address: UInt32 = 0x100 // RTMGRP_IPV6_IFADDR
    // linux/if_link.h, linux/if_addr.h
    static let linkName: UInt16 = 3           // IFLA_IFNAME
    static let addressAddress: UInt16 = 1     // IFA_ADDRESS
    static let addressLocal: UInt16 = 2       // IFA_LOCAL
    static let addressFlags: UInt16 = 8       // IFA_FLAGS
    static let flagTentative: UInt32 = 0x40   // IFA_F_TENTATIVE
    static let flagDADFailed: UInt32 = 0x08   // IFA_F_DADFAILED
    // net/if.h
    static let linkUp: UInt32 = 0x1, linkLoopback: UInt32 = 0x8, linkRunning: UInt32 = 0x40

    /// A non-blocking netlink socket subscribed to link, IPv4 and IPv6 address changes.
    static func openEvents() throws(UVError) -> Int32 {
        try open(groups: groupLink | groupIPv4Address | groupIPv6Address, nonBlocking: true)
    }

    private static func open(groups: UInt32, nonBlocking: Bool) throws(UVError) -> Int32 {
        let type = Int32(SOCK_RAW.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | (nonBlocking ? Int32(SOCK_NONBLOCK.rawValue) : 0)
        let fd = socket(AF_NETLINK, type, netlinkRoute)
        guard fd >= 0 else { throw UVError(-errno) }
        // struct sockaddr_nl (12 bytes): family, padding, port id (0: the
        // kernel's choice), multicast groups.
        var address = [UInt8](repeating: 0, count: 12)
        store(UInt16(AF_NETLINK), at: 0, in: &address)
        store(groups, at: 8, in: &address)
        let status = address.withUnsafeBytes {
            bind(fd, $0.baseAddress!.assumingMemoryBound(to: sockaddr.self), socklen_t($0.count))
        }
        guard status == 0 else {
            let error = UVError(-errno)
            Glibc.close(fd)
            throw error
        }
        return fd
    }

    /// What reading the event socket found.
    enum Drained: Equatable {
        /// This many messages (0: a spurious wake-up).
        case messages(Int)
        /// The kernel dropped events (ENOBUFS): only a full re-read is safe.
        case overflow
        case failed(UVError)
    }

    /// Reads every pending message of the event socket, without looking inside:
    /// they are hints, and the table is read whole afterwards. Bounded: at most
    /// `limit` reads per call, so a flood cannot hold the loop.
    static func drain(_ fd: Int32, limit: Int = 256) -> Drained {
        var buffer = [UInt8](repeating: 0, count: 16 * 1024)
        var count = 0, overflowed = false
        for _ in 0..<limit {
            let received = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if received > 0 { count += 1; continue }
            if received == 0 { break }
            switch errno {
            case EINTR: continue
            case EAGAIN, EWOULDBLOCK: return overflowed ? .overflow : .messages(count)
            case ENOBUFS: overflowed = true   // the socket stays usable; go on draining
            default: return .failed(UVError(-errno))
            }
        }
        return overflowed ? .overflow : .messages(count)
    }

    /// Every link, and every address of a link that is up and running (as
    /// `uv_interface_addresses` lists them), leaving out addresses that are
    /// tentative (duplicate address detection under way) or whose detection
    /// failed: binding them fails, and they are not the operator's yet. Those
    /// are listed in `tentative`.
    static func readTable() throws(UVError) -> InterfaceTable {
        let fd = try open(groups: 0, nonBlocking: false)
        defer { Glibc.close(fd) }
        var timeout = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        // A dump that changed under way is marked interrupted: read it again.
        for attempt in 1...4 {
            var interrupted = false
            var links: [(name: String, index: UInt32, flags: UInt32)] = []
            try dump(fd, type: getLink, sequence: UInt32(attempt * 2), interrupted: &interrupted) { type, payload in
                guard type == newLink, let link = parseLink(payload) else { return }
                links.append(link)
            }
            var table = InterfaceTable(interfaces: links.map { ($0.name, $0.index) }, addresses: [])
            try dump(fd, type: getAddress, sequence: UInt32(attempt * 2 + 1), interrupted: &interrupted) { type, payload in
                guard type == newAddress, let entry = parseAddress(payload) else { return }
                guard let link = links.first(where: { $0.index == entry.index }) else { return }
                let address = InterfaceAddress(interface: link.name, index: entry.index, ip: entry.ip,
                                               prefixLength: entry.prefixLength,
                                               isInternal: link.flags & linkLoopback != 0)
                guard link.flags & (linkUp | linkRunning) == linkUp | linkRunning else { return }
                if entry.flags & (flagTentative | flagDADFailed) != 0 {
                    table.tentative.append(address)
                } else {
                    table.addresses.append(address)
                }
            }
            if !interrupted || attempt == 4 { return table }
        }
        return InterfaceTable(interfaces: [], addresses: [])
    }

    /// Sends one dump request (with an empty family header) and hands each
    /// message's type and payload to `body`, until NLMSG_DONE.
    private static func dump(_ fd: Int32, type: UInt16, sequence: UInt32, interrupted: inout Bool,
                             _ body: (UInt16, ArraySlice<UInt8>) -> Void) throws(UVError) {
        // nlmsghdr (16 bytes) + rtgenmsg-sized family header, zeroed (AF_UNSPEC: all).
        // RTM_GETLINK wants an ifinfomsg (16 bytes); RTM_GETADDR an ifaddrmsg (8).
        let headerLength = type == getLink ? 16 : 8
        var request = [UInt8](repeating: 0, count: 16 + headerLength)
        store(UInt32(request.count), at: 0, in: &request)
        store(type, at: 4, in: &request)
        store(flagRequest | flagDump, at: 6, in: &request)
        store(sequence, at: 8, in: &request)
        let sent = request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
        guard sent == request.count else { throw UVError(-errno) }

        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let received = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if received < 0 {
                if errno == EINTR { continue }
                throw UVError(-errno)
            }
            guard received > 0 else { throw UVError(UV_EOF.rawValue) }
            var offset = 0
            while offset + 16 <= received {
                let length = Int(load(UInt32.self, at: offset, in: buffer))
                let messageType = load(UInt16.self, at: offset + 4, in: buffer)
                let flags = load(UInt16.self, at: offset + 6, in: buffer)
                let messageSequence = load(UInt32.self, at: offset + 8, in: buffer)
                guard length >= 16, offset + length <= received else { break }
                if flags & flagDumpInterrupted != 0 { interrupted = true }
                if messageSequence == sequence {
                    switch messageType {
                    case messageDone:
                        return
                    case messageError:
                        let code = length >= 20 ? load(Int32.self, at: offset + 16, in: buffer) : 0
                        if code != 0 { throw UVError(code) }
                        return
                    default:
                        body(messageType, buffer[(offset + 16)..<(offset + length)])
                    }
                }
                offset += (length + 3) & ~3
            }
        }
    }

    /// RTM_NEWLINK: struct ifinfomsg (16 bytes), then attributes; the name is IFLA_IFNAME.
    static func parseLink(_ payload: ArraySlice<UInt8>) -> (name: String, index: UInt32, flags: UInt32)? {
        let base = payload.startIndex
        guard payload.count >= 16 else { return nil }
        let index = UInt32(bitPattern: load(Int32.self, at: base + 4, in: payload))
        let flags = load(UInt32.self, at: base + 8, in: payload)
        var name: String?
        attributes(payload, from: base + 16) { type, value in
            if type == linkName {
                name = String(decoding: value.prefix { $0 != 0 }, as: UTF8.self)
            }
        }
        guard let name, index != 0 else { return nil }
        return (name, index, flags)
    }

    /// RTM_NEWADDR: struct ifaddrmsg (family, prefix length, flags, scope, index),
    /// then attributes. The local address is IFA_LOCAL when present (on a
    /// point-to-point link IFA_ADDRESS is the peer's), IFA_ADDRESS otherwise;
    /// IFA_FLAGS, when present, holds all the flags (the header has 8 bits).
    static func parseAddress(_ payload: ArraySlice<UInt8>)
        -> (index: UInt32, ip: IPAddress, prefixLength: Int, flags: UInt32)? {
        let base = payload.startIndex
        guard payload.count >= 8 else { return nil }
        let family = Int32(payload[base])
        let prefixLength = Int(payload[base + 1])
        var flags = UInt32(payload[base + 2])
        let index = load(UInt32.self, at: base + 4, in: payload)
        var local: IPAddress?, address: IPAddress?
        attributes(payload, from: base + 8) { type, value in
            switch type {
            case addressLocal: local = ip(family: family, value)
            case addressAddress: address = ip(family: family, value)
            case addressFlags where value.count >= 4: flags = load(UInt32.self, at: value.startIndex, in: value)
            default: break
            }
        }
        guard let ip = local ?? address else { return nil }
        return (index, ip, prefixLength, flags)
    }

    private static func ip(family: Int32, _ bytes: ArraySlice<UInt8>) -> IPAddress? {
        switch (family, bytes.count) {
        case (AF_INET, 4):
            let b = Array(bytes)
            return .v4(IPv4Address(b[0], b[1], b[2], b[3]))
        case (AF_INET6, 16):
            return .v6(IPv6Address(bytes: bytes))
        default:
            return nil
        }
    }

    /// Walks struct rtattr entries (length, type, value; 4-byte aligned).
    private static func attributes(_ payload: ArraySlice<UInt8>, from start: Int,
                                   _ body: (UInt16, ArraySlice<UInt8>) -> Void) {
        var offset = start
        while offset + 4 <= payload.endIndex {
            let length = Int(load(UInt16.self, at: offset, in: payload))
            let type = load(UInt16.self, at: offset + 2, in: payload) & 0x3FFF  // drop NLA_F_NESTED and friends
            guard length >= 4, offset + length <= payload.endIndex else { return }
            body(type, payload[(offset + 4)..<(offset + length)])
            offset += (length + 3) & ~3
        }
    }

    /// Native-endian loads and stores: netlink headers are in host byte order.
    /// Offsets are the collection's own indices (absolute for a slice).
    private static func load<T: FixedWidthInteger, C: RandomAccessCollection<UInt8>>(
        _: T.Type, at offset: Int, in bytes: C
    ) -> T where C.Index == Int {
        var value: T = 0
        withUnsafeMutableBytes(of: &value) { raw in
            for i in 0..<raw.count { raw[i] = bytes[offset + i] }
        }
        return value
    }

    private static func store<T: FixedWidthInteger>(_ value: T, at offset: Int, in bytes: inout [UInt8]) {
        withUnsafeBytes(of: value) { raw in
            for i in 0..<raw.count { bytes[offset + i] = raw[i] }
        }
    }
}
