import UVBind

/// The last few refusals, for `directd status`: a fixed ring, so that a flood
/// of refused clients costs a constant amount of memory. Loop only.
struct RecentRefusals {
    struct Entry {
        /// The loop's clock, milliseconds.
        let at: UInt64
        let reason: RefusalReason
        let client: SocketAddress?
        let listener: SocketAddress
    }

    static let capacity = 10
    private var ring: [Entry] = []
    private var next = 0

    mutating func record(_ entry: Entry) {
        if ring.count < Self.capacity {
            ring.append(entry)
        } else {
            ring[next] = entry
        }
        next = (next + 1) % Self.capacity
    }

    /// Newest first.
    var entries: [Entry] {
        guard ring.count == Self.capacity else { return ring.reversed() }
        return (ring[next...] + ring[..<next]).reversed()
    }
}
