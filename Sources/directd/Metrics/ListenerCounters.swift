/// The counters of one listener address. Kept after the listener closes (a
/// counter never goes back), and found again if the address comes back.
struct ListenerCounters {
    /// The `listener` label: the address as the log writes it.
    let label: String
    /// Connections admitted (refused ones are in `refused`).
    var accepted: UInt64 = 0
    var open = 0
    /// By `RefusalReason.rawValue`.
    var refused = [UInt64](repeating: 0, count: RefusalReason.allCases.count)
    /// Bytes read from and to clients, added as they move (open sessions included).
    var bytesFromClients: UInt64 = 0
    var bytesToClients: UInt64 = 0

    init(label: String) {
        self.label = label
    }
}
