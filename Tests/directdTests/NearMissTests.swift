import Testing
@testable import directd

/// The banded edit distance behind the near-miss check agrees with the full
/// Levenshtein distance wherever it matters (at most 2, or not).
struct NearMissTests {
    func distance(_ a: [UInt32], _ b: [UInt32]) -> Int {
        guard !a.isEmpty, !b.isEmpty else { return max(a.count, b.count) }
        var previous = Array(0...b.count)
        for i in 1...a.count {
            var current = [i] + Array(repeating: 0, count: b.count)
            for j in 1...b.count {
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            previous = current
        }
        return previous[b.count]
    }

    @Test func agreesWithTheFullDistance() {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<20_000 {
            // A small alphabet makes near misses common.
            let a = (0..<Int.random(in: 0...9, using: &generator)).map { _ in UInt32.random(in: 97...100, using: &generator) }
            var b = a
            for _ in 0..<Int.random(in: 0...4, using: &generator) {
                switch Int.random(in: 0...2, using: &generator) {
                case 0 where !b.isEmpty: b.remove(at: Int.random(in: 0..<b.count, using: &generator))
                case 1: b.insert(UInt32.random(in: 97...100, using: &generator), at: Int.random(in: 0...b.count, using: &generator))
                default: if !b.isEmpty { b[Int.random(in: 0..<b.count, using: &generator)] = UInt32.random(in: 97...100, using: &generator) }
                }
            }
            #expect(NearMiss.isWithinTwoEdits(a, b) == (distance(a, b) <= 2), "\(a) \(b)")
        }
    }

    @Test func catchesTheMisspellingsItAlwaysCaught() {
        for key in ["bind_interface", "Bind-Interface", "bind-interfaces", "bind-intrface", "BIND_INTERFACE", "whitelst",
                    "direct-acess-port", "bínd-interface"] {
            #expect(NearMiss.Candidates.options.nearMiss(of: key) != nil, "\(key)")
        }
        for key in ["relay-server", "api-server", "k1", "custom-rendezvous-server", String(repeating: "b", count: 300)] {
            #expect(NearMiss.Candidates.options.nearMiss(of: key) == nil, "\(key)")
        }
        #expect(NearMiss.Candidates.topLevel.nearMiss(of: "Options") == "options")
    }
}
