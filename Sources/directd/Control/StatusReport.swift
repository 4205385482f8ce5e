/// What `directd status` shows, taken on the loop at the request, and written
/// as text for a person or as JSON for a script.
struct StatusReport {
    struct Client {
        let address: String
        var open: Int
        var bytesFromClient: UInt64
        var bytesToClient: UInt64
    }

    struct Refusal {
        let secondsAgo: Double
        let reason: String
        let client: String
        let listener: String
    }

    var version: String
    var processID: Int32
    var uptimeSeconds: Double
    var listeners: [String]
    var relayMode: String
    /// The upstream, or nil for echo.
    var forward: String?
    var open: Int
    var total: UInt64
    /// Most open connections first, then most bytes; at most `topClients`.
    var clients: [Client]
    /// By reason label, every reason (0 included), in `RefusalReason` order.
    var refusals: [(reason: String, count: UInt64)]
    var recentRefusals: [Refusal]

    static let topClients = 10

    /// Readable at a glance; one fact per line.
    var text: String {
        var lines = ["directd \(version), pid \(processID), up \(Exposition.number(uptimeSeconds.rounded())) s"]
        lines.append("relay mode \(relayMode); " + (forward.map { "relaying to \($0)" } ?? "serving echo"))
        lines.append(listeners.isEmpty ? "listening on nothing" : "listening on \(listeners.joined(separator: ", "))")
        lines.append("connections: \(open) open, \(total) total")
        if clients.isEmpty {
            lines.append("top clients: none connected")
        } else {
            lines.append("top clients (open connections, bytes from / to the client):")
            for client in clients {
                lines.append("  \(client.address): \(client.open) open, \(client.bytesFromClient) / \(client.bytesToClient) bytes")
            }
        }
        lines.append("refusals: " + refusals.map { "\($0.reason) \($0.count)" }.joined(separator: ", "))
        if !recentRefusals.isEmpty {
            lines.append("recent refusals (newest first):")
            for refusal in recentRefusals {
                lines.append("  \(Exposition.number(refusal.secondsAgo.rounded())) s ago: \(refusal.client) on \(refusal.listener): \(refusal.reason)")
            }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// One JSON object on one line, every string escaped.
    var json: String {
        var object = JSONWriter()
        object.field("version", string: version)
        object.field("pid", number: Double(processID))
        object.field("uptime_seconds", number: uptimeSeconds)
        object.field("listeners", raw: JSONWriter.array(listeners.map(JSONWriter.quoted)))
        object.field("relay_mode", string: relayMode)
        object.field("forward", raw: forward.map(JSONWriter.quoted) ?? "null")
        object.field("connections", raw: "{\"open\":\(open),\"total\":\(total)}")
        object.field("top_clients", raw: JSONWriter.array(clients.map { client in
            "{\"address\":\(JSONWriter.quoted(client.address)),\"open\":\(client.open),\"bytes_from_client\":\(client.bytesFromClient),\"bytes_to_client\":\(client.bytesToClient)}"
        }))
        object.field("refusals", raw: "{" + refusals.map { "\(JSONWriter.quoted($0.reason)):\($0.count)" }.joined(separator: ",") + "}")
        object.field("recent_refusals", raw: JSONWriter.array(recentRefusals.map { refusal in
            "{\"seconds_ago\":\(Exposition.number(refusal.secondsAgo)),\"reason\":\(JSONWriter.quoted(refusal.reason)),\"client\":\(JSONWriter.quoted(refusal.client)),\"listener\":\(JSONWriter.quoted(refusal.listener))}"
        }))
        return object.text + "\n"
    }
}
