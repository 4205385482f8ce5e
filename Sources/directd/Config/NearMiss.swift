/// The near-miss check: an unknown key that is one of directd's own in another
/// spelling would silently widen the bind if it were ignored, so it fails.
///
/// It runs once for every unknown key of a file, so its cost per key is kept
/// small and fixed: no allocation per known key, a length test first, and an
/// edit distance that stops as soon as it is past 2.
extension ConfigFile {
    /// Fails for an unknown key that is one of `known` in another spelling:
    /// other case, "_" for "-", or one or two letters off.
    static func rejectNearMiss(_ key: String, of known: [String], path: String) throws(ConfigError) {
        try rejectNearMiss(key, of: NearMiss.Candidates(known), path: path)
    }

    static func rejectNearMiss(_ key: String, of known: NearMiss.Candidates, path: String) throws(ConfigError) {
        // Keys much longer than any option cannot be two edits away: skip the work.
        guard key.utf8.count <= 4 * NearMiss.longest, let meant = known.nearMiss(of: key) else { return }
        throw ConfigError(description: "Config file \(path): unknown key \(ConfigText.quoted(key)); did you mean \"\(meant)\"? (refusing to start rather than ignore it)")
    }
}

enum NearMiss {
    /// Longer normalised keys are never compared (no option key comes near it).
    static let longest = 64

    /// Known keys, normalised once.
    struct Candidates: Sendable {
        let keys: [(text: String, scalars: [UInt32])]

        init(_ keys: [String]) {
            self.keys = keys.map { ($0, NearMiss.normalised($0)) }
        }

        /// directd's own option keys, and the one top-level key.
        static let options = Candidates(OptionTable.keys)
        static let topLevel = Candidates(["options"])

        /// The known key that `key` is a misspelling of, if any.
        func nearMiss(of key: String) -> String? {
            let scalars = NearMiss.normalised(key)
            guard scalars.count <= NearMiss.longest else { return nil }
            return keys.first(where: { NearMiss.isWithinTwoEdits($0.scalars, scalars) })?.text
        }
    }

    /// Lower case, "_" as "-", as Unicode scalar values; ASCII without any
    /// String work, which is what nearly every key is.
    static func normalised(_ key: String) -> [UInt32] {
        var result: [UInt32] = []
        result.reserveCapacity(key.utf8.count)
        for scalar in key.unicodeScalars {
            switch scalar.value {
            case 0x41...0x5A: result.append(scalar.value | 0x20)
            case 0x5F: result.append(0x2D)
            case 0..<0x80: result.append(scalar.value)
            default: result += String(scalar).lowercased().unicodeScalars.map(\.value)
            }
            if result.count > longest { break }
        }
        return result
    }

    /// Levenshtein distance of at most 2, on Unicode scalars, in a band of the
    /// five diagonals around the main one: O(length), and it gives up early.
    static func isWithinTwoEdits(_ a: [UInt32], _ b: [UInt32]) -> Bool {
        guard abs(a.count - b.count) <= 2 else { return false }
        if a == b { return true }
        guard !a.isEmpty, !b.isEmpty else { return max(a.count, b.count) <= 2 }
        let limit = 3   // any distance past 2 is stored as 3
        // previous[j] and current[j] for j in 0...b.count; outside the band they are `limit`.
        var previous = [Int](repeating: limit, count: b.count + 1)
        var current = previous
        for j in 0...min(b.count, 2) { previous[j] = j }
        for i in 1...a.count {
            let low = max(1, i - 2), high = min(b.count, i + 2)
            current[low - 1] = low - 1 == 0 ? min(i, limit) : limit
            var rowBest = current[low - 1]
            if low <= high {
                for j in low...high {
                    let substitution = previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)
                    let value = min(previous[j] + 1, current[j - 1] + 1, substitution, limit)
                    current[j] = value
                    rowBest = min(rowBest, value)
                }
            }
            if high < b.count { current[high + 1] = limit }
            guard rowBest < limit else { return false }
            swap(&previous, &current)
        }
        return previous[b.count] <= 2
    }
}
