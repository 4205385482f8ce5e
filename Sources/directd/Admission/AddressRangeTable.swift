/// A set of addresses of one family, held as sorted, disjoint, non-adjacent
/// closed ranges, so that a lookup is a binary search: O(log n) in the number of
/// ranges, where testing each prefix in turn was O(n) per accepted client.
///
/// Prefixes are ranges whose ends are aligned; merging them at build time also
/// folds duplicates and nested prefixes away, so 10,000 entries that overlap cost
/// no more than the distinct space they cover.
struct AddressRangeTable<Address: FixedWidthInteger & UnsignedInteger & Sendable>: Sendable {
    /// Range starts and ends, index for index, ascending, each range strictly after
    /// the end of the one before plus one (so no two could have been merged).
    private let starts: [Address]
    private let ends: [Address]

    var count: Int { starts.count }
    var isEmpty: Bool { starts.isEmpty }

    /// Builds the table from closed ranges given in any order, overlapping or not.
    init(ranges: [ClosedRange<Address>]) {
        var starts: [Address] = [], ends: [Address] = []
        starts.reserveCapacity(ranges.count)
        ends.reserveCapacity(ranges.count)
        for range in ranges.sorted(by: { $0.lowerBound < $1.lowerBound }) {
            // Merge into the previous range when it overlaps or touches it. The
            // `end < .max` test keeps `end + 1` from overflowing at the top of the space.
            if let end = ends.last, end == .max || range.lowerBound <= end + 1 {
                ends[ends.count - 1] = max(end, range.upperBound)
            } else {
                starts.append(range.lowerBound)
                ends.append(range.upperBound)
            }
        }
        self.starts = starts
        self.ends = ends
    }

    /// The range of addresses a prefix covers: `base` with its host bits cleared,
    /// up to `base` with them set. `length` is 0 through the width of `Address`.
    static func range(of base: Address, length: Int) -> ClosedRange<Address> {
        precondition((0...Address.bitWidth).contains(length), "prefix length out of range")
        let hostMask: Address = length == Address.bitWidth ? 0 : Address.max >> Address(length)
        return (base & ~hostMask)...(base | hostMask)
    }

    /// True if `address` lies in one of the ranges.
    func contains(_ address: Address) -> Bool {
        search(address).found
    }

    /// The binary search behind `contains`, with the number of ranges it looked at:
    /// at most ⌈log2(count + 1)⌉, so 14 for 10,000 ranges (tests count them).
    func search(_ address: Address) -> (found: Bool, steps: Int) {
        // Find the first range starting after `address`; only the one before it can hold it.
        var low = 0, high = starts.count, steps = 0
        while low < high {
            let middle = low + (high - low) / 2
            steps += 1
            if starts[middle] <= address { low = middle + 1 } else { high = middle }
        }
        return (low > 0 && address <= ends[low - 1], steps)
    }

    /// The ranges, in order (for tests and descriptions).
    var ranges: [ClosedRange<Address>] {
        zip(starts, ends).map { $0...$1 }
    }
}
