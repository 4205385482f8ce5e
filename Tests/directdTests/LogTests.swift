import CUV
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Testing
@testable import directd

/// The log's parts in-process: escaping, timestamps, the journal decision, the
/// rate limiter (on a clock the test drives) and the bounded sink (on a real,
/// stalled pipe).
struct LogTests {
    // MARK: escaping

    @Test func everyC0ControlDELAndC1ControlIsEscaped() {
        let controls = (0x00...0x1F).map { $0 } + [0x7F] + (0x80...0x9F).map { $0 }
        for value in controls {
            let scalar = Unicode.Scalar(UInt32(value))!
            let escaped = LogEscaping.escaped("a\(Character(scalar))b")
            #expect(!escaped.unicodeScalars.contains(scalar), "U+\(String(value, radix: 16)) left in the log")
            #expect(escaped.hasPrefix("a\\") && escaped.hasSuffix("b"))
            #expect(escaped.unicodeScalars.allSatisfy { $0.value >= 0x20 && $0.value != 0x7F && !(0x80...0x9F).contains($0.value) })
        }
        #expect(LogEscaping.escaped("a\nb\rc\td") == "a\\nb\\rc\\td")
        #expect(LogEscaping.escaped("\u{85}") == "\\u{85}")
        #expect(LogEscaping.escaped("\u{0}") == "\\u{0}")
        #expect(LogEscaping.escaped("\u{1b}[2J") == "\\u{1b}[2J")
        #expect(LogEscaping.escaped("\u{7f}") == "\\u{7f}")
    }

    @Test func unicodeLineSeparatorsAndBidiControlsAreEscaped() {
        #expect(LogEscaping.escaped("a\u{2028}b\u{2029}c") == "a\\u{2028}b\\u{2029}c")
        #expect(LogEscaping.escaped("x\u{202E}y\u{2066}z\u{200F}") == "x\\u{202e}y\\u{2066}z\\u{200f}")
    }

    @Test func ordinaryTextIsUnchanged() {
        for text in ["listening on [::1]:21118", "café 東京 \\n stays", "quote \" and tab-free", ""] {
            #expect(LogEscaping.escaped(text) == text)
        }
    }

    @Test func aForgedNewlineStaysOnOneLine() {
        let key = "x\nlistening on 0.0.0.0:22"
        for style in [LogStyle.timestamped, .journal] {
            for separator in ["\n", "\r\n", "\u{85}", "\u{2028}", "\u{0b}", "\u{0c}"] {
                let forged = key.replacingOccurrences(of: "\n", with: separator)
                let line = LogLine.format("config file c.json: ignoring unknown option \"\(forged)\"", severity: .warning, style: style)
                #expect(line.hasSuffix("\n"))
                #expect(line.unicodeScalars.filter { $0 == "\n" }.count == 1)
                #expect(!line.unicodeScalars.contains { $0 == "\r" || $0 == "\u{85}" || $0 == "\u{2028}" || $0 == "\u{0b}" || $0 == "\u{0c}" })
                #expect(line.contains("ignoring unknown option \"x\\"))
            }
        }
    }

    @Test func veryLongTextIsCutAndStaysUnderPipeBuf() {
        let line = LogLine.format(String(repeating: "é", count: 5000), severity: .error, style: .timestamped)
        #expect(line.utf8.count < Int(PIPE_BUF))
        #expect(line.hasSuffix("more bytes cut]\n"))
        #expect(line.contains(" [\(10_000 - LogLine.maximumTextBytes) more bytes cut]"))
    }

    // MARK: timestamps and the journal

    @Test func timestampsAreRFC3339UTCWithMilliseconds() {
        #expect(LogTimestamp.format(secondsSinceEpoch: 0, milliseconds: 0) == "1970-01-01T00:00:00.000Z")
        #expect(LogTimestamp.format(secondsSinceEpoch: 1_795_606_334, milliseconds: 123) == "2026-11-25T11:32:14.123Z")
        #expect(LogTimestamp.format(secondsSinceEpoch: 951_782_400, milliseconds: 7) == "2000-02-29T00:00:00.007Z")
        #expect(LogTimestamp.format(secondsSinceEpoch: 4_102_444_799, milliseconds: 999) == "2099-12-31T23:59:59.999Z")
    }

    @Test func theCurrentTimestampIsNow() throws {
        let stamp = LogTimestamp.now()
        #expect(stamp.utf8.count == 24)
        let parser = ISO8601DateFormatter()
        parser.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        let date = try #require(parser.date(from: stamp), "\(stamp) is not RFC 3339")
        #expect(abs(date.timeIntervalSinceNow) < 5)
    }

    @Test func linesHaveATimestampOrOnTheJournalAPriority() throws {
        let stamped = try Regex(#"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z warning: careful\n$"#)
        #expect(LogLine.format("careful", severity: .warning, style: .timestamped).wholeMatch(of: stamped) != nil)
        // A warning that already says so is not said twice.
        #expect(LogLine.format("warning: careful", severity: .warning, style: .timestamped).wholeMatch(of: stamped) != nil)
        #expect(LogLine.format("careful", severity: .warning, style: .journal) == "<4>warning: careful\n")
        #expect(LogLine.format("bad", severity: .error, style: .journal) == "<3>error: bad\n")
        #expect(LogLine.format("listening on 127.0.0.1:1", severity: .notice, style: .journal) == "<5>listening on 127.0.0.1:1\n")
        #expect(LogLine.format("#1 opened", severity: .info, style: .journal) == "<6>#1 opened\n")
        #expect(LogLine.format("detail", severity: .debug, style: .journal) == "<7>detail\n")
    }

    @Test func journalStreamMustNameStandardErrorsDeviceAndInode() {
        #expect(JournalStream.matches("2049:131074", device: 2049, inode: 131_074))
        for wrong in ["2049:131075", "2048:131074", "", ":", "2049", "2049:", ":131074", "2049:131074:1",
                      " 2049:131074", "2049:131074 ", "0x801:131074", "-2049:131074", "2049:+131074"] {
            #expect(!JournalStream.matches(wrong, device: 2049, inode: 131_074), "\(wrong)")
        }
        var status = stat()
        #expect(fstat(2, &status) == 0)
        let own = "\(status.st_dev):\(status.st_ino)"
        #expect(JournalStream.standardErrorIsTheJournal(own))
        #expect(!JournalStream.standardErrorIsTheJournal("\(status.st_dev):\(status.st_ino + 1)"))
        #expect(!JournalStream.standardErrorIsTheJournal(nil))
    }

    // MARK: rate limiting

    @Test func theLimiterLetsABurstThroughThenCountsAndSummarisesOncePerInterval() {
        var limiter = LogRateLimiter(burst: 3, intervalMilliseconds: 1000)
        var passed = 0
        for step in 0..<10 {
            let decision = limiter.admit(.refusedMaxConnections, severity: .warning, now: 100 + UInt64(step))
            #expect(decision.ended == nil)
            if decision.passes { passed += 1 }
        }
        #expect(passed == 3)
        // Another category has its own allowance.
        #expect(limiter.admit(.opened, severity: .info, now: 120).passes)
        #expect(limiter.nextSummaryDue == 1100)
        #expect(limiter.takeEnded(now: 1099).isEmpty)
        let summaries = limiter.takeEnded(now: 1100)
        #expect(summaries == [LogRateLimiter.Summary(category: .refusedMaxConnections, count: 7, severity: .warning,
                                                     intervalMilliseconds: 1000)])
        #expect(summaries.first?.description == "suppressed 7 similar lines (refused: max-connections) in 1 s")
        // Given once only.
        #expect(limiter.takeEnded(now: 5000).isEmpty)
        #expect(limiter.nextSummaryDue == nil)
        // The next interval starts with a fresh allowance.
        for step in 0..<3 {
            let decision = limiter.admit(.refusedMaxConnections, severity: .warning, now: 1200 + UInt64(step))
            #expect(decision.passes && decision.ended == nil)
        }
        #expect(!limiter.admit(.refusedMaxConnections, severity: .warning, now: 1203).passes)
    }

    @Test func aSummaryNotYetTakenComesBeforeTheNextIntervalsFirstLine() {
        var limiter = LogRateLimiter(burst: 1, intervalMilliseconds: 500)
        #expect(limiter.admit(.closed, severity: .info, now: 0).passes)
        #expect(!limiter.admit(.closed, severity: .info, now: 10).passes)
        #expect(!limiter.admit(.closed, severity: .warning, now: 20).passes)
        let next = limiter.admit(.closed, severity: .info, now: 600)
        #expect(next.passes)
        #expect(next.ended == LogRateLimiter.Summary(category: .closed, count: 2, severity: .warning, intervalMilliseconds: 500))
        #expect(next.ended?.description == "suppressed 2 similar lines (connection closed) in 0.5 s")
        #expect(limiter.takeEnded(now: 10_000).isEmpty)
    }

    @Test func atExitTheIntervalInProgressIsSummarisedToo() {
        var limiter = LogRateLimiter(burst: 1, intervalMilliseconds: 1000)
        _ = limiter.admit(.acceptFailed, severity: .warning, now: 0)
        _ = limiter.admit(.acceptFailed, severity: .warning, now: 1)
        #expect(limiter.takeEnded(now: 2).isEmpty)
        #expect(limiter.takeAll().map(\.count) == [1])
    }

    // MARK: the sink

    @Test func aStalledOutputFillsTheBufferToItsBoundThenWholeLinesAreDroppedCountedAndReported() throws {
        let pipe = try StalledPipe()
        let sink = LogSink(output: pipe.output, capacity: 2048) { "\($0) log lines dropped\n" }
        let lines = (0..<200).map { "line \(String($0).leftPadded(3)) " + String(repeating: "x", count: 87) + "\n" }
        for line in lines {
            sink.append(line)
            #expect(sink.backlog <= sink.capacity)
        }
        #expect(pipe.unread >= pipe.size - 100, "the pipe should be full")
        #expect(sink.backlog > sink.capacity - 100, "the buffer should be full")
        let dropped = sink.droppedTotal
        #expect(dropped > 0)
        #expect(sink.droppedUnreported == dropped)

        // The reader comes back: everything buffered arrives, then the count,
        // then what is logged afterwards.
        var text = ""
        for _ in 0..<100 where sink.backlog > 0 || text.isEmpty {
            text += pipe.readAvailable()
            sink.pump()
        }
        text += pipe.readAvailable()
        #expect(sink.backlog == 0)
        sink.append("after recovery\n")
        text += pipe.readAvailable()

        let received = text.split(separator: "\n", omittingEmptySubsequences: false)
        #expect(received.last == "", "the output ends with a whole line")
        let numbered = received.filter { $0.hasPrefix("line ") }
        #expect(numbered.allSatisfy { $0.utf8.count == 96 }, "every line arrives whole")
        #expect(numbered.count + dropped == lines.count)
        // Lines keep their order, and the gap is where the dropped ones were.
        #expect(numbered == lines.prefix(numbered.count).map { Substring($0.dropLast()) })
        #expect(Array(received.suffix(3)) == ["\(dropped) log lines dropped", "after recovery", ""])
        #expect(sink.droppedUnreported == 0)
    }

    @Test func whileLinesAreDroppedNothingNewGoesInBeforeTheCount() throws {
        let pipe = try StalledPipe()
        let sink = LogSink(output: pipe.output, capacity: 1024) { "\($0) dropped\n" }
        let filler = String(repeating: "f", count: 99) + "\n"
        while sink.droppedTotal == 0 { sink.append(filler) }
        // This short line would fit in the buffer, but the count of the lines
        // dropped before it must come first.
        #expect(sink.backlog + 10 <= sink.capacity)
        sink.append("too early\n")
        #expect(sink.droppedTotal == 2)
        let text = pipe.readAvailable(pumping: sink)
        #expect(!text.contains("too early"))
        #expect(text.hasSuffix("\n2 dropped\n"))
    }

    @Test func flushWaitsABoundedTimeThenCountsWhatIsLeft() throws {
        let pipe = try StalledPipe()
        let sink = LogSink(output: pipe.output, capacity: 4096) { "\($0) dropped\n" }
        let line = String(repeating: "y", count: 63) + "\n"
        for _ in 0..<200 { sink.append(line) }
        let waiting = sink.backlogLines
        let droppedBefore = sink.droppedTotal
        #expect(waiting > 0 && droppedBefore > 0)
        let start = Date()
        let lost = sink.flush(timeoutMilliseconds: 300)
        let elapsed = Date().timeIntervalSince(start)
        // It waits for its timeout, and then returns (a stalled pipe would
        // otherwise hold it forever; the bound only catches that).
        #expect(elapsed >= 0.25 && elapsed < 30, "\(elapsed) s")
        #expect(lost == droppedBefore + waiting)
        #expect(sink.backlog == 0)
    }

    @Test func flushWritesEverythingWhenTheReaderKeepsUp() throws {
        let pipe = try StalledPipe()
        let sink = LogSink(output: pipe.output, capacity: 64 << 10) { "\($0) dropped\n" }
        let line = String(repeating: "z", count: 99) + "\n"
        for _ in 0..<300 { sink.append(line) }
        #expect(sink.droppedTotal == 0 && sink.backlog > 0)
        let reader = Thread { for _ in 0..<500 { if pipe.read(atMost: 1 << 16).isEmpty { usleep(2000) } } }
        reader.start()
        #expect(sink.flush(timeoutMilliseconds: 5000) == 0)
        #expect(sink.backlog == 0)
    }

    @Test func onTheLoopTheBacklogDrainsWhenTheOutputIsWritableAgain() throws {
        // A shared, blocking description (like descriptor 2 when /proc cannot
        // reopen it): the watcher must not leave O_NONBLOCK set on it.
        let pipe = try StalledPipe(nonBlocking: false)
        let output = LogOutput(descriptor: pipe.writeEnd, method: .writeWhenReady(chunk: 512), ownsDescriptor: false,
                               canWait: true, isShared: true)
        let sink = LogSink(output: output, capacity: 8192) { "\($0) dropped\n" }
        let loop = UnsafeMutablePointer<uv_loop_t>.allocate(capacity: 1)
        defer { loop.deallocate() }
        #expect(uv_loop_init(loop) == 0)
        sink.attach(to: loop)
        let line = String(repeating: "w", count: 99) + "\n"
        for _ in 0..<60 { sink.append(line) }
        #expect(sink.backlog > 0)
        #expect(fcntl(pipe.writeEnd, F_GETFL) & O_NONBLOCK == 0, "O_NONBLOCK was left on a shared description")

        _ = pipe.read(atMost: 1 << 16)
        // The watcher is unreferenced: a referenced timer keeps this loop running
        // until the backlog is gone (or 2 s).
        let ticker = LoopTicker(loop: loop, limit: 200) {
            _ = pipe.read(atMost: 1 << 16)
            return sink.backlog == 0
        }
        uv_run(loop, UV_RUN_DEFAULT)
        #expect(sink.backlog == 0)
        #expect(ticker.ticks < 200)
        ticker.close()
        sink.detach()
        uv_run(loop, UV_RUN_NOWAIT)
        #expect(uv_loop_close(loop) == 0, "every handle closed")
    }

    @Test func theBufferSizeComesFromTheEnvironmentWithinBounds() {
        #expect(LogSink.capacity(fromEnvironment: nil) == (256 << 10, nil))
        #expect(LogSink.capacity(fromEnvironment: "4096") == (4096, nil))
        #expect(LogSink.capacity(fromEnvironment: "64K") == (64 << 10, nil))
        #expect(LogSink.capacity(fromEnvironment: "2MiB") == (2 << 20, nil))
        for bad in ["", "1", "1023", "65M", "-4096", "4 K", "4k", "0x1000", "99999999999999999999K"] {
            let (capacity, complaint) = LogSink.capacity(fromEnvironment: bad)
            #expect(capacity == 256 << 10 && complaint != nil, "\(bad)")
        }
    }
}

extension String {
    fileprivate func leftPadded(_ width: Int) -> String {
        String(repeating: "0", count: max(0, width - count)) + self
    }
}

/// A pipe of one page that nobody reads until the test says so.
final class StalledPipe: @unchecked Sendable {   // descriptors only: read from any thread
    let readEnd: Int32
    let writeEnd: Int32
    let size: Int

    init(nonBlocking: Bool = true) throws {
        var ends: [Int32] = [0, 0]
        guard pipe(&ends) == 0 else { throw TestFailure("pipe: \(errno)") }
        readEnd = ends[0]
        writeEnd = ends[1]
        // Not inherited by the directd processes other tests start.
        _ = fcntl(readEnd, F_SETFD, FD_CLOEXEC)
        _ = fcntl(writeEnd, F_SETFD, FD_CLOEXEC)
        _ = fcntl(readEnd, 1031 /* F_SETPIPE_SZ */, 4096)
        size = Int(fcntl(readEnd, 1032 /* F_GETPIPE_SZ */))
        _ = fcntl(readEnd, F_SETFL, fcntl(readEnd, F_GETFL) | O_NONBLOCK)
        if nonBlocking { _ = fcntl(writeEnd, F_SETFL, fcntl(writeEnd, F_GETFL) | O_NONBLOCK) }
    }

    deinit {
        close(readEnd)
        close(writeEnd)
    }

    var output: LogOutput {
        LogOutput(descriptor: writeEnd, method: .write, ownsDescriptor: false, canWait: true, isShared: false)
    }

    /// Bytes in the pipe, unread.
    var unread: Int {
        var count: Int32 = 0
        _ = ioctl(readEnd, UInt(FIONREAD), &count)
        return Int(count)
    }

    func read(atMost limit: Int) -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: limit)
        let got = buffer.withUnsafeMutableBytes { Glibc.read(readEnd, $0.baseAddress, limit) }
        return got > 0 ? Array(buffer.prefix(got)) : []
    }

    func readAvailable() -> String {
        var bytes: [UInt8] = []
        for _ in 0..<10_000 {
            let chunk = read(atMost: 1 << 16)
            if chunk.isEmpty { break }
            bytes += chunk
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Reads until the sink has nothing left (bounded).
    func readAvailable(pumping sink: LogSink) -> String {
        var text = ""
        for _ in 0..<1000 {
            text += readAvailable()
            sink.pump()
            if sink.backlog == 0 { break }
        }
        return text + readAvailable()
    }
}

/// A referenced libuv timer that stops its loop when `done` says so, or after
/// `limit` ticks of 10 ms.
final class LoopTicker {
    private let handle = UnsafeMutablePointer<uv_timer_t>.allocate(capacity: 1)
    let done: () -> Bool
    let limit: Int
    private(set) var ticks = 0

    init(loop: UnsafeMutablePointer<uv_loop_t>, limit: Int, done: @escaping () -> Bool) {
        self.done = done
        self.limit = limit
        uv_timer_init(loop, handle)
        handle.pointee.data = Unmanaged.passUnretained(self).toOpaque()
        uv_timer_start(handle, { handle in
            let ticker = Unmanaged<LoopTicker>.fromOpaque(handle!.pointee.data).takeUnretainedValue()
            ticker.ticks += 1
            if ticker.done() || ticker.ticks >= ticker.limit {
                uv_timer_stop(handle)
                uv_stop(handle!.pointee.loop)
            }
        }, 10, 10)
    }

    func close() {
        uv_close(UnsafeMutableRawPointer(handle).assumingMemoryBound(to: uv_handle_t.self)) { handle in
            handle?.deallocate()
        }
    }
}

/// The log's state as a whole: categories go through the limiter, and the
/// summary comes from the timer on the loop even when no further line comes.
struct LogStateTests {
    @Test func aFloodOfOneCategoryIsCutToTheBurstAndSummarisedByTheTimer() throws {
        let pipe = try StalledPipe()
        let state = LogState(output: pipe.output, style: .journal,
                             limiter: LogRateLimiter(burst: 5, intervalMilliseconds: 200))
        let loop = UnsafeMutablePointer<uv_loop_t>.allocate(capacity: 1)
        defer { loop.deallocate() }
        #expect(uv_loop_init(loop) == 0)
        state.attach(to: loop)
        var formatted = 0
        for number in 0..<1000 {
            state.emit({ formatted += 1; return "refused 192.0.2.\(number % 250): max-connections (1) reached" },
                       severity: .warning, category: .refusedMaxConnections)
        }
        state.emit({ "#1 opened" }, severity: .info, category: .opened)
        state.emit({ "listening on 127.0.0.1:1" }, severity: .notice, category: nil)
        // Suppressed lines are not even formatted.
        #expect(formatted == 5)
        var text = pipe.readAvailable()
        let ticker = LoopTicker(loop: loop, limit: 300) {
            text += pipe.readAvailable()
            return text.contains("suppressed")
        }
        uv_run(loop, UV_RUN_DEFAULT)
        ticker.close()
        state.detach()
        #expect(uv_loop_close(loop) == 0, "every handle closed")
        let lines = text.split(separator: "\n")
        #expect(lines.filter { $0.hasPrefix("<4>warning: refused ") }.count == 5)
        #expect(lines.contains("<6>#1 opened"))
        #expect(lines.contains("<5>listening on 127.0.0.1:1"))
        #expect(lines.last == "<4>warning: suppressed 995 similar lines (refused: max-connections) in 0.2 s", "\(text)")
        #expect(ticker.ticks < 300)
    }

    @Test func flushAtExitSummarisesTheIntervalInProgress() throws {
        let pipe = try StalledPipe()
        let state = LogState(output: pipe.output, style: .journal,
                             limiter: LogRateLimiter(burst: 1, intervalMilliseconds: 60_000))
        for _ in 0..<3 { state.emit({ "#9 closed" }, severity: .info, category: .closed) }
        #expect(state.flush(timeoutMilliseconds: 1000) == 0)
        #expect(pipe.readAvailable() == "<6>#9 closed\n<6>suppressed 2 similar lines (connection closed) in 60 s\n")
    }
}
