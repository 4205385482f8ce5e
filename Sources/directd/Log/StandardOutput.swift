/// What the commands print for the operator (`check`, `interfaces`): one line
/// at a time, escaped by the log's own escaper, since an interface name or a
/// zone may hold control characters (ESC, bidi overrides) that a terminal
/// would act on.
enum StandardOutput {
    static func line(_ text: String) {
        print(LogEscaping.escaped(text))
    }
}
