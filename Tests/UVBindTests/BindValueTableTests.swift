import Testing
@testable import UVBind

/// The bind-value grammar, end to end through the resolver, on a made-up machine.
struct BindValueTableTests {
    enum Outcome: Sendable, CustomStringConvertible {
        case listen([String])
        case error(BindError.Kind)

        var description: String {
            switch self {
            case .listen(let addresses): "listen \(addresses)"
            case .error(let kind): "error \(kind)"
            }
        }
    }

    struct Case: Sendable, CustomTestStringConvertible {
        let value: String
        let outcome: Outcome
        var ipv4Only = false
        var testDescription: String { "\"\(value)\"\(ipv4Only ? " (IPv4-only host)" : "") → \(outcome)" }
    }

    static let port: UInt16 = 21118

    static func ok(_ value: String, _ addresses: String...) -> Case {
        Case(value: value, outcome: .listen(addresses))
    }

    static func fail(_ value: String, _ kind: BindError.Kind) -> Case {
        Case(value: value, outcome: .error(kind))
    }

    static let cases: [Case] = [
        // Rule 1: empty, missing or white space: both wildcards.
        ok("", "0.0.0.0:21118", "[::]:21118"),
        ok("   ", "0.0.0.0:21118", "[::]:21118"),
        ok("\t \n", "0.0.0.0:21118", "[::]:21118"),
        Case(value: "", outcome: .listen(["0.0.0.0:21118"]), ipv4Only: true),
        // Rule 2: strict dotted quad.
        ok("127.0.0.1", "127.0.0.1:21118"),
        ok("  127.0.0.1  ", "127.0.0.1:21118"),
        ok("127.0.0.1\r\n", "127.0.0.1:21118"),
        ok("127.0.0.2", "127.0.0.2:21118"),
        ok("127.255.255.254", "127.255.255.254:21118"),
        ok("192.0.2.10", "192.0.2.10:21118"),
        fail("999.999.999.999", .invalidFormat),
        fail("256.0.0.1", .invalidFormat),
        fail("127.1", .invalidFormat),
        fail("1.2.3", .invalidFormat),
        fail("1.2.3.4.5", .invalidFormat),
        fail("010.0.0.1", .invalidFormat),
        fail("1..2.3", .invalidFormat),
        fail("1.2.3.4x", .invalidFormat),
        fail("1.2.3.4 5", .invalidFormat),
        fail("0x7f.0.0.1", .invalidFormat),
        fail("2130706433", .invalidFormat),
        fail("127.0.0.1%eth0", .invalidFormat),
        // Rule 3: IPv6 text forms, brackets, zones.
        ok("::1", "[::1]:21118"),
        ok("[::1]", "[::1]:21118"),
        ok("0:0:0:0:0:0:0:1", "[::1]:21118"),
        ok("::0.0.0.1", "[::1]:21118"),
        ok("2001:db8::10", "[2001:db8::10]:21118"),
        ok("2001:DB8:0:0:0:0:0:10", "[2001:db8::10]:21118"),
        ok("2001:0db8:0000:0000:0000:0000:0000:0010", "[2001:db8::10]:21118"),
        ok("[2001:db8::10]", "[2001:db8::10]:21118"),
        ok("fe80::1%eth0", "[fe80::1%eth0]:21118"),
        ok("fe80::1%2", "[fe80::1%eth0]:21118"),
        ok("[fe80::1%wg0]", "[fe80::1%wg0]:21118"),
        ok("fe80::abcd", "[fe80::abcd%eth1]:21118"),
        ok("FE80::ABCD", "[fe80::abcd%eth1]:21118"),
        ok("::ffff:127.0.0.1", "127.0.0.1:21118"),
        ok("::ffff:7f00:1", "127.0.0.1:21118"),
        fail("1:2:3:4:5:6:7:8:9", .invalidFormat),
        fail("1:2:3:4:5:6:7", .invalidFormat),
        fail("1::2::3", .invalidFormat),
        fail("12345::1", .invalidFormat),
        fail("g::1", .invalidFormat),
        fail(":1::", .invalidFormat),
        fail(":::", .invalidFormat),
        fail("1.2.3.4::", .invalidFormat),
        fail("::ffff:1.2.3.256", .invalidFormat),
        fail("[::1", .invalidFormat),
        fail("::1]", .invalidFormat),
        fail("[::1]x", .invalidFormat),
        fail("fe80::1%", .invalidFormat),
        fail("2001:db8::10%eth0", .invalidFormat),
        fail("::ffff:127.0.0.1%lo", .invalidFormat),
        fail("::ffff:0.0.0.0", .invalidFormat),
        fail("::ffff:0:0,192.0.2.10", .invalidFormat),
        fail("fe80::1%eth9", .unknownZone),
        fail("fe80::1%99", .unknownZone),
        fail("fe80::1", .linkLocalWithoutZone),
        fail("[fe80::1]", .linkLocalWithoutZone),
        fail("fe80::2", .addressNotAvailable),
        // Rule 4: the wildcards, one family each.
        ok("0.0.0.0", "0.0.0.0:21118"),
        ok("::", "[::]:21118"),
        ok("[::]", "[::]:21118"),
        // Rule 5: interface names.
        ok("lo", "127.0.0.1:21118", "[::1]:21118"),
        ok("eth0", "192.0.2.10:21118", "[2001:db8::10]:21118", "[fe80::1%eth0]:21118"),
        fail("down0", .interfaceWithoutAddresses),
        fail("eth9", .unknownInterface),
        fail("averyveryverylongname", .invalidFormat),
        fail("a/b", .invalidFormat),
        // Rule 6: lists, union without duplicates; one bad element rejects all.
        ok("127.0.0.1,::1", "127.0.0.1:21118", "[::1]:21118"),
        ok("127.0.0.1 , ::1", "127.0.0.1:21118", "[::1]:21118"),
        ok("127.0.0.1,127.0.0.1", "127.0.0.1:21118"),
        ok("lo,127.0.0.1,::1", "127.0.0.1:21118", "[::1]:21118"),
        ok("::ffff:192.0.2.10,192.0.2.10", "192.0.2.10:21118"),
        ok("0.0.0.0,127.0.0.1", "0.0.0.0:21118"),
        ok("::1,::,127.0.0.1", "[::]:21118", "127.0.0.1:21118"),
        ok("fe80::1%eth0,fe80::1%wg0", "[fe80::1%eth0]:21118", "[fe80::1%wg0]:21118"),
        ok("eth1,wg0", "198.51.100.4:21118", "[fe80::abcd%eth1]:21118", "203.0.113.7:21118", "[fe80::1%wg0]:21118"),
        fail("127.0.0.1,999.1.1.1", .invalidFormat),
        fail("127.0.0.1,,::1", .invalidFormat),
        fail("127.0.0.1,", .invalidFormat),
        fail(",127.0.0.1", .invalidFormat),
        fail("127.0.0.1,eth9", .unknownInterface),
        fail("127.0.0.1,203.0.113.99", .addressNotAvailable),
        // Syntax is checked on every element before the machine is consulted: the
        // error does not depend on the order (issue 9, 18).
        fail("203.0.113.99,::1%lo", .invalidFormat),
        fail("::1%lo,203.0.113.99", .invalidFormat),
        fail("eth9,::ffff:0.0.0.0", .invalidFormat),
        fail("::ffff:0.0.0.0,eth9", .invalidFormat),
        fail("fe80::1%eth9,::ffff:127.0.0.1%lo", .invalidFormat),
        fail("::ffff:127.0.0.1%lo,fe80::1%eth9", .invalidFormat),
        fail("fe80::1,2001:db8::10%eth0", .invalidFormat),
        fail("2001:db8::10%eth0,fe80::1", .invalidFormat),
        fail("down0,[::ffff:0:0]", .invalidFormat),
        // Rule 7: host names and ports are not bind values.
        fail("localhost", .unknownInterface),
        fail("example.com", .unknownInterface),
        fail("1.2.3.4:80", .invalidFormat),
        fail("[::1]:80", .invalidFormat),
        fail("localhost:80", .invalidFormat),
        fail("999.1.1.1:80", .invalidFormat),
        // Addresses that are well formed but not this machine's.
        fail("203.0.113.9", .addressNotAvailable),
        fail("192.0.2.11", .addressNotAvailable),
        fail("2001:db8::99", .addressNotAvailable),
        fail("fe80::1%eth1", .addressNotAvailable),
        // A family the host does not have.
        Case(value: "::1", outcome: .error(.familyNotSupported), ipv4Only: true),
        Case(value: "::", outcome: .error(.familyNotSupported), ipv4Only: true),
        Case(value: "lo", outcome: .listen(["127.0.0.1:21118"]), ipv4Only: true),
    ]

    @Test("at least 60 values are covered")
    func tableIsLargeEnough() {
        #expect(Self.cases.count >= 60)
    }

    @Test(arguments: cases)
    func resolves(_ testCase: Case) {
        let table = testCase.ipv4Only ? Fixtures.ipv4Only : Fixtures.machine
        let result = Result { () throws(BindError) in
            try BindPlan(value: testCase.value, port: Self.port, interfaces: table)
        }
        switch (testCase.outcome, result) {
        case (.listen(let expected), .success(let plan)):
            #expect(plan.targets.map(\.address.description) == expected)
            #expect(plan.targets.allSatisfy { $0.address.family == .ipv4 || $0.ipv6Only },
                    "every IPv6 listener is IPv6-only")
        case (.error(let kind), .failure(let error)):
            #expect(error.kind == kind, "\(error)")
            #expect(error.value == testCase.value)
        case (_, .success(let plan)):
            Issue.record("expected \(testCase.outcome), got \(plan.targets.map(\.address.description))")
        case (_, .failure(let error)):
            Issue.record("expected \(testCase.outcome), got \(error.kind): \(error)")
        }
    }

    /// A list whose first element cannot be resolved and whose second is malformed
    /// reports the malformed one, in either order, and never looks at the machine.
    @Test(arguments: [("10.0.0.1", "::1%lo"), ("eth9", "::ffff:0.0.0.0"), ("fe80::1%eth9", "::ffff:192.0.2.10%eth0")])
    func syntaxErrorWinsInEitherOrder(_ pair: (String, String)) {
        for value in ["\(pair.0),\(pair.1)", "\(pair.1),\(pair.0)"] {
            #expect(throws: BindError.self) { _ = try BindValue(parsing: value) }
            do throws(BindError) {
                _ = try BindPlan(value: value, port: 1, interfaces: Fixtures.machine)
                Issue.record("\(value) was accepted")
            } catch {
                #expect(error.kind == .invalidFormat, "\(value): \(error)")
                #expect(error.step == .parse, "\(value)")
                #expect(error.element == pair.1, "the malformed element is named (\(value))")
            }
        }
    }

    @Test func mappedWildcardIsRefusedWithTheReason() {
        do throws(BindError) {
            _ = try BindValue(parsing: "::ffff:0.0.0.0")
            Issue.record("accepted")
        } catch {
            #expect(error.description.contains("IPv4-mapped form of 0.0.0.0"))
            #expect(error.description.contains("write 0.0.0.0"))
        }
    }

    @Test func bindToDeviceNamesTheInterfaceThatHoldsEachAddress() throws {
        let value = try BindValue(parsing: "192.0.2.10, fe80::1%wg0, 127.0.0.2, eth1")
        let plan = try BindPlan(value, port: 1, interfaces: Fixtures.machine, bindToDevice: true)
        #expect(plan.targets.map(\.address.description) ==
                ["192.0.2.10:1", "[fe80::1%wg0]:1", "127.0.0.2:1", "198.51.100.4:1", "[fe80::abcd%eth1]:1"])
        #expect(plan.targets.map(\.device) == ["eth0", "wg0", "lo", "eth1", "eth1"])
        let plain = try BindPlan(value, port: 1, interfaces: Fixtures.machine)
        #expect(plain.targets.allSatisfy { $0.device == nil })
    }

    @Test(arguments: ["", " ", "0.0.0.0", "::", "[::]", "eth0,0.0.0.0"])
    func bindToDeviceRefusesWildcards(_ text: String) {
        do throws(BindError) {
            _ = try BindPlan(value: text, port: 1, interfaces: Fixtures.machine, bindToDevice: true)
            Issue.record("\"\(text)\" was accepted")
        } catch {
            #expect(error.kind == .invalidFormat)
            #expect(error.description.contains("bind-to-device"))
        }
    }

    @Test func waitingElementsAreListedNotThrown() throws {
        let value = try BindValue(parsing: "eth9, 192.0.2.10, 203.0.113.99, fe80::1%wg9, down0")
        let plan = try BindPlan(value, port: 1, interfaces: Fixtures.machine, waiting: true)
        #expect(plan.targets.map(\.address.description) == ["192.0.2.10:1"])
        #expect(plan.waiting.map(\.element) == ["eth9", "203.0.113.99", "fe80::1%wg9", "down0"])
        #expect(plan.waiting.map(\.kind) == [.unknownInterface, .addressNotAvailable, .unknownZone, .interfaceWithoutAddresses])
        // Without waiting, the first of them is the error, as always.
        #expect(throws: BindError.self) { try BindPlan(value, port: 1, interfaces: Fixtures.machine) }
        // Nothing there at all: an empty plan, not an error.
        let none = try BindPlan(BindValue(parsing: "wg9"), port: 1,
                                interfaces: InterfaceTable(interfaces: [], addresses: []), waiting: true)
        #expect(none.targets.isEmpty && none.waiting.count == 1)
    }

    @Test func emptyValueOnIPv4OnlyHostWarns() throws {
        let plan = try BindPlan(value: "", port: 1, interfaces: Fixtures.ipv4Only)
        #expect(plan.notes.contains { $0.severity == .warning && $0.text.hasPrefix("IPv6 is not available") })
    }

    @Test func inferredZoneIsReported() throws {
        let plan = try BindPlan(value: "fe80::abcd", port: 1, interfaces: Fixtures.machine)
        #expect(plan.notes == [.info("fe80::abcd is held by eth1 only: listening on fe80::abcd%eth1")])
        #expect(plan.targets.first?.address.scopeID == 4)
    }

    @Test func mappedAddressIsReportedAsIPv4() throws {
        let plan = try BindPlan(value: "::ffff:127.0.0.1", port: 1, interfaces: Fixtures.machine)
        #expect(plan.targets.map(\.address.family) == [.ipv4])
        #expect(plan.notes.first?.text.contains("listening on 127.0.0.1 (IPv4)") == true)
        #expect(plan.notes.first?.severity == .info)
    }
}

/// An interface holding an IPv4-mapped address (the kernel lets one add
/// ::ffff:0.0.0.0): listening on it failed with an unexpected EINVAL (issue 18).
struct MappedInterfaceAddressTests {
    static let table = InterfaceTable(
        interfaces: [("lo", 1), ("m0", 2), ("m1", 3)],
        addresses: [
            Fixtures.entry("lo", 1, Fixtures.v4("127.0.0.1"), 8, loopback: true),
            Fixtures.entry("m0", 2, Fixtures.v4("198.51.100.9"), 24),
            Fixtures.entry("m0", 2, Fixtures.v6("::ffff:0.0.0.0"), 128),
            Fixtures.entry("m0", 2, Fixtures.v6("2001:db8::9"), 64),
            Fixtures.entry("m1", 3, Fixtures.v6("::ffff:0.0.0.0"), 128),
        ])

    @Test func aMappedAddressIsSkippedWithAWarning() throws {
        let plan = try BindPlan(value: "m0", port: 21118, interfaces: Self.table)
        #expect(plan.targets.map(\.address.description) == ["198.51.100.9:21118", "[2001:db8::9]:21118"])
        #expect(plan.notes.contains(.warning("interface m0 holds ::ffff:0.0.0.0, an IPv4-mapped address, which is not an address to listen on: skipped")),
                "\(plan.notes)")
    }

    @Test func anInterfaceWithOnlyAMappedAddressHasNoUsableAddress() throws {
        let error = #expect(throws: BindError.self) { try BindPlan(value: "m1", port: 21118, interfaces: Self.table) }
        #expect(error?.kind == .interfaceWithoutAddresses)
        #expect(error?.detail.contains("no usable address: only IPv4-mapped ones (::ffff:0.0.0.0)") == true, "\(error?.detail ?? "")")
    }
}
