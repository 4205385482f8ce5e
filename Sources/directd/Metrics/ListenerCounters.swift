/// The counters of one listener address. Kept after the listener closes (a
/// counter never goes back), and found again if the address comes back.
final class ListenerCounters {
    /// The `listener` label: the address as the log writes it.
    let label: String
    /// Connections admitted (refused ones are in `refused`).
    var accepted: UInt64 = 0
    var open = 0
    /// By `RefusalReason.rawValue`.
    var refused = [UInt64](repeating: 0, count: RefusalReason.allCases.count)
    /// The bytes its sessions move, added on the relay's hot path (see
    /// `ByteCounters`): allocated once here, freed with this object.
    let bytes: UnsafeMutablePointer<ByteCounters>

    init(label: String) {
        self.label = label
        bytes = UnsafeMutablePointer<ByteCounters>.allocate(capacity: 1)
        bytes.initialize(to: ByteCounters())
    }

    deinit {
        bytes.deinitialize(count: 1)
        bytes.deallocate()
    }

    /// A direction's counting, for a session on this listener.
    func counting(fromClient: Bool, toClient: Bool) -> ByteCounting {
        ByteCounting(counters: bytes, fromClient: fromClient, toClient: toClient)
    }
}
