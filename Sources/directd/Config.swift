import Foundation
import UVBind

/// What directd serves, from the embedded default, a JSON file and flags, in that order.
struct Settings {
    var bindInterface = ""
    var port = ListenPort.default
    var backlog: Int32 = 511
    /// Things worth telling the operator that do not stop the start (unknown keys, say).
    var warnings: [String] = []
}

/// A config file that cannot be used: unreadable, not JSON, or a value of the wrong type.
struct ConfigError: Error, CustomStringConvertible {
    let description: String
}

/// The spec's config file: `{"options": {"bind-interface": "...", "direct-access-port": "..."}}`.
/// Values may be strings, as the spec's tool stores them, or numbers for the port.
enum ConfigFile {
    static let knownOptions: Set<String> = ["bind-interface", "direct-access-port"]

    static func load(_ path: String, into settings: inout Settings) throws {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw ConfigError(description: "Cannot read config file \(path): \(readFailure(error))")
        }
        let root: JSONValue
        do {
            root = try JSONDecoder().decode(JSONValue.self, from: data)
        } catch {
            throw ConfigError(description: "Config file \(path) is not valid JSON: \(decodingFailure(error))")
        }
        guard case .object(let top) = root else {
            throw ConfigError(description: "Config file \(path): expected a JSON object such as {\"options\": {\"bind-interface\": \"\"}}, found \(root.typeName)")
        }
        for key in top.keys.sorted() where key != "options" {
            settings.warnings.append("config file \(path): ignoring unknown top-level key \"\(key)\"")
        }
        guard let optionsValue = top["options"], optionsValue != .null else { return }
        guard case .object(let options) = optionsValue else {
            throw ConfigError(description: "Config file \(path): \"options\" must be an object, found \(optionsValue.typeName)")
        }
        for key in options.keys.sorted() where !knownOptions.contains(key) {
            settings.warnings.append("config file \(path): ignoring unknown option \"\(key)\"")
        }
        switch options["bind-interface"] {
        case nil, .null: break
        case .string(let value): settings.bindInterface = value
        case let other?:
            throw ConfigError(description: "Config file \(path): option \"bind-interface\" must be a string, found \(other.typeName)")
        }
        switch options["direct-access-port"] {
        case nil, .null: break
        case .string(let text): settings.port = try ListenPort.parse(text)
        case .integer(let number): settings.port = try ListenPort.validate(number)
        case let other?:
            throw ConfigError(description: "Config file \(path): option \"direct-access-port\" must be a port number (0-65535) or a string holding one, found \(other.typeName)")
        }
    }

    private static func readFailure(_ error: Error) -> String {
        let nsError = error as NSError
        if let underlying = nsError.userInfo[NSUnderlyingErrorKey] as? NSError,
           underlying.domain == NSPOSIXErrorDomain {
            return String(cString: strerror(Int32(underlying.code)))
        }
        switch nsError.code {
        case NSFileReadNoSuchFileError: return "no such file"
        case NSFileReadNoPermissionError: return "permission denied"
        default: return nsError.localizedDescription
        }
    }

    private static func decodingFailure(_ error: Error) -> String {
        if case DecodingError.dataCorrupted(let context) = error {
            let underlying = (context.underlyingError as NSError?)?.userInfo[NSDebugDescriptionErrorKey] as? String
            return underlying ?? context.debugDescription
        }
        return "\(error)"
    }
}

/// Any JSON value, so that types are checked key by key with precise errors.
enum JSONValue: Decodable, Equatable {
    case null, bool(Bool), integer(Int), number(Double), string(String)
    case array([JSONValue]), object([String: JSONValue])

    init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() { self = .null }
        else if let value = try? container.decode(Bool.self) { self = .bool(value) }
        else if let value = try? container.decode(Int.self) { self = .integer(value) }
        else if let value = try? container.decode(Double.self) { self = .number(value) }
        else if let value = try? container.decode(String.self) { self = .string(value) }
        else if let value = try? container.decode([JSONValue].self) { self = .array(value) }
        else { self = .object(try container.decode([String: JSONValue].self)) }
    }

    var typeName: String {
        switch self {
        case .null: "null"
        case .bool: "a boolean"
        case .integer, .number: "a number"
        case .string: "a string"
        case .array: "an array"
        case .object: "an object"
        }
    }
}
