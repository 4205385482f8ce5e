/// What the control socket's requests reach in the running directd: a seam,
/// so that `ControlRequest` parses and words the replies without knowing the
/// server. Loop only.
struct ControlAnswers {
    var report: () -> StatusReport
    /// Starts an upgrade: its attempt number, or why it did not start.
    var startUpgrade: () -> Result<UInt64, UpgradeRefusal>
    /// An attempt's outcome here: nil if this process does not know it, .some(nil) while it runs.
    var upgradeOutcome: (UInt64) -> UpgradeOutcome??
}

/// Why an upgrade did not start (one line).
struct UpgradeRefusal: Error {
    let reason: String
}
