import Testing
@testable import directd

/// The config reader on its own: what a JSON file may hold, and every path that
/// would widen the bind refused with a message that names the problem (issue 9).
struct ConfigFileTests {
    func load(_ json: String) throws(ConfigError) -> Settings {
        var settings = Settings()
        try ConfigFile.loadJSON(Array(json.utf8), path: "test.json", into: &settings)
        return settings
    }

    func failure(_ json: String) -> String? {
        do {
            _ = try load(json)
            return nil
        } catch {
            return error.description
        }
    }

    // MARK: duplicate keys (item 1)

    @Test(arguments: [
        (#"{"options":{"bind-interface":"","bind-interface":"127.0.0.1"}}"#, "bind-interface"),
        (#"{"options":{"whitelist":"","whitelist":"10.0.0.0/8"}}"#, "whitelist"),
        // The same key after escapes are decoded.
        (#"{"options":{"bind\u002dinterface":"127.0.0.1","bind-interface":""}}"#, "bind-interface"),
        (#"{"options":{"b\u0069nd-interface":"127.0.0.1","bind-interfac\u0065":""}}"#, "bind-interface"),
        // Any level: the top, an unknown option's object, an array's object.
        (#"{"options":{"bind-interface":"127.0.0.1"},"options":{"bind-interface":""}}"#, "options"),
        (#"{"options":{"x":{"a":1,"a":2}}}"#, "a"),
        (#"{"options":{"x":[{"a":1,"a":2}]}}"#, "a"),
        (#"{"other":{"k":1,"k":1},"options":{}}"#, "k"),
    ])
    func duplicateKeysAreErrorsNamingTheKey(_ json: String, _ key: String) {
        let message = failure(json)
        #expect(message?.contains("duplicate key \"\(key)\"") == true, "\(message ?? "accepted")")
    }

    @Test func theSameKeyInDifferentObjectsIsFine() throws {
        let settings = try load(#"{"options":{"bind-interface":"127.0.0.1","x":{"bind-interface":""}},"y":{"bind-interface":""}}"#)
        #expect(settings.bindInterface == "127.0.0.1")
    }

    // MARK: options object (items 2, 3)

    @Test(arguments: [
        (#"{"options": null}"#, "\"options\" must be an object"),
        (#"{"options": "127.0.0.1"}"#, "\"options\" must be an object"),
        (#"{"settings":{"bind-interface":"127.0.0.1"}}"#, "has no \"options\" object"),
        (#"{"opts":{"bind-interface":"127.0.0.1"}}"#, "has no \"options\" object"),
        (#"{}"#, "has no \"options\" object"),
    ])
    func aFileThatConfiguresNothingIsAnError(_ json: String, _ message: String) {
        #expect(failure(json)?.contains(message) == true, "\(failure(json) ?? "accepted")")
    }

    @Test func unknownTopLevelKeysBesideOptionsStayWarnings() throws {
        let settings = try load(#"{"other": 1, "options": {"bind-interface": "127.0.0.1"}}"#)
        #expect(settings.bindInterface == "127.0.0.1")
        #expect(settings.warnings == [#"config file test.json: ignoring unknown top-level key "other""#])
        #expect(try load(#"{"options": {}}"#).warnings.isEmpty, "an empty options object configures the defaults on purpose")
    }

    // MARK: control characters (item 4)

    @Test(arguments: [
        #"{"options":{"direct-forward":"localhost\u0000.attacker.example:19001"}}"#,
        #"{"options":{"bind-interface":"127.0.0.1\u0000"}}"#,
        #"{"options":{"bind-interface":"127.0.0.1\n0.0.0.0"}}"#,
        #"{"options":{"whitelist":"10.0.0.0/8\t,0.0.0.0/0"}}"#,
        #"{"options":{"log-level":"info\u007f"}}"#,
        #"{"options":{"bind-interface":"lo\u0085"}}"#,
        #"{"options":{"relay-server":"x\u0000y"}}"#,
        #"{"options":{"relay\nserver":"x"}}"#,
    ])
    func controlCharactersInsideAValueAreRefused(_ json: String) {
        let message = failure(json)
        #expect(message?.contains("control character") == true, "\(message ?? "accepted")")
        #expect(message?.contains("\n") == false, "the message escapes what it quotes")
    }

    @Test func whiteSpaceAroundAValueIsTrimmedAsBefore() throws {
        // A value pasted with its line ending (CRLF) is still accepted.
        #expect(try load(#"{"options":{"bind-interface":"127.0.0.1\r\n","direct-access-port":" 4321\t"}}"#).port == 4321)
    }

    // MARK: numbers (item 5)

    @Test(arguments: ["21118.0", "2.1118e4", "2.1118E+4", "21118e0", "-0", "-1"])
    func thePortIsAWholeNumberInBothForms(_ literal: String) {
        let asNumber = failure(#"{"options":{"direct-access-port":\#(literal)}}"#)
        let asString = failure(#"{"options":{"direct-access-port":"\#(literal)"}}"#)
        #expect(asNumber != nil, "\(literal) as a number was accepted")
        #expect(asString != nil, "\(literal) as a string was accepted")
    }

    @Test func numbersAreReadLikeTheSameText() throws {
        #expect(try load(#"{"options":{"direct-access-port":4321}}"#).port == 4321)
        #expect(try load(#"{"options":{"idle-timeout":0.5}}"#).idleTimeout == 0.5)
        #expect(try load(#"{"options":{"max-connections":7}}"#).maxConnections == 7)
        #expect(failure(#"{"options":{"max-connections":7.0}}"#) != nil)
        #expect(failure(#"{"options":{"idle-timeout":1e3}}"#) != nil, "\"1e3\" is refused as a string too")
        #expect(failure(#"{"options":{"direct-access-port":99999999999999999999999}}"#) != nil)
    }

    // MARK: the reader

    @Test(arguments: [
        #"{"options": {"bind-interface": "127.0.0.1",}}"#,
        #"{"options": {"bind-interface": '127.0.0.1'}}"#,
        #"{"options": {}} // comment"#,
        #"{"options": {"a": 01}}"#,
        #"{"options": {"a": "\ud800"}}"#,
        #"{"options": {"a": "\x41"}}"#,
        "{\"options\": {\"a\": \"tab\there\"}}",
        #"{"options": {"a": tru}}"#,
        String(repeating: "[", count: 100_000),
        "",
    ])
    func malformedJSONIsRefusedWithItsPosition(_ json: String) {
        let message = failure(json)
        #expect(message?.contains("is not valid JSON: line ") == true, "\(message ?? "accepted")")
    }

    @Test func invalidUTF8IsRefused() {
        var settings = Settings()
        let bytes = Array(#"{"options":{"bind-interface":""#.utf8) + [0xC3, 0x28] + Array(#""}}"#.utf8)
        #expect(throws: ConfigError.self) { try ConfigFile.loadJSON(bytes, path: "x", into: &settings) }
    }

    @Test func theReaderDecodesWhatJSONAllows() throws {
        let value = try JSONReader.parse(Array("\u{FEFF}{\"a\": [true, false, null, -1.5e-3, \"\\u00e9\\ud83d\\ude00\\n\\/\"]}".utf8))
        guard case .object(let members) = value, case .array(let elements) = members.first?.value,
              case .number(let number) = elements[3], case .string(let text) = elements[4] else {
            Issue.record("unexpected shape: \(value)")
            return
        }
        #expect(number == "-1.5e-3")
        #expect(text == "é😀\n/")
    }

    @Test func theLineOfAnErrorIsReported() {
        let message = failure("{\n  \"options\": {\n    \"bind-interface\": \"\",\n    \"bind-interface\": \"::1\"\n  }\n}")
        #expect(message?.contains("line 4, column 5: duplicate key \"bind-interface\"") == true, "\(message ?? "accepted")")
    }
}
