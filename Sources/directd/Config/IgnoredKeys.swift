/// The warnings for keys a file holds that directd ignores, bounded: the first
/// `named` are named, the rest only counted. A file of 100,000 unknown keys
/// would otherwise log 100,000 lines at start and again at every reload.
struct IgnoredKeys {
    static let named = 20
    private var warnings: [String] = []
    private var more = 0

    mutating func add(_ warning: @autoclosure () -> String) {
        if warnings.count < Self.named { warnings.append(warning()) } else { more += 1 }
    }

    /// The warnings, with one line for those not named.
    func lines(path: String) -> [String] {
        guard more > 0 else { return warnings }
        return warnings + ["config file \(path): ignoring \(more) more unknown keys (only the first \(Self.named) are named)"]
    }
}
