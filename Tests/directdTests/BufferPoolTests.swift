import Testing
@testable import directd

/// A reader that records when the pool wakes it.
final class RecordingWaiter: ChunkWaiter {
    let name: String
    var closed = false
    let woken: (String) -> Void
    init(_ name: String, woken: @escaping (String) -> Void) {
        self.name = name
        self.woken = woken
    }
    func resumeAfterWaiting() -> Bool {
        woken(name)
        return !closed
    }
}

/// The pool's budget: what it hands out, who waits, in which order they are woken.
struct BufferPoolTests {
    @Test func budgetIsCountedInChunksAndNeverBelowFour() {
        #expect(BufferPool.chunks(for: 0) == 4)
        #expect(BufferPool.chunks(for: 32 << 20) == (32 << 20) / BufferPool.chunkBytes)
        let pool = BufferPool(memoryLimit: 0)
        let chunks = (0..<4).compactMap { _ in pool.take() }
        #expect(chunks.count == 4)
        #expect(pool.take() == nil, "the fifth chunk is over the budget")
        #expect(pool.outstanding == 4)
        chunks.forEach(pool.give)
        #expect(pool.outstanding == 0)
    }

    @Test func waitersAreWokenFirstComeFirstServedAsChunksReturn() {
        let pool = BufferPool(memoryLimit: 0)
        let chunks = (0..<4).compactMap { _ in pool.take() }
        var order: [String] = []
        let waiters = ["a", "b", "c"].map { RecordingWaiter($0) { order.append($0) } }
        waiters[1].closed = true   // closed while waiting: skipped, costs no chunk
        waiters.forEach(pool.wait)
        #expect(pool.waitingCount == 3)
        pool.give(chunks[0])
        #expect(order == ["a"], "one chunk free: one reader woken")
        pool.give(chunks[1])
        #expect(order == ["a", "b", "c"], "a closed waiter does not use up the room")
        #expect(pool.waitingCount == 0)
        chunks[2...].forEach(pool.give)
    }

    @Test func aSmallerLimitAppliesToChunksTakenFromNowOn() {
        let pool = BufferPool(memoryLimit: 64 * BufferPool.chunkBytes)
        let chunks = (0..<10).compactMap { _ in pool.take() }
        #expect(chunks.count == 10)
        pool.setMemoryLimit(0)
        #expect(pool.take() == nil)
        chunks.forEach(pool.give)
        let again = pool.take()
        #expect(again != nil)
        again.map(pool.give)
    }
}

/// The splice pipe pool's bound, and a reload that lowers it.
struct PipePoolTests {
    @Test func aLowerLimitClosesPipesAsTheyComeBack() {
        let pool = PipePool(limit: 4, pipeSize: 0)
        var descriptors = 0
        pool.descriptorsChanged = { descriptors += $0 }
        let pipes = (0..<4).compactMap { _ in pool.take() }
        #expect(pipes.count == 4 && descriptors == 8)
        #expect(pool.take() == nil, "no fifth pipe over the limit")
        pool.limit = 2   // a reload with a smaller memory-limit
        pipes.forEach(pool.give)
        #expect(pool.open == 2, "pipes above the new limit closed as they came back")
        #expect(descriptors == 4)
        let again = (0..<3).compactMap { _ in pool.take() }
        #expect(again.count == 2, "the new limit holds")
        again.forEach(pool.give)
    }
}
