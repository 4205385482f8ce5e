/// One entry in systemd-journald's native protocol: `NAME=value\n` per field,
/// or, for a value that holds a newline, `NAME\n`, its length as a 64-bit
/// little-endian integer, the value and `\n` (binary safe). Every value is
/// escaped first (`LogEscaping`), as every log line is, so in practice only
/// the binary form's rule matters for what escaping leaves.
struct JournalEntry {
    private(set) var bytes: [UInt8] = []

    init(message: String, severity: LogSeverity) {
        bytes.reserveCapacity(512)
        add("MESSAGE", message)
        add("PRIORITY", String(severity.syslogPriority))
        add("SYSLOG_IDENTIFIER", "directd")
    }

    /// `name`: upper-case letters, digits and underscores, as the journal requires.
    mutating func add(_ name: String, _ value: String) {
        let escaped = Array(LogEscaping.escaped(value).utf8)
        bytes += name.utf8
        if escaped.contains(UInt8(ascii: "\n")) {
            bytes.append(UInt8(ascii: "\n"))
            withUnsafeBytes(of: UInt64(escaped.count).littleEndian) { bytes += $0 }
            bytes += escaped
        } else {
            bytes.append(UInt8(ascii: "="))
            bytes += escaped
        }
        bytes.append(UInt8(ascii: "\n"))
    }
}
