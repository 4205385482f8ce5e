/// What a running directd hands to the process that takes over from it: a
/// versioned binary record, written into a sealed memfd and sent with the
/// descriptors it names (`HandoverChannel`).
///
/// Layout (little-endian): the magic `DIRECTDH`, the format version (u32), the
/// flags (u32), the descriptor count (u32), the listener count (u32), the
/// session count (u32), then each listener: its descriptor's index among those
/// sent (u32) and where it listens as its fdstore name (a string:
/// `tcp-127.0.0.1-21118`, with `-dev-eth0` when bound to a device; see
/// `StoredListenerName`), then each session (`SessionEntry.encode`). Strings
/// are a u32 length and UTF-8 bytes.
///
/// Sessions are those that relay or echo by copying and had nothing in
/// flight when they were held (no byte queued towards a side, no shutdown
/// pending): their whole state is their sockets, counters and half-closes.
/// The others (splicing, connecting, with writes that did not drain in time)
/// stay with the old process, which drains them.
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
    var sessions: [SessionEntry] = []

    /// One handed-over session.
    struct SessionEntry: Equatable {
        let id: UInt64
        /// Milliseconds since it opened, and since its last byte.
        let age: UInt64
        let idle: UInt64
        /// The write-queue-limit in force for it.
        let writeQueueLimit: Int
        let client: Int
        /// Where its sockets are bound and connected, as `SocketAddress` prints them.
        let clientLocal: String
        let clientPeer: String
        /// nil for an echo.
        let upstream: Int?
        let upstreamLocal: String
        let upstreamPeer: String
        /// Per direction (client to upstream first): bytes moved, whether its
        /// source's EOF was passed on (half-closed), and a splice pipe that
        /// still holds bytes for the sink (its two ends' descriptors).
        let directions: [Direction]

        struct Direction: Equatable {
            let moved: UInt64
            let finished: Bool
            var pipeReadEnd: Int? = nil
            var pipeWriteEnd: Int? = nil
            var inPipe: Int = 0
        }

        /// Every descriptor index it names.
        var descriptors: [Int] {
            [client] + (upstream.map { [$0] } ?? []) + directions.flatMap { [$0.pipeReadEnd, $0.pipeWriteEnd].compactMap { $0 } }
        }

        static let noDescriptor = UInt32.max

        func encode(into writer: inout ByteWriter) {
            writer.u64(id)
            writer.u64(age)
            writer.u64(idle)
            writer.u64(UInt64(writeQueueLimit))
            writer.u32(UInt32(client))
            writer.string(clientLocal)
            writer.string(clientPeer)
            writer.u32(upstream.map(UInt32.init) ?? Self.noDescriptor)
            writer.string(upstreamLocal)
            writer.string(upstreamPeer)
            writer.u32(UInt32(directions.count))
            for direction in directions {
                writer.u64(direction.moved)
                writer.u32(direction.finished ? 1 : 0)
                writer.u32(direction.pipeReadEnd.map(UInt32.init) ?? Self.noDescriptor)
                writer.u32(direction.pipeWriteEnd.map(UInt32.init) ?? Self.noDescriptor)
                writer.u64(UInt64(direction.inPipe))
            }
        }

        init(decoding reader: inout ByteReader, descriptorCount: Int) throws(HandoverRefusal) {
            id = try reader.u64()
            age = try reader.u64()
            idle = try reader.u64()
            let limit = try reader.u64()
            guard limit > 0, limit <= UInt64(Int32.max) else { throw HandoverRefusal("session #\(id) has a write queue limit of \(limit)") }
            writeQueueLimit = Int(limit)
            client = Int(try reader.u32())
            clientLocal = try reader.string()
            clientPeer = try reader.string()
            let upstreamIndex = try reader.u32()
            upstream = upstreamIndex == Self.noDescriptor ? nil : Int(upstreamIndex)
            upstreamLocal = try reader.string()
            upstreamPeer = try reader.string()
            let count = Int(try reader.u32())
            guard count == (upstream == nil ? 1 : 2) else { throw HandoverRefusal("session #\(id) has \(count) directions") }
            var directions: [Direction] = []
            for _ in 0..<count {
                let moved = try reader.u64()
                let finished = try reader.u32() != 0
                let (read, write) = (try reader.u32(), try reader.u32())
                let inPipe = try reader.u64()
                guard (read == Self.noDescriptor) == (write == Self.noDescriptor),
                      (read == Self.noDescriptor) == (inPipe == 0), inPipe <= 1 << 30 else {
                    throw HandoverRefusal("session #\(id) has a pipe that does not add up")
                }
                directions.append(Direction(moved: moved, finished: finished,
                                            pipeReadEnd: read == Self.noDescriptor ? nil : Int(read),
                                            pipeWriteEnd: write == Self.noDescriptor ? nil : Int(write),
                                            inPipe: Int(inPipe)))
            }
            self.directions = directions
            guard descriptors.allSatisfy({ $0 < descriptorCount }) else {
                throw HandoverRefusal("session #\(id) names a descriptor past the \(descriptorCount) sent")
            }
            guard upstream != nil || directions.allSatisfy({ $0.inPipe == 0 }) else {
                throw HandoverRefusal("echo session #\(id) has a pipe")
            }
            guard !directions.allSatisfy(\.finished) else { throw HandoverRefusal("session #\(id) has ended") }
        }

        init(id: UInt64, age: UInt64, idle: UInt64, writeQueueLimit: Int, client: Int, clientLocal: String,
             clientPeer: String, upstream: Int?, upstreamLocal: String, upstreamPeer: String, directions: [Direction]) {
            self.id = id
            self.age = age
            self.idle = idle
            self.writeQueueLimit = writeQueueLimit
            self.client = client
            self.clientLocal = clientLocal
            self.clientPeer = clientPeer
            self.upstream = upstream
            self.upstreamLocal = upstreamLocal
            self.upstreamPeer = upstreamPeer
            self.directions = directions
        }
    }

    func encoded() -> [UInt8] {
        var writer = ByteWriter()
        writer.bytes(Self.magic)
        writer.u32(Self.formatVersion)
        writer.u32(fromSocketUnit ? 1 : 0)
        writer.u32(UInt32(descriptorCount))
        writer.u32(UInt32(listeners.count))
        writer.u32(UInt32(sessions.count))
        for listener in listeners {
            writer.u32(UInt32(listener.descriptor))
            writer.string(listener.name.description)
        }
        for session in sessions { session.encode(into: &writer) }
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
        let sessionCount = Int(try reader.u32())
        guard listenerCount <= descriptorCount, descriptorCount <= data.count, sessionCount <= data.count else {
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
        sessions = []
        for _ in 0..<sessionCount {
            sessions.append(try SessionEntry(decoding: &reader, descriptorCount: descriptorCount))
        }
        guard reader.atEnd else { throw HandoverRefusal("the state record has bytes past its end") }
    }

    init(fromSocketUnit: Bool, descriptorCount: Int, listeners: [ListenerEntry], sessions: [SessionEntry]) {
        self.fromSocketUnit = fromSocketUnit
        self.descriptorCount = descriptorCount
        self.listeners = listeners
        self.sessions = sessions
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
    mutating func u64(_ value: UInt64) {
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
    mutating func u64() throws(HandoverRefusal) -> UInt64 {
        UInt64(try u32()) | UInt64(try u32()) << 32
    }
    mutating func string() throws(HandoverRefusal) -> String {
        let count = Int(try u32())
        guard let bytes = bytes(count) else { throw HandoverRefusal("the state record ends early") }
        return String(decoding: bytes, as: UTF8.self)
    }
}
