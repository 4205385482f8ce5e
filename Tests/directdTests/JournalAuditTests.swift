import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Testing

/// The audit lines' native journal entries, received by a fake journal: a
/// unix datagram socket this test owns (DIRECTD_JOURNAL_SOCKET), with standard
/// error a stream socket that JOURNAL_STREAM names, as systemd sets it up.
@Suite(.serialized)
struct JournalAuditTests {
    /// Native protocol entries into field dictionaries (the binary form too).
    static func parse(_ datagram: [UInt8]) throws -> [String: String] {
        var fields: [String: String] = [:]
        var index = 0
        while index < datagram.count {
            guard let end = datagram[index...].firstIndex(where: { $0 == UInt8(ascii: "\n") || $0 == UInt8(ascii: "=") }) else {
                throw TestFailure("field without an end")
            }
            let name = String(decoding: datagram[index..<end], as: UTF8.self)
            if datagram[end] == UInt8(ascii: "=") {
                let valueEnd = try #require(datagram[end...].firstIndex(of: UInt8(ascii: "\n")))
                fields[name] = String(decoding: datagram[(end + 1)..<valueEnd], as: UTF8.self)
                index = valueEnd + 1
            } else {
                let lengthStart = end + 1
                guard lengthStart + 8 <= datagram.count else { throw TestFailure("short length") }
                let length = datagram[lengthStart..<(lengthStart + 8)].enumerated()
                    .reduce(0) { $0 | (Int($1.element) << (8 * $1.offset)) }
                let valueStart = lengthStart + 8
                fields[name] = String(decoding: datagram[valueStart..<(valueStart + length)], as: UTF8.self)
                index = valueStart + length + 1
            }
        }
        return fields
    }

    @Test func binaryFormIsParsed() throws {
        let entry: [UInt8] = Array("A=1\nB\n".utf8) + [3, 0, 0, 0, 0, 0, 0, 0] + Array("x\ny\n".utf8)
        #expect(try Self.parse(entry) == ["A": "1", "B": "x\ny"])
    }

    @Test func openedClosedAndRefusedCarryTheirFields() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("directd-journal-\(getpid())-\(UUID().uuidString.prefix(8))").path
        defer { unlink(path) }
        let journal = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        defer { close(journal) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in path.utf8.enumerated() { raw[index] = byte }
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(journal, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        try #require(bound == 0)
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(journal, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))

        let daemon = try OnTheJournal(["--bind-interface", "127.0.0.1", "--port", "0", "--whitelist", "127.0.0.1"],
                                      journalSocket: path)
        let port = daemon.port
        var buffer = [UInt8](repeating: 0, count: 65536)

        let client = try TCPClient(host: "127.0.0.1", port: port)
        _ = client.send(Array("hello".utf8))
        #expect(client.receive(exactly: 5) == Array("hello".utf8))
        client.finishSending()
        _ = client.receiveAll()
        let stranger = try TCPClient(host: "127.0.0.1", port: port, source: "127.0.0.2")
        _ = stranger.receiveUntilEnd()

        var entries: [[String: String]] = []
        while entries.count < 3 {
            let got = buffer.withUnsafeMutableBytes { recv(journal, $0.baseAddress, $0.count, 0) }
            guard got > 0 else { break }
            entries.append(try Self.parse(Array(buffer.prefix(got))))
        }
        try #require(entries.count == 3, "\(entries)")
        let opened = try #require(entries.first { $0["DIRECTD_EVENT"] == "opened" })
        #expect(opened["DIRECTD_CLIENT"] == "127.0.0.1")
        #expect(opened["DIRECTD_LISTENER"] == "127.0.0.1:\(port)")
        #expect(opened["PRIORITY"] == "6")
        #expect(opened["SYSLOG_IDENTIFIER"] == "directd")
        #expect(opened["MESSAGE"]?.contains("opened from 127.0.0.1:") == true)
        #expect(UInt16(opened["DIRECTD_CLIENT_PORT"] ?? "") != nil)
        let closed = try #require(entries.first { $0["DIRECTD_EVENT"] == "closed" })
        #expect(closed["DIRECTD_BYTES_IN"] == "5")
        #expect(closed["DIRECTD_BYTES_OUT"] == "5")
        #expect(closed["DIRECTD_CLIENT_PORT"] == opened["DIRECTD_CLIENT_PORT"])
        #expect(Double(closed["DIRECTD_DURATION"] ?? "") != nil)
        let refused = try #require(entries.first { $0["DIRECTD_EVENT"] == "refused" })
        #expect(refused["DIRECTD_CLIENT"] == "127.0.0.2")
        #expect(refused["DIRECTD_REASON"] == "whitelist")
        #expect(refused["DIRECTD_LISTENER"] == "127.0.0.1:\(port)")

        daemon.stop()
        let stream = daemon.stream
        // Sent natively, so not on the stream as well; other lines stay there.
        #expect(!stream.contains("opened from"), "\(stream)")
        #expect(!stream.contains("refused 127.0.0.2"), "\(stream)")
        #expect(stream.contains("summary: 0 open, 1 total"), "\(stream)")
    }

    /// No journal socket there: the audit lines stay on the stream.
    @Test func withoutTheSocketTheLinesStayPlain() throws {
        let daemon = try OnTheJournal(["--bind-interface", "127.0.0.1", "--port", "0"],
                                      journalSocket: "/nonexistent/journal.socket")
        let client = try TCPClient(host: "127.0.0.1", port: daemon.port)
        client.finishSending()
        _ = client.receiveAll()
        daemon.waitFor("closed: 0 bytes from client")
        #expect(daemon.stream.contains("<6>#1 opened from 127.0.0.1:"), "\(daemon.stream)")
        #expect(daemon.stream.contains("<6>#1 closed: 0 bytes from client"), "\(daemon.stream)")
        daemon.stop()
    }
}

/// directd with standard error on a stream socket that JOURNAL_STREAM names,
/// as under systemd; the stream is read back as it arrives.
final class OnTheJournal {
    let process: Process
    private(set) var port: UInt16 = 0
    private let reader: Int32
    private(set) var stream = ""

    init(_ arguments: [String], journalSocket: String) throws {
        var ends: [Int32] = [0, 0]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &ends) == 0 else {
            throw TestFailure("socketpair failed")
        }
        reader = ends[0]
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(reader, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var status = stat()
        fstat(ends[1], &status)
        process = try spawnDirectd(arguments, standardError: ends[1],
                                   environment: ["JOURNAL_STREAM": "\(status.st_dev):\(status.st_ino)",
                                                 "DIRECTD_JOURNAL_SOCKET": journalSocket])
        close(ends[1])
        let deadline = Date().addingTimeInterval(20)
        while !stream.contains("serving echo"), Date() < deadline, process.isRunning { read() }
        guard let line = stream.split(separator: "\n").first(where: { $0.hasPrefix("<5>listening on 127.0.0.1:") }),
              let found = UInt16(line.split(separator: ":").last!) else {
            throw TestFailure("directd did not start: \(stream)")
        }
        port = found
    }

    func read() {
        var buffer = [UInt8](repeating: 0, count: 65536)
        let got = buffer.withUnsafeMutableBytes { recv(reader, $0.baseAddress, $0.count, 0) }
        if got > 0 { stream += String(decoding: buffer.prefix(got), as: UTF8.self) }
    }

    /// Reads until `text` arrives (bounded).
    func waitFor(_ text: String, timeout: Double = 10) {
        let deadline = Date().addingTimeInterval(timeout)
        while !stream.contains(text), Date() < deadline { read() }
    }

    /// SIGTERM, and the rest of the stream until it exits (bounded).
    func stop() {
        kill(process.processIdentifier, SIGTERM)
        let deadline = Date().addingTimeInterval(15)
        while process.isRunning, Date() < deadline { read() }
        read()
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        close(reader)
    }
}
