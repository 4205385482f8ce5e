import ArgumentParser

/// The command line as directd reads it, checked in one linear pass before
/// swift-argument-parser parses it.
///
/// - A flag given twice is a usage error (64) naming the flag, as nginx refuses a
///   repeated directive: which of two `--bind-interface` values wins should not be
///   a guess. It also keeps parsing linear: swift-argument-parser stores repeated
///   values at a cost that grows with their number, and 12,000 repeated flags took
///   37 s before this check.
/// - The argument after a flag that takes a value is that value, even when it
///   starts with "-".
/// - `--flag=` (empty after "=") means `--flag ''`: both spellings give the empty
///   value (for `--bind-interface`, all interfaces). swift-argument-parser reads
///   the first as a missing value.
enum ArgumentCheck {
    /// Long flags that take a value: every option's, and `--config`.
    static let valueFlags: Set<String> = Set(OptionTable.all.compactMap(\.flag)).union(["config"])

    static func normalise(_ arguments: [String]) throws(ValidationError) -> [String] {
        var result: [String] = []
        result.reserveCapacity(arguments.count + 1)
        var seen: Set<String> = []
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            index += 1
            // After "--" everything is an operand.
            if argument == "--" {
                result.append(contentsOf: arguments[(index - 1)...])
                break
            }
            guard argument.hasPrefix("--") else {
                result.append(argument)
                continue
            }
            let body = argument.dropFirst(2)
            let name = body.firstIndex(of: "=").map { String(body[..<$0]) } ?? String(body)
            guard valueFlags.contains(name) else {
                result.append(argument)
                continue
            }
            guard seen.insert(name).inserted else {
                throw ValidationError("--\(name) is given more than once; give each option once")
            }
            if body.count == name.count + 1 {
                // "--flag=": the empty value, as "--flag ''" gives it.
                result.append("--\(name)")
                result.append("")
            } else {
                // "--flag value" is passed on as "--flag=value": the value is the
                // flag's even when it starts with "-" ("--port -1" is an invalid
                // port, 78, not a missing value).
                // swift-argument-parser reads "--flag=" as a missing value, so the
                // empty value goes as a separate argument.
                if body.count == name.count, index < arguments.count {
                    let value = arguments[index]
                    index += 1
                    if value.isEmpty {
                        result.append("--\(name)")
                        result.append("")
                    } else {
                        result.append("--\(name)=\(value)")
                    }
                } else {
                    result.append(argument)
                }
            }
        }
        return result
    }
}
