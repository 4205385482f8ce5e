/// What a running directd hands to the process that takes over from it: a
/// versioned binary record, written into a sealed memfd and sent with the
/// descriptors it names (`HandoverChannel`).
///
/// Layout (little-endian): the magic `DIRECTDH`, the format version (u32), the
/// flags (u32), the descriptor count (u32), the listener count (u32), the
/// session count (u32), then each listener: its descriptor's index among those
/// sent (u32) and where it listens as its fdstore name (a string:
/// `tcp-127.0.0.1-21118`, with `-dev-eth0` when bound to a device; see
/// `StoredListenerName`). Strings are a u32 length and UTF-8 bytes.
///
/// This version hands over listeners only: open sessions stay with the old
/// process, which drains them. A record with sessions is refused.
struct HandoverRecord: Equatable {
    /// The version both sides must speak; the new process says its own in its
    /// hello, and a different one rolls the upgrade back.
    static let formatVersion: UInt32 = 1
    static let magic = Array("DIRECTDH".utf8)
    /// A record larger than this is not directd's (sessions would make it
    /// O(sessions) small: a few hundred bytes each).
    static let sizeLimit = 64 << 20

    struct ListenerEntry: Equatable {
        /// Index into the descriptors sent with the record.
        let descriptor: Int
        let name: StoredListenerName
    }

    /// The listeners came from a socket unit (`LISTEN_FDS`), not from the bind value.
    var fromSocketUnit: Bool
    var descriptorCount: Int
    var listeners: [ListenerEntry]
    var sessionCount: Int = 0

    func encoded() -> [UInt8] {
        var writer = ByteWriter()
        writer.bytes(Self.magic)
        writer.u32(Self.formatVersion)
        writer.u32(fromSocketUnit ? 1 : 0)
        writer.u32(UInt32(descriptorCount))
        writer.u32(UInt32(listeners.count))
        writer.u32(UInt32(sessionCount))
        for listener in listeners {
            writer.u32(UInt32(listener.descriptor))
            writer.string(listener.name.description)
        }
        return writer.data
    }

    /// Reads a record back; the error says what is wrong with it.
    init(decoding data: [UInt8]) throws(HandoverRefusal) {
        var reader = ByteReader(data)
        guard reader.bytes(Self.magic.count) == Self.magic else { throw HandoverRefusal("the state record is not directd's (bad magic)") }
        let version = try reader.u32()
        guard version == Self.formatVersion else {
            throw HandoverRefusal("the state record's format is version \(version), this directd reads \(Self.formatVersion)")
        }
        fromSocketUnit = try reader.u32() & 1 != 0
        descriptorCount = Int(try reader.u32())
        let listenerCount = Int(try reader.u32())
        sessionCount = Int(try reader.u32())
        guard listenerCount <= descriptorCount, descriptorCount <= data.count else {
            throw HandoverRefusal("the state record's counts do not add up")
        }
        listeners = []
        for _ in 0..<listenerCount {
            let index = Int(try reader.u32())
            let text = try reader.string()
            guard index < descriptorCount else { throw HandoverRefusal("listener descriptor \(index) is past the \(descriptorCount) sent") }
            guard let name = StoredListenerName(parsing: text) else {
                throw HandoverRefusal("listener \"\(LogEscaping.escaped(text))\" is not a listener name")
            }
            listeners.append(ListenerEntry(descriptor: index, name: name))
        }
        guard reader.atEnd else { throw HandoverRefusal("the state record has bytes past its end") }
    }

    init(fromSocketUnit: Bool, descriptorCount: Int, listeners: [ListenerEntry]) {
        self.fromSocketUnit = fromSocketUnit
        self.descriptorCount = descriptorCount
        self.listeners = listeners
    }
}

/// Why the new process refuses a handover: sent back as `refused: <why>`.
struct HandoverRefusal: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Little-endian fields, appended.
struct ByteWriter {
    private(set) var data: [UInt8] = []
    mutating func bytes(_ bytes: [UInt8]) { data += bytes }
    mutating func u32(_ value: UInt32) {
        withUnsafeBytes(of: value.littleEndian) { data += $0 }
    }
    mutating func string(_ text: String) {
        let utf8 = Array(text.utf8)
        u32(UInt32(utf8.count))
        data += utf8
    }
}

/// Little-endian fields, read in order; every read is checked against the end.
struct ByteReader {
    private let data: [UInt8]
    private var offset = 0
    init(_ data: [UInt8]) { self.data = data }
    var atEnd: Bool { offset == data.count }

    mutating func bytes(_ count: Int) -> [UInt8]? {
        guard count <= data.count - offset else { return nil }
        defer { offset += count }
        return Array(data[offset..<offset + count])
    }
    mutating func u32() throws(HandoverRefusal) -> UInt32 {
        guard let bytes = bytes(4) else { throw HandoverRefusal("the state record ends early") }
        return bytes.reversed().reduce(0) { $0 << 8 | UInt32($1) }
    }
    mutating func string() throws(HandoverRefusal) -> String {
        let count = Int(try u32())
        guard let bytes = bytes(count) else { throw HandoverRefusal("the state record ends early") }
        return String(decoding: bytes, as: UTF8.self)
    }
}
