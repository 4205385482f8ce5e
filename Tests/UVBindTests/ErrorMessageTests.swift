import Testing
@testable import UVBind

/// Each error case has its own wording: what failed, why, and what to do.
struct ErrorMessageTests {
    func error(_ value: String, table: InterfaceTable = Fixtures.machine) -> BindError? {
        do {
            _ = try BindPlan(value: value, port: 21118, interfaces: table)
            return nil
        } catch {
            return error
        }
    }

    @Test func invalidFormatUsesTheSpecsWordsAndNamesThePart() throws {
        let single = try #require(error("999.999.999.999"))
        #expect(single.description.hasPrefix("Invalid bind interface address \"999.999.999.999\""))
        #expect(single.description.contains("\"999\" is out of range"))
        #expect(single.step == .parse)

        let inList = try #require(error("127.0.0.1, 010.1.1.1"))
        #expect(inList.description.hasPrefix("Invalid bind interface address \"127.0.0.1, 010.1.1.1\" (element \"010.1.1.1\")"))
        #expect(inList.description.contains("leading zero"))
        #expect(inList.element == "010.1.1.1")
    }

    @Test(arguments: ["192.0.2.10:21118", "localhost:80", "999.1.1.1:80", "[::1]:80"])
    func portInsideTheValueSaysWhereThePortGoes(_ value: String) throws {
        let message = try #require(error(value)).description
        #expect(message.contains("includes a port; set the port with direct-access-port"))
    }

    @Test func controlCharactersAreEscapedSoALogLineStaysOneLine() throws {
        let message = try #require(error("eth0\nrm")).description
        #expect(!message.contains("\n"))
        #expect(message.contains(#""eth0\nrm""#))
    }

    @Test func mappedWildcardIsRefusedNotWidened() throws {
        let message = try #require(error("::ffff:0.0.0.0")).description
        #expect(message.contains("IPv4-mapped form of 0.0.0.0; write 0.0.0.0 if you mean every IPv4 address"))
    }

    @Test func unknownInterfaceListsTheInterfaces() throws {
        let message = try #require(error("localhost")).description
        #expect(message.hasPrefix("Unknown interface \"localhost\""))
        #expect(message.contains("host names are not resolved"))
        #expect(message.contains("lo, eth0, wg0, eth1, down0"))
    }

    @Test func unknownZoneListsInterfacesWithIndexes() throws {
        let failure = try #require(error("fe80::1%eth9"))
        #expect(failure.kind == .unknownZone)
        #expect(failure.description.hasPrefix("Unknown zone in bind interface address \"fe80::1%eth9\""))
        #expect(failure.description.contains("no interface is named eth9"))
        #expect(failure.description.contains("eth0 (2)"))
    }

    @Test func linkLocalWithoutZoneNamesCandidatesAndTheForm() throws {
        let message = try #require(error("fe80::1")).description
        #expect(message.hasPrefix("Link-local address without a zone"))
        #expect(message.contains("held by 2 interfaces (eth0, wg0)"))
        #expect(message.contains("fe80::1%eth0"))
    }

    @Test func linkLocalThatNoInterfaceHoldsListsTheOnesThatExist() throws {
        let failure = try #require(error("fe80::2"))
        #expect(failure.kind == .addressNotAvailable)
        #expect(failure.description.contains("fe80::abcd%eth1 (eth1)"))
    }

    @Test func interfaceWithoutAddressesSaysHowToFixIt() throws {
        let failure = try #require(error("down0"))
        #expect(failure.description.hasPrefix("Interface \"down0\" has no usable address"))
        #expect(failure.description.contains("ip link set down0 up"))
    }

    @Test func addressNotAvailableListsThisMachinesAddresses() throws {
        let failure = try #require(error("203.0.113.9"))
        #expect(failure.code == .addressNotAvailable)
        #expect(failure.address?.description == "203.0.113.9:21118")
        #expect(failure.description.hasPrefix("Cannot listen on 203.0.113.9:21118"))
        #expect(failure.description.contains("not assigned to any interface"))
        #expect(failure.description.contains("192.0.2.10 (eth0)"))
        #expect(failure.description.contains("fe80::1%wg0 (wg0)"))
        #expect(failure.description.contains("EADDRNOTAVAIL"))
    }

    @Test func familyNotSupportedSaysWhichFamily() throws {
        let failure = try #require(error("2001:db8::10", table: Fixtures.ipv4Only))
        #expect(failure.kind == .familyNotSupported)
        #expect(failure.description.contains("IPv6 is not available on this host"))
        #expect(failure.description.contains("EAFNOSUPPORT"))
    }

    @Test func libuvFailuresAreWordedByCode() {
        let address = SocketAddress(ip: .v4(.loopback), port: 80)
        let inUse = BindError.call(.listen, failedWith: .addressInUse, value: "127.0.0.1", address: address, interfaces: nil)
        #expect(inUse.kind == .addressInUse)
        #expect(inUse.description.contains("already listening on port 80"))
        #expect(inUse.description.contains("[uv_listen: EADDRINUSE]"))

        let denied = BindError.call(.bind, failedWith: .permissionDenied, value: "127.0.0.1", address: address, interfaces: nil)
        #expect(denied.kind == .permissionDenied)
        #expect(denied.description.contains("ports below 1024 need root or the CAP_NET_BIND_SERVICE capability"))

        let other = BindError.call(.bind, failedWith: .invalidArgument, value: "127.0.0.1", address: address, interfaces: nil)
        #expect(other.kind == .system)
        #expect(other.description.contains("EINVAL"))
    }

    @Test func everyKindHasItsOwnFirstWords() {
        let samples: [BindError] = BindError.Kind.allCases.map { kind in
            BindError(kind: kind, value: "v", address: SocketAddress(ip: .v4(.loopback), port: 1),
                      step: .resolve, detail: "d", remedy: "r")
        }
        let summaries = Set(samples.map(\.summary))
        // Failures of a libuv call share "Cannot listen on ADDRESS"; their detail differs.
        #expect(summaries.count == BindError.Kind.allCases.count - 4)
    }

    @Test func uvErrorNamesComeFromLibuv() {
        #expect(UVError.addressInUse.name == "EADDRINUSE")
        #expect(UVError.addressInUse.message == "address already in use")
        #expect(UVError(-999_999).name.contains("999999"), "unknown codes still get a name")
    }
}
