import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Reading a directd's metrics endpoint the way a scraper does.
extension Daemon {
    /// The metrics endpoint's TCP port, from the "serving metrics on" line.
    var metricsPort: UInt16? {
        guard let line = logText.split(separator: "\n").first(where: { $0.contains("serving metrics on ") }),
              let port = line.split(separator: ":").last else { return nil }
        return UInt16(port)
    }
}

/// One HTTP exchange on 127.0.0.1:`port`: the status line and the body.
func httpGet(_ port: UInt16, request: String = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n") throws -> (status: String, headers: String, body: String) {
    let client = try TCPClient(host: "127.0.0.1", port: port)
    _ = client.send(Array(request.utf8))
    guard let reply = client.receiveAll(limit: 1 << 22) else { throw TestFailure("no HTTP reply") }
    return try splitHTTP(String(decoding: reply, as: UTF8.self))
}

func splitHTTP(_ text: String) throws -> (status: String, headers: String, body: String) {
    guard let end = text.range(of: "\r\n\r\n") else { throw TestFailure("no HTTP head in \(text.prefix(200))") }
    let head = text[..<end.lowerBound]
    let status = head.split(separator: "\r\n").first.map(String.init) ?? ""
    return (status, String(head), String(text[end.upperBound...]))
}

/// `name{labels} value` lines into a dictionary (comments skipped).
func metricSamples(_ page: String) -> [String: Double] {
    var samples: [String: Double] = [:]
    for line in page.split(separator: "\n") where !line.hasPrefix("#") {
        guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { continue }
        samples[String(line[..<space])] = value
    }
    return samples
}

/// Scrapes until `done` holds for the samples (bounded); the last samples.
func scrape(_ port: UInt16, until done: ([String: Double]) -> Bool, timeout: Double = 10) throws -> [String: Double] {
    let deadline = Date().addingTimeInterval(timeout)
    var samples: [String: Double] = [:]
    repeat {
        samples = metricSamples(try httpGet(port).body)
        if done(samples) { return samples }
        usleep(20_000)
    } while Date() < deadline
    return samples
}
