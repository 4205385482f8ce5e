/// The `direct-access-port` option: a whole number from 0 to 65535.
public enum ListenPort {
    /// RustDesk's direct access port, the default when none is configured.
    public static let `default`: UInt16 = 21118

    /// Reads a port; 0 asks the kernel for a free one when listening.
    public static func parse(_ text: String) throws(BindError) -> UInt16 {
        let trimmed = text.trimmedOfWhitespace
        guard trimmed.allDecimal, let port = UInt16(trimmed) else {
            throw BindError(kind: .invalidPort, value: text, step: .parse,
                            detail: trimmed.allDecimal ? "it is above 65535" : "it is not a whole number",
                            remedy: "Use a port from 1 to 65535, or 0 to let the kernel choose a free one")
        }
        return port
    }

    /// Checks a port given as a number (a JSON number, say).
    public static func validate(_ value: Int) throws(BindError) -> UInt16 {
        guard let port = UInt16(exactly: value) else {
            throw BindError(kind: .invalidPort, value: String(value), step: .parse,
                            detail: "it is outside 0 to 65535",
                            remedy: "Use a port from 1 to 65535, or 0 to let the kernel choose a free one")
        }
        return port
    }
}
