import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The directd binary that `swift test` built next to the test bundle.
let directdPath: String = {
    if let path = ProcessInfo.processInfo.environment["DIRECTD"] { return path }
    let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    return URL(fileURLWithPath: exe).deletingLastPathComponent().appendingPathComponent("directd").path
}()

struct Finished {
    let status: Int32
    let stdout: String
    let stderr: String
}

/// Runs directd (or `executable`) to completion, bounded by `timeout` seconds.
func runDirectd(_ arguments: [String], executable: String = directdPath, prefix: [String] = [],
                timeout: Double = 20) throws -> Finished {
    let process = Process()
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("directd-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    let out = directory.appendingPathComponent("out"), err = directory.appendingPathComponent("err")
    _ = FileManager.default.createFile(atPath: out.path, contents: nil)
    _ = FileManager.default.createFile(atPath: err.path, contents: nil)
    if prefix.isEmpty {
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
    } else {
        process.executableURL = URL(fileURLWithPath: prefix[0])
        process.arguments = Array(prefix.dropFirst()) + [executable] + arguments
    }
    process.standardOutput = try FileHandle(forWritingTo: out)
    process.standardError = try FileHandle(forWritingTo: err)
    process.standardInput = FileHandle.nullDevice
    try process.run()
    let deadline = Date().addingTimeInterval(timeout)
    while process.isRunning, Date() < deadline { usleep(10_000) }
    if process.isRunning {
        // SIGKILL: the test runner may have started it with SIGTERM blocked.
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        throw TestFailure("directd \(arguments) did not finish within \(timeout) s")
    }
    process.waitUntilExit()
    return Finished(status: process.terminationStatus,
                    stdout: (try? String(contentsOf: out, encoding: .utf8)) ?? "",
                    stderr: (try? String(contentsOf: err, encoding: .utf8)) ?? "")
}

/// A log line without the RFC 3339 timestamp directd puts in front of it.
func withoutTimestamp<Line: StringProtocol>(_ line: Line) -> Substring {
    let text = Substring(line)
    guard let space = text.firstIndex(of: " "), text[..<space].hasSuffix("Z"),
          text[..<space].contains("T") else { return text }
    return text[text.index(after: space)...]
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A directd serving in the background, its log in a file.
final class Daemon {
    let process = Process()
    let log: URL
    private(set) var listening: [String] = []

    /// Starts directd and waits (bounded) until it says it serves, or exits.
    /// `prefix` runs it through another program (prlimit, say).
    /// `waitForService` false: return once started (a program in `prefix` may
    /// start directd later, as systemd-socket-activate does on a connection).
    init(_ arguments: [String], prefix: [String] = [], environment: [String: String] = [:],
         waitForService: Bool = true) throws {
        log = FileManager.default.temporaryDirectory.appendingPathComponent("directd-\(UUID().uuidString).log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        if !environment.isEmpty {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        }
        process.executableURL = URL(fileURLWithPath: prefix.first ?? directdPath)
        process.arguments = prefix.isEmpty ? arguments : Array(prefix.dropFirst()) + [directdPath] + arguments
        process.standardError = try FileHandle(forWritingTo: log)
        process.standardOutput = FileHandle.nullDevice
        process.standardInput = FileHandle.nullDevice
        try process.run()
        guard waitForService else { return }
        let deadline = Date().addingTimeInterval(20)
        func serving() -> Bool { logText.contains("serving echo") || logText.contains("relaying every connection") }
        while Date() < deadline, process.isRunning, !serving() { usleep(10_000) }
        guard serving() else {
            stop()
            throw TestFailure("directd did not start: \(logText)")
        }
        listening = logText.split(separator: "\n").map(withoutTimestamp)
            .filter { $0.hasPrefix("listening on ") }
            .map { String($0.dropFirst("listening on ".count)) }
    }

    var pid: Int32 { process.processIdentifier }

    /// Waits (bounded) until the log contains `text`.
    func waitForLog(_ text: String, timeout: Double = 10) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if logText.contains(text) { return true }
            usleep(10_000)
        }
        return false
    }

    var logText: String { (try? String(contentsOf: log, encoding: .utf8)) ?? "" }

    /// The port of the first listener.
    var port: UInt16 {
        UInt16(listening.first!.split(separator: ":").last!)!
    }

    /// Sends a signal and waits (bounded) for the exit; returns the status.
    @discardableResult
    func stop(signal: Int32 = SIGTERM, timeout: Double = 15) -> Int32? {
        if process.isRunning { kill(process.processIdentifier, signal) }
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning, Date() < deadline { usleep(10_000) }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            return nil
        }
        process.waitUntilExit()
        return process.terminationStatus
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL); process.waitUntilExit() }
        try? FileManager.default.removeItem(at: log)
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bound, then released).
/// Used only where a test needs a port that nothing listens on or a value to
/// print; another process could take it in between, which would show as a
/// failure, not a false pass.
func freePort() throws -> UInt16 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa -> Bool in
            bind(fd, sa, length) == 0 && getsockname(fd, sa, &length) == 0
        }
    }
    guard bound else { throw TestFailure("no free port") }
    return UInt16(bigEndian: address.sin_port)
}

/// The host has the IPv6 loopback address (skip IPv6 cases where it does not).
let hostHasIPv6Loopback: Bool = {
    (try? String(contentsOfFile: "/proc/net/if_inet6", encoding: .utf8))?
        .contains("00000000000000000000000000000001") ?? false
}()
