/// What a running directd hands to the process that takes over from it: a
/// versioned binary record, written into a sealed memfd and sent with the
/// descriptors it names (`HandoverChannel`).
///
/// Layout (little-endian): the magic `DIRECTDH`, the format version (u32), the
/// flags (u32), the descriptor count (u32), the listener count (u32), the
/// session count (u32), then each listener: its descriptor's index among those
/// sent (u32) and where it listens as its fdstore name (a string:
/// `tcp-127.0.0.1-21118`, with `-dev-eth0` when bound to a device; see
/// `StoredListenerName`) and the index of a connection libuv had accepted
/// for it that directd had not taken yet (or none), then each session
/// (`SessionEntry.encode`). Strings and byte runs are a u32 length and the
/// bytes.
///
/// Every open session is in it, taken at one instant (the old process's loop
/// waits on the handover meanwhile): its sockets, counters, half-closes, a
/// splice pipe's ends with the bytes it holds, and the bytes libuv had
/// queued for a side in user space (copied here: at most what the sessions
/// held). A session still connecting upstream goes with its connecting
/// socket; the new process watches the connect finish.
struct HandoverRecord: Equatable {
    /// The version both sides must speak; the new process says its own in its
    /// hello, and a different one rolls the upgrade back.
    static let formatVersion: UInt32 = 2
    static let magic = Array("DIRECTDH".utf8)
    /// A record larger than this is not directd's: a few hundred bytes a
    /// session (64 MiB is 100,000s of them), and the bytes queued in user
    /// space, which relay buffers hold (`memory-limit` bounds them; the new
    /// process must hold them in its own).
    static func sizeLimit(memoryLimit: Int) -> Int { (64 << 20) + memoryLimit }

    struct ListenerEntry: Equatable {
        /// Index into the descriptors sent with the record.
        let descriptor: Int
        let name: StoredListenerName
        /// A connection libuv accepted for this listener and directd left
        /// there (descriptors were short): the new process serves it.
        var waiting: Int? = nil
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
        /// Where the upstream is connected, or (connecting) where it connects.
        let upstreamPeer: String
        /// Still connecting upstream: no directions yet.
        var connecting = false
        /// The listener it was accepted on, as the metrics label it.
        var listener = ""
        /// The PROXY header a connecting session sends its upstream first.
        var proxyProtocol: ProxyHeader.Version? = nil
        /// Per direction (client to upstream first): bytes moved, whether its
        /// source's EOF was passed on (half-closed) or seen and not yet passed
        /// on (ending), a splice pipe that still holds bytes for the sink (its
        /// two ends' descriptors), and the bytes queued for the sink in user
        /// space.
        let directions: [Direction]

        struct Direction: Equatable {
            let moved: UInt64
            let finished: Bool
            var ending = false
            var pipeReadEnd: Int? = nil
            var pipeWriteEnd: Int? = nil
            var inPipe: Int = 0
            var unsent: [UInt8] = []
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
            writer.string(listener)
            writer.u32(connecting ? 1 : 0)
            writer.u32(proxyProtocol.map { $0 == .v1 ? 1 : 2 } ?? 0)
            writer.u32(UInt32(directions.count))
            for direction in directions {
                writer.u64(direction.moved)
                writer.u32((direction.finished ? 1 : 0) | (direction.ending ? 2 : 0))
                writer.u32(direction.pipeReadEnd.map(UInt32.init) ?? Self.noDescriptor)
                writer.u32(direction.pipeWriteEnd.map(UInt32.init) ?? Self.noDescriptor)
                writer.u64(UInt64(direction.inPipe))
                writer.run(direction.unsent)
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
            listener = try reader.string()
            let flags = try reader.u32()
            guard flags <= 1 else { throw HandoverRefusal("session #\(id) has unknown flags \(flags)") }
            connecting = flags == 1
            switch try reader.u32() {
            case 0: proxyProtocol = nil
            case 1: proxyProtocol = .v1
            case 2: proxyProtocol = .v2
            case let other: throw HandoverRefusal("session #\(id) has PROXY protocol version \(other)")
            }
            let count = Int(try reader.u32())
            guard count == (connecting ? 0 : upstream == nil ? 1 : 2), !connecting || upstream != nil else {
                throw HandoverRefusal("session #\(id) has \(count) directions\(connecting ? " and is connecting" : "")")
            }
            var directions: [Direction] = []
            for _ in 0..<count {
                let moved = try reader.u64()
                let state = try reader.u32()
                let (read, write) = (try reader.u32(), try reader.u32())
                let inPipe = try reader.u64()
                guard state < 3 else { throw HandoverRefusal("session #\(id) has a direction in state \(state)") }
                guard (read == Self.noDescriptor) == (write == Self.noDescriptor),
                      (read == Self.noDescriptor) == (inPipe == 0), inPipe <= 1 << 30 else {
                    throw HandoverRefusal("session #\(id) has a pipe that does not add up")
                }
                // At most what a direction can have queued: its limit, the
                // read that filled it, and a PROXY header.
                let unsent = try reader.run(limit: writeQueueLimit + BufferPool.size + ProxyHeader.maximumSize)
                guard unsent.isEmpty || inPipe == 0 else {
                    throw HandoverRefusal("session #\(id) has bytes both queued and in a pipe")
                }
                directions.append(Direction(moved: moved, finished: state == 1, ending: state == 2,
                                            pipeReadEnd: read == Self.noDescriptor ? nil : Int(read),
                                            pipeWriteEnd: write == Self.noDescriptor ? nil : Int(write),
                                            inPipe: Int(inPipe), unsent: unsent))
            }
            self.directions = directions
            guard descriptors.allSatisfy({ $0 < descriptorCount }) else {
                throw HandoverRefusal("session #\(id) names a descriptor past the \(descriptorCount) sent")
            }
            guard upstream != nil || directions.allSatisfy({ $0.inPipe == 0 }) else {
                throw HandoverRefusal("echo session #\(id) has a pipe")
            }
            guard connecting || !directions.allSatisfy(\.finished) else { throw HandoverRefusal("session #\(id) has ended") }
        }

        init(id: UInt64, age: UInt64, idle: UInt64, writeQueueLimit: Int, client: Int, clientLocal: String,
             clientPeer: String, upstream: Int?, upstreamLocal: String, upstreamPeer: String,
             listener: String = "", connecting: Bool = false, proxyProtocol: ProxyHeader.Version? = nil,
             directions: [Direction]) {
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
            self.listener = listener
            self.connecting = connecting
            self.proxyProtocol = proxyProtocol
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
            writer.u32(listener.waiting.map(UInt32.init) ?? SessionEntry.noDescriptor)
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
            let waiting = try reader.u32()
            guard waiting == SessionEntry.noDescriptor || Int(waiting) < descriptorCount else {
                throw HandoverRefusal("listener \(name)'s waiting connection \(waiting) is past the \(descriptorCount) sent")
            }
            listeners.append(ListenerEntry(descriptor: index, name: name,
                                           waiting: waiting == SessionEntry.noDescriptor ? nil : Int(waiting)))
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
        run(Array(text.utf8))
    }
    mutating func run(_ bytes: [UInt8]) {
        u32(UInt32(bytes.count))
        data += bytes
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
        String(decoding: try run(limit: Int.max), as: UTF8.self)
    }
    /// A length and that many bytes, at most `limit`.
    mutating func run(limit: Int) throws(HandoverRefusal) -> [UInt8] {
        let count = Int(try u32())
        guard count <= limit else { throw HandoverRefusal("the state record has a run of \(count) bytes, more than \(limit)") }
        guard let bytes = bytes(count) else { throw HandoverRefusal("the state record ends early") }
        return bytes
    }
}
