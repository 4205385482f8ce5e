import Testing
import UVBind
@testable import directd

/// SplitMix64: a small seeded generator, so that every run tests the same cases.
private struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// The obvious matcher, one prefix after the other: the reference the range table
/// must agree with, and the linear scan it replaced.
private struct NaiveAllowList {
    let prefixes: [AllowList.Prefix]

    func allows(_ peer: IPAddress) -> Bool {
        var peer = peer
        if case .v6(let v6) = peer, let mapped = v6.ipv4Mapped { peer = .v4(mapped) }
        return prefixes.contains { prefix in
            switch (prefix.ip, peer) {
            case (.v4(let network), .v4(let address)):
                let mask: UInt32 = prefix.length == 0 ? 0 : ~0 << UInt32(32 - prefix.length)
                return network.value & mask == address.value & mask
            case (.v6(let network), .v6(let address)):
                let highMask: UInt64 = prefix.length == 0 ? 0 : ~0 << UInt64(64 - min(prefix.length, 64))
                let lowMask: UInt64 = prefix.length <= 64 ? 0 : ~0 << UInt64(128 - prefix.length)
                return network.high & highMask == address.high & highMask
                    && network.low & lowMask == address.low & lowMask
            default:
                return false
            }
        }
    }
}

/// Addresses drawn from a few small neighbourhoods, so that random prefixes overlap,
/// nest and touch, and random clients land on their edges.
private struct AddressSource {
    var generator: SeededGenerator
    let v4Bases: [UInt32] = [0x0000_0000, 0xC000_0200, 0xC633_6400, 0xCB00_7100, 0xFFFF_FF00]
    let v6Bases: [(UInt64, UInt64)] = [(0, 0), (0x2001_0DB8_0000_0000, 0), (0xFFFF_FFFF_FFFF_FFFF, 0xFFFF_FFFF_FFFF_FF00)]

    mutating func v4() -> IPv4Address {
        IPv4Address(v4Bases.randomElement(using: &generator)! ^ UInt32(truncatingIfNeeded: generator.next() >> UInt64.random(in: 40...63, using: &generator)))
    }

    mutating func v6() -> IPv6Address {
        let base = v6Bases.randomElement(using: &generator)!
        let noise = generator.next() >> UInt64.random(in: 0...63, using: &generator)
        return Bool.random(using: &generator)
            ? IPv6Address(high: base.0 ^ noise, low: base.1 ^ generator.next())
            : IPv6Address(high: base.0, low: base.1 ^ noise)
    }

    mutating func prefixText() -> String {
        switch Int.random(in: 0..<5, using: &generator) {
        case 0, 1:
            let length = Int.random(in: 0...32, using: &generator)
            let network = AddressRangeTable<UInt32>.range(of: v4().value, length: length).lowerBound
            return "\(IPv4Address(network))/\(length)"
        case 2:
            let length = Int.random(in: 96...128, using: &generator)
            let network = AddressRangeTable<UInt32>.range(of: v4().value, length: length - 96).lowerBound
            return "::ffff:\(IPv4Address(network))/\(length)"
        default:
            let length = Int.random(in: 0...128, using: &generator)
            let network = AddressRangeTable<UInt128>.range(of: v6().wideValue, length: length).lowerBound
            return "\(IPv6Address(wideValue: network))/\(length)"
        }
    }

    mutating func client() -> IPAddress {
        switch Int.random(in: 0..<3, using: &generator) {
        case 0: .v4(v4())
        case 1: .v6(IPv6Address(high: 0, low: 0xFFFF_0000_0000 | UInt64(v4().value)))
        default: .v6(v6())
        }
    }
}

struct AllowListLookupTests {
    @Test func agreesWithTheLinearScanOnRandomLists() throws {
        var source = AddressSource(generator: SeededGenerator(state: 0x5EED))
        var allowed = 0, refused = 0
        for _ in 0..<300 {
            let count = Int.random(in: 1...40, using: &source.generator)
            let text = (0..<count).map { _ in source.prefixText() }.joined(separator: ", ")
            let list = try AllowList(parsing: text)
            let reference = NaiveAllowList(prefixes: list.prefixes)
            #expect(list.prefixes.count == count)
            for _ in 0..<200 {
                let client = source.client()
                let verdict = list.allows(client)
                #expect(verdict == reference.allows(client), "\(client) against \(text)")
                if verdict { allowed += 1 } else { refused += 1 }
            }
        }
        // Both answers occur often, or the comparison proved little.
        #expect(allowed > 5_000 && refused > 5_000, "allowed \(allowed), refused \(refused)")
    }

    @Test func mergesOverlappingNestedAndTouchingPrefixes() throws {
        let list = try AllowList(parsing: "192.0.2.0/25, 192.0.2.128/25, 192.0.2.7, 192.0.2.0/24, 198.51.100.0/24, 198.51.101.0/24, 203.0.113.0/24, 255.255.255.255, 255.0.0.0/8")
        let table = AddressRangeTable<UInt32>(ranges: list.prefixes.compactMap {
            if case .v4(let a) = $0.ip { AddressRangeTable.range(of: a.value, length: $0.length) } else { nil }
        })
        #expect(table.ranges == [0xC000_0200...0xC000_02FF, 0xC633_6400...0xC633_65FF,
                                 0xCB00_7100...0xCB00_71FF, 0xFF00_0000...0xFFFF_FFFF])
        let v6 = AddressRangeTable<UInt128>(ranges: [UInt128.max...UInt128.max, 0...UInt128.max, 5...9])
        #expect(v6.ranges == [0...UInt128.max])
        #expect(v6.contains(.max) && v6.contains(0))
        #expect(AddressRangeTable<UInt32>(ranges: []).contains(0) == false)
    }

    /// 10,000 entries against one, counted: the search looks at 14 ranges instead of
    /// one, where the linear scan tested all 10,000 prefixes.
    @Test func lookupStepsGrowWithTheLogarithmOfTheList() throws {
        var generator = SeededGenerator(state: 0x10C)
        for count in [1, 2, 100, 1_000, 10_000] {
            // Distinct, non-touching /24s, so that the table keeps `count` ranges.
            let entries = (0..<count).map { "\(IPv4Address(UInt32($0) << 18 | UInt32.random(in: 1..<1024, using: &generator) << 8))/24" }
            let list = try AllowList(parsing: entries.joined(separator: ","))
            #expect(list.ipv4Ranges.count == count)
            var bound = 0
            while (1 << bound) < count + 1 { bound += 1 }
            var most = 0
            for _ in 0..<2_000 {
                let probe = UInt32.random(in: 0...UInt32.max, using: &generator)
                let (found, steps) = list.ipv4Ranges.search(probe)
                #expect(found == list.allows(.v4(IPv4Address(probe))))
                most = max(most, steps)
            }
            #expect(most <= bound, "\(count) entries: \(most) steps")
            #expect(most >= bound - 1, "\(count) entries: \(most) steps")
            if count == 10_000 { #expect(most == 14) }
        }
    }

    /// Lookup cost with 10,000 entries against one, as a ratio measured in the same
    /// run (never an absolute time). A binary search over 10,000 merged ranges takes
    /// 14 steps; the linear scan it replaced tested every entry.
    @Test func lookupCostBarelyGrowsWithTheList() throws {
        var source = AddressSource(generator: SeededGenerator(state: 0xB16))
        // 10,000 distinct /32s and /24s spread over the whole IPv4 space, so that
        // nothing merges away and the table really holds ~10,000 ranges.
        var entries: [String] = []
        for index in 0..<10_000 {
            let base = UInt32(index) << 18 | UInt32.random(in: 0..<(1 << 10), using: &source.generator) << 8
            entries.append(index % 2 == 0 ? "\(IPv4Address(base))/24" : "\(IPv4Address(base | 7))")
        }
        let large = try AllowList(parsing: entries.joined(separator: ","))
        let single = try AllowList(parsing: entries[0])
        // Half the clients are in the list (spread over all of it), half anywhere.
        let clients = (0..<1_024).map { index in
            let entry = entries[Int.random(in: 0..<entries.count, using: &source.generator)]
            return index % 2 == 0
                ? IPAddress.v4(IPv4Address(entry.split(separator: "/")[0])!)
                : IPAddress.v4(IPv4Address(UInt32.random(in: 0...UInt32.max, using: &source.generator)))
        }

        /// Seconds per lookup of each matcher: the best of many short rounds (each
        /// shorter than a scheduler time slice, so that some run undisturbed on a busy
        /// machine), the matchers taking turns so that load elsewhere hits them alike.
        func secondsPerLookup(_ matchers: [(allows: (IPAddress) -> Bool, rounds: Int)]) -> [Double] {
            var best = [Double](repeating: .infinity, count: matchers.count)
            var hits = 0
            for round in 0..<30 {
                for (index, matcher) in matchers.enumerated() where round < matcher.rounds {
                    let start = ContinuousClock.now
                    for client in clients where matcher.allows(client) { hits += 1 }
                    let elapsed = ContinuousClock.now - start
                    let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
                    best[index] = min(best[index], seconds / Double(clients.count))
                }
            }
            #expect(hits > 0)
            return best
        }
        let naiveSingle = NaiveAllowList(prefixes: single.prefixes)
        let naiveLarge = NaiveAllowList(prefixes: large.prefixes)
        // `rounds`: how many of the rounds each matcher takes part in (the linear
        // scan of 10,000 entries is slow enough to be measured in three).
        let costs = secondsPerLookup([(single.allows, 30), (large.allows, 30), (naiveSingle.allows, 30), (naiveLarge.allows, 3)])
        let (singleCost, largeCost, naiveSingleCost, naiveLargeCost) = (costs[0], costs[1], costs[2], costs[3])
        print("allow-list lookup: 1 entry \(Int(singleCost * 1e9)) ns, 10,000 entries \(Int(largeCost * 1e9)) ns, ratio \(largeCost / singleCost); linear scan: 1 entry \(Int(naiveSingleCost * 1e9)) ns, 10,000 entries \(Int(naiveLargeCost * 1e9)) ns, ratio \(naiveLargeCost / naiveSingleCost)")
        // Unoptimised, as `make test` builds, 14 steps cost about 2.5 times one step and
        // the call around them. Optimised, one entry takes ~1.5 ns and 10,000 ~27 ns
        // (cache misses), so only the comparison with the linear scan below holds there.
        #if DEBUG
        #expect(largeCost < 5 * singleCost, "10,000 entries cost \(largeCost / singleCost)× one entry")
        #endif
        // The measurement can tell the difference: the linear scan is far slower, and
        // grows at least a hundred times faster than the search.
        #expect(naiveLargeCost > 50 * naiveSingleCost)
        #expect(largeCost / singleCost < (naiveLargeCost / naiveSingleCost) / 100)
        // Both lists answer the same as the scan.
        for client in clients {
            #expect(large.allows(client) == naiveLarge.allows(client))
        }
    }
}
