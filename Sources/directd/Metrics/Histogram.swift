/// A Prometheus histogram with fixed bucket bounds, in seconds. Observing
/// walks the bounds (a dozen) and adds: no allocation, no lock (loop only).
struct Histogram {
    /// Upper bounds, ascending; `+Inf` is implied (the total count).
    let bounds: [Double]
    /// Observations at or below each bound (not cumulative; the exposition sums).
    private(set) var counts: [UInt64]
    private(set) var count: UInt64 = 0
    private(set) var sum: Double = 0

    init(bounds: [Double]) {
        self.bounds = bounds
        counts = [UInt64](repeating: 0, count: bounds.count)
    }

    mutating func observe(_ seconds: Double) {
        count &+= 1
        sum += seconds
        for index in bounds.indices where seconds <= bounds[index] {
            counts[index] &+= 1
            return
        }
    }

    /// An upstream's connect time: loopback takes well under a millisecond, a
    /// far host tens of them, a timeout seconds.
    static let connectBounds: [Double] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
    /// A connection's life: a probe lasts milliseconds, a remote desktop hours.
    static let durationBounds: [Double] = [0.01, 0.1, 1, 10, 60, 300, 900, 3600, 14_400, 86_400]
}
