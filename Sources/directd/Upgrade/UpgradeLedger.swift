#if canImport(Glibc)
import Glibc
#endif

/// The upgrades asked for over the control socket, numbered, with their
/// outcomes once known: `directd upgrade` starts one, then asks after its
/// number until it has an answer. Bounded: the last `kept` only. Loop only.
struct UpgradeLedger {
    private(set) var entries: [(attempt: UInt64, outcome: UpgradeOutcome?)] = []
    private var next: UInt64 = 1
    static let kept = 8

    /// A new attempt's number, its outcome still pending.
    mutating func open() -> UInt64 {
        let attempt = next
        next += 1
        entries.append((attempt, nil))
        if entries.count > Self.kept { entries.removeFirst(entries.count - Self.kept) }
        return attempt
    }

    mutating func close(_ attempt: UInt64, _ outcome: UpgradeOutcome) {
        guard let index = entries.firstIndex(where: { $0.attempt == attempt }) else { return }
        entries[index].outcome = outcome
    }

    /// nil: no such attempt here (another process answers, or it is too old);
    /// .some(nil): still running.
    func outcome(of attempt: UInt64) -> UpgradeOutcome?? {
        entries.first(where: { $0.attempt == attempt }).map(\.outcome)
    }
}
