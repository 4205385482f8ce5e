extension Server {
    /// The control socket's view of this server (`ControlRequest`).
    var controlAnswers: ControlAnswers {
        ControlAnswers(
            report: { [unowned self] in self.statusReport() },
            startUpgrade: { [unowned self] in self.startRequestedUpgrade() },
            upgradeOutcome: { [unowned self] in self.upgradeLedger.outcome(of: $0) })
    }

    /// `directd upgrade`: starts one and numbers it, so that the command can
    /// ask after it; an upgrade that cannot start says why at once.
    private func startRequestedUpgrade() -> Result<UInt64, UpgradeRefusal> {
        let attempt = upgradeLedger.open()
        var refused: String?
        upgrade { [unowned self] outcome in
            self.upgradeLedger.close(attempt, outcome)
            if case .notStarted(let why) = outcome { refused = why }   // set only when it answers at once
        }
        if let refused { return .failure(UpgradeRefusal(reason: refused)) }
        return .success(attempt)
    }
}
