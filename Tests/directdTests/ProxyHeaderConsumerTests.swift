import Foundation
import Testing
import UVBind
@testable import directd
#if canImport(Glibc)
import Glibc
#endif

/// ProxyHeader against real consumers of the PROXY protocol: nginx's stream module
/// (`listen ... proxy_protocol`) and haproxy (`bind ... accept-proxy`), each started
/// here as a foreground process on loopback, its config in a temporary directory.
/// Each consumer reports back the addresses and ports it read from the header, and
/// those must be the ones the header was built from. Skipped, with the reason,
/// where the packages are missing (Debian: nginx-light libnginx-mod-stream haproxy,
/// which `make bench-deps` installs).
@Suite(.serialized)
struct ProxyHeaderConsumerTests {
    static let nginx = "/usr/sbin/nginx"
    static let nginxStream = "/usr/lib/nginx/modules/ngx_stream_module.so"
    static let haproxy = "/usr/sbin/haproxy"
    static let nginxAvailable = FileManager.default.isExecutableFile(atPath: nginx)
        && FileManager.default.fileExists(atPath: nginxStream)
    static let haproxyAvailable = FileManager.default.isExecutableFile(atPath: haproxy)

    /// Headers of both versions, for IPv4, IPv6, IPv4-mapped and mixed-family clients.
    /// Sources and destinations are documentation addresses: they only travel inside
    /// the header, while the connection itself is on loopback.
    static let cases: [(client: SocketAddress, destination: SocketAddress)] = [
        (SocketAddress(ip: .v4(IPv4Address("198.51.100.7")!), port: 50123),
         SocketAddress(ip: .v4(IPv4Address("203.0.113.1")!), port: 21118)),
        (SocketAddress(ip: .v6(IPv6Address("2001:db8::7")!), port: 40000),
         SocketAddress(ip: .v6(IPv6Address("2001:db8:0:1::1")!), port: 21118)),
        // An IPv4 client of a dual-stack listener on [::]: sent as TCP4.
        (SocketAddress(ip: .v6(IPv6Address("::ffff:198.51.100.8")!), port: 1),
         SocketAddress(ip: .v6(.any), port: 65535)),
        // Families that still differ: sent as TCP6 with the client IPv4-mapped.
        (SocketAddress(ip: .v4(IPv4Address("198.51.100.9")!), port: 65535),
         SocketAddress(ip: .v6(IPv6Address("2001:db8::1")!), port: 1)),
    ]

    /// nginx's stream module on 127.0.0.1 and [::1], answering what the header said.
    static func startNginx() throws -> Consumer {
        try Consumer.start(name: "nginx") { directory, port in
            try """
            load_module \(Self.nginxStream);
            daemon off;
            worker_processes 1;
            error_log \(directory.path)/error.log info;
            pid \(directory.path)/nginx.pid;
            events { worker_connections 64; }
            stream {
                server {
                    listen 127.0.0.1:\(port) proxy_protocol;
                    listen [::1]:\(port) proxy_protocol;
                    return "$proxy_protocol_addr $proxy_protocol_port $proxy_protocol_server_addr $proxy_protocol_server_port\\n";
                }
            }
            """.write(to: directory.appendingPathComponent("nginx.conf"), atomically: true, encoding: .utf8)
            return [Self.nginx, "-p", directory.path, "-e", "\(directory.path)/error.log", "-c", "\(directory.path)/nginx.conf"]
        }
    }

    /// haproxy with accept-proxy on 127.0.0.1 and [::1], answering what the header said.
    static func startHaproxy() throws -> Consumer {
        try Consumer.start(name: "haproxy") { directory, port in
            try """
            defaults
                mode http
                timeout connect 5s
                timeout client 5s
                timeout server 5s
            frontend proxied
                bind 127.0.0.1:\(port) accept-proxy
                bind [::1]:\(port) accept-proxy
                http-request return status 200 content-type text/plain lf-string "%[src] %[src_port] %[dst] %[dst_port]\\n"

            """.write(to: directory.appendingPathComponent("haproxy.cfg"), atomically: true, encoding: .utf8)
            return [Self.haproxy, "-db", "-f", "\(directory.path)/haproxy.cfg"]
        }
    }

    @Test(.enabled(if: nginxAvailable, "nginx or its stream module (nginx-light, libnginx-mod-stream) is not installed"))
    func nginxStreamReadsTheHeader() throws {
        let consumer = try Self.startNginx()
        defer { consumer.stop() }
        try checkEveryCase(consumer, request: [])
    }

    @Test(.enabled(if: haproxyAvailable, "haproxy is not installed"))
    func haproxyReadsTheHeader() throws {
        let consumer = try Self.startHaproxy()
        defer { consumer.stop() }
        try checkEveryCase(consumer, request: Array("GET / HTTP/1.0\r\n\r\n".utf8))
    }

    /// directd itself in front of each consumer, with both header versions: the
    /// consumer sees the real client (address and port) and the address the
    /// client connected to, for an IPv4 client (from 127.0.0.2) and an IPv6 one.
    @Test(.enabled(if: nginxAvailable && haproxyAvailable, "nginx (with its stream module) or haproxy is not installed"))
    func directdSendsTheClientToRealConsumers() throws {
        let nginx = try Self.startNginx()
        defer { nginx.stop() }
        let haproxy = try Self.startHaproxy()
        defer { haproxy.stop() }
        let clients: [(host: String, source: String)] = hostHasIPv6Loopback
            ? [("127.0.0.1", "127.0.0.2"), ("::1", "::1")] : [("127.0.0.1", "127.0.0.2")]
        for (consumer, request) in [(nginx, [UInt8]()), (haproxy, Array("GET / HTTP/1.0\r\n\r\n".utf8))] {
            for version in ProxyHeader.Version.allCases {
                let daemon = try Daemon(["--bind-interface", hostHasIPv6Loopback ? "127.0.0.1,::1" : "127.0.0.1",
                                         "--port", "0", "--forward", "127.0.0.1:\(consumer.port)",
                                         "--proxy-protocol", version.rawValue])
                defer { daemon.stop() }
                #expect(daemon.logText.contains("with a PROXY protocol \(version.rawValue) header"))
                for (host, source) in clients {
                    let connection = try TCPClient(host: host, port: daemon.port, source: source)
                    var local = sockaddr_storage()
                    var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
                    let clientPort = withUnsafeMutablePointer(to: &local) {
                        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa -> UInt16 in
                            getsockname(connection.fd, sa, &length)
                            return SocketAddress(sa)?.port ?? 0
                        }
                    }
                    #expect(connection.send(request))
                    let answer = String(decoding: connection.receiveAll() ?? [], as: UTF8.self)
                    let line = answer.split(separator: "\r\n\r\n").last.map(String.init)?.trimmedOfWhitespace ?? ""
                    let fields = line.split(separator: " ")
                    let context = "\(consumer.name), \(version), client \(source): \(answer)"
                    guard fields.count == 4 else {
                        Issue.record("unexpected answer: \(context)")
                        continue
                    }
                    #expect(Self.parse(fields[0]) == Self.parse(Substring(source)), "\(context)")
                    #expect(UInt16(fields[1]) == clientPort, "\(context)")
                    #expect(Self.parse(fields[2]) == Self.parse(Substring(host)), "\(context)")
                    #expect(UInt16(fields[3]) == daemon.port, "\(context)")
                }
            }
        }
    }

    /// Sends every case in both versions over both loopback listeners and compares
    /// what the consumer says it read with what the header was built from.
    func checkEveryCase(_ consumer: Consumer, request: [UInt8]) throws {
        // A control: without a header the consumer must refuse, or a pass below
        // could come from something other than the header.
        let bare = try TCPClient(host: "127.0.0.1", port: consumer.port)
        _ = bare.send(request.isEmpty ? Array("hello\r\n".utf8) : request)
        let refused = String(decoding: bare.receiveAll() ?? [], as: UTF8.self)
        #expect(!refused.contains("198.51.100") && !refused.contains("200 OK"), "\(consumer.name) answered without a header: \(refused)")

        for host in ["127.0.0.1", "::1"] {
            for version in ProxyHeader.Version.allCases {
                for (client, destination) in Self.cases {
                    let header = ProxyHeader(version: version, client: client, destination: destination)
                    let connection = try TCPClient(host: host, port: consumer.port)
                    #expect(connection.send(header.bytes + request))
                    let answer = String(decoding: connection.receiveAll() ?? [], as: UTF8.self)
                    // nginx answers the line alone; haproxy in an HTTP response body.
                    let line = answer.split(separator: "\r\n\r\n").last.map(String.init)?.trimmedOfWhitespace ?? ""
                    let context = "\(consumer.name) on \(host), \(version), \(client) -> \(destination): \(answer)"
                    let fields = line.split(separator: " ")
                    guard fields.count == 4 else {
                        Issue.record("unexpected answer: \(context)")
                        continue
                    }
                    let (source, sourcePort, target, targetPort) = Self.expected(header)
                    #expect(Self.parse(fields[0]) == source, "\(context)")
                    #expect(UInt16(fields[1]) == sourcePort, "\(context)")
                    #expect(Self.parse(fields[2]) == target, "\(context)")
                    #expect(UInt16(fields[3]) == targetPort, "\(context)")
                    print("\(consumer.name) on \(host), \(version), \(client) -> \(destination): read \(line)")
                }
            }
        }
    }

    /// What the header says, as numbers: consumers may print an address in any
    /// valid form (nginx echoes v1 text verbatim, haproxy prints mapped addresses dotted).
    static func expected(_ header: ProxyHeader) -> (IPAddress, UInt16, IPAddress, UInt16) {
        switch header.endpoints {
        case .ipv4(let source, let destination):
            (.v4(IPv4Address(source)), header.sourcePort, .v4(IPv4Address(destination)), header.destinationPort)
        case .ipv6(let source, let destination):
            (.v6(IPv6Address(wideValue: source)), header.sourcePort, .v6(IPv6Address(wideValue: destination)), header.destinationPort)
        }
    }

    static func parse(_ text: Substring) -> IPAddress? {
        IPv4Address(text).map(IPAddress.v4) ?? IPv6Address(text).map(IPAddress.v6)
    }
}

/// A PROXY protocol consumer running in the foreground, listening on 127.0.0.1 and
/// [::1] at one port. Stopped (SIGTERM, then SIGKILL) by `stop()`, always.
final class Consumer {
    let name: String
    let port: UInt16
    let process: Process
    let directory: URL

    private init(name: String, port: UInt16, process: Process, directory: URL) {
        self.name = name
        self.port = port
        self.process = process
        self.directory = directory
    }

    /// Picks a port free on both loopback addresses, writes the config and starts the
    /// program, until it serves (bounded: 5 attempts of at most 10 s each). Another
    /// process can take the port between the check and the start; the program then
    /// exits, and the next attempt takes another port.
    static func start(name: String, command: (URL, UInt16) throws -> [String]) throws -> Consumer {
        var failures: [String] = []
        for _ in 0..<5 {
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("\(name)-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            let port = try freeLoopbackPort()
            let arguments = try command(directory, port)
            let process = Process()
            process.executableURL = URL(fileURLWithPath: arguments[0])
            process.arguments = Array(arguments.dropFirst())
            let output = directory.appendingPathComponent("output")
            _ = FileManager.default.createFile(atPath: output.path, contents: nil)
            process.standardOutput = try FileHandle(forWritingTo: output)
            process.standardError = try FileHandle(forWritingTo: output)
            process.standardInput = FileHandle.nullDevice
            try process.run()
            let consumer = Consumer(name: name, port: port, process: process, directory: directory)
            let deadline = Date().addingTimeInterval(10)
            while process.isRunning, Date() < deadline {
                if consumer.accepts(on: "127.0.0.1"), consumer.accepts(on: "::1") { return consumer }
                usleep(20_000)
            }
            let log = ((try? String(contentsOf: output, encoding: .utf8)) ?? "")
                + ((try? String(contentsOf: directory.appendingPathComponent("error.log"), encoding: .utf8)) ?? "")
            consumer.stop()
            failures.append("port \(port): \(log.suffix(600))")
        }
        throw TestFailure("\(name) did not start: \(failures.joined(separator: "\n"))")
    }

    private func accepts(on host: String) -> Bool {
        (try? TCPClient(host: host, port: port, connectTimeout: 1)) != nil
    }

    func stop() {
        if process.isRunning {
            process.terminate()
            let deadline = Date().addingTimeInterval(5)
            while process.isRunning, Date() < deadline { usleep(10_000) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        }
        process.waitUntilExit()
        try? FileManager.default.removeItem(at: directory)
    }
}

/// A port that the kernel gave to a socket on 127.0.0.1 and that [::1] can bind
/// too, released for a program that cannot be told to bind port 0.
private func freeLoopbackPort() throws -> UInt16 {
    for _ in 0..<20 {
        let v4 = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard v4 >= 0 else { throw TestFailure("socket: \(errno)") }
        defer { close(v4) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(v4, $0, length) == 0 && getsockname(v4, $0, &length) == 0
            }
        }
        guard bound else { throw TestFailure("bind 127.0.0.1:0: \(errno)") }
        let port = UInt16(bigEndian: address.sin_port)
        let v6 = socket(AF_INET6, Int32(SOCK_STREAM.rawValue), 0)
        guard v6 >= 0 else { throw TestFailure("socket: \(errno)") }
        defer { close(v6) }
        var address6 = sockaddr_in6()
        address6.sin6_family = sa_family_t(AF_INET6)
        address6.sin6_port = port.bigEndian
        address6.sin6_addr.__in6_u.__u6_addr8.15 = 1
        let bound6 = withUnsafePointer(to: &address6) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(v6, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) == 0
            }
        }
        if bound6 { return port }
    }
    throw TestFailure("no port free on both 127.0.0.1 and [::1] after 20 tries")
}
