/// The HTTP side of the metrics endpoint: a request head in, a whole
/// response out (HTTP/1.0 and 1.1, `Connection: close`). Only `GET /metrics`
/// is served; another path is 404, another method 405 with `Allow: GET`, a
/// head that is not HTTP/1.x 400, one larger than the buffer 431.
enum ScrapeRequest {
    /// The response to `head`, or nil while it has no blank line yet.
    /// `page` is called only for a scrape.
    static func respond(to head: UnsafeRawBufferPointer, page: () -> String) -> [UInt8]? {
        guard let end = headEnd(head) else { return nil }
        let lineEnd = head[..<end].firstIndex(of: UInt8(ascii: "\n")) ?? end
        var line = head[..<lineEnd]
        if line.last == UInt8(ascii: "\r") { line = line.dropLast() }
        let parts = line.split(separator: UInt8(ascii: " "), omittingEmptySubsequences: false)
        guard parts.count == 3, parts.allSatisfy({ !$0.isEmpty }),
              parts[2].starts(with: "HTTP/1.".utf8), parts[2].count == 8 else {
            return response(version: "HTTP/1.1", status: "400 Bad Request", body: "bad request\n")
        }
        let version = String(decoding: parts[2], as: UTF8.self)
        let method = String(decoding: parts[0], as: UTF8.self)
        let target = parts[1]
        let path = target.split(separator: UInt8(ascii: "?"), maxSplits: 1, omittingEmptySubsequences: false).first ?? target
        guard method == "GET" else {
            return response(version: version, status: "405 Method Not Allowed", headers: "Allow: GET\r\n",
                            body: "only GET\n")
        }
        guard path.elementsEqual("/metrics".utf8) else {
            return response(version: version, status: "404 Not Found", body: "metrics are at /metrics\n")
        }
        return response(version: version, status: "200 OK", contentType: Exposition.contentType, body: page())
    }

    /// The reply to a head that fills the buffer.
    static let tooLarge = response(version: "HTTP/1.1", status: "431 Request Header Fields Too Large",
                                   body: "request head too large\n")

    /// Where the head ends (the blank line), or nil.
    private static func headEnd(_ head: UnsafeRawBufferPointer) -> Int? {
        var index = 0
        while let newline = head[index...].firstIndex(of: UInt8(ascii: "\n")) {
            let next = newline + 1
            if next < head.count, head[next] == UInt8(ascii: "\n") { return newline }
            if next + 1 < head.count, head[next] == UInt8(ascii: "\r"), head[next + 1] == UInt8(ascii: "\n") { return newline }
            index = next
        }
        return nil
    }

    private static func response(version: String, status: String, headers: String = "",
                                 contentType: String = "text/plain; charset=utf-8", body: String) -> [UInt8] {
        let bodyBytes = body.utf8.count
        var text = "\(version) \(status)\r\nContent-Type: \(contentType)\r\nContent-Length: \(bodyBytes)\r\n"
        text += headers
        text += "Connection: close\r\n\r\n"
        text += body
        return Array(text.utf8)
    }
}
