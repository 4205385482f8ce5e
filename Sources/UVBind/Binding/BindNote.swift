/// Something the resolver or a listener group decided on the operator's behalf,
/// for the log: a zone it inferred, a family it left out, a mapped address it
/// bound as IPv4, an optional wildcard it skipped.
///
/// The severity is a value, not a "warning:" prefix in the text, so that every
/// caller (directd's serve and check, a C host) logs the same note at the same level.
public struct BindNote: Hashable, Sendable, CustomStringConvertible {
    public enum Severity: Int, Hashable, Sendable, Comparable {
        /// Worth knowing; nothing is listened on less or differently than asked.
        case info
        /// Less is listened on than the value could mean (a family skipped).
        case warning

        public static func < (a: Severity, b: Severity) -> Bool { a.rawValue < b.rawValue }
    }

    public let severity: Severity
    /// The note in words, without any severity prefix.
    public let text: String

    public init(_ severity: Severity, _ text: String) {
        self.severity = severity
        self.text = text
    }

    public static func info(_ text: String) -> BindNote { BindNote(.info, text) }
    public static func warning(_ text: String) -> BindNote { BindNote(.warning, text) }

    /// `warning: text` or `text`, as the C API's message buffers carry notes.
    public var description: String {
        severity == .warning ? "warning: \(text)" : text
    }
}
