import CUV
import UVBind

/// Listeners that a failed reconcile closed and could not open again (another
/// process took the address in between): directd then listens on less than
/// the plan in force, possibly nothing, which it did not ask for. That is an
/// error: reported (the log, the service manager's STATUS, the SIGUSR1
/// summary through `note`) and retried with back-off, 1 s doubling to 30 s,
/// until the listeners are back or another plan is put in force. Loop thread only.
final class ListenerRecovery {
    static let firstDelay: UInt64 = 1000
    static let maxDelay: UInt64 = 30_000

    private let loop: UnsafeMutablePointer<uv_loop_t>
    private var timer: LoopTimer?
    private var delay = ListenerRecovery.firstDelay
    /// The addresses missing, for messages.
    private(set) var missing: [String] = []

    init(loop: UnsafeMutablePointer<uv_loop_t>) {
        self.loop = loop
    }

    var isActive: Bool { !missing.isEmpty }

    /// What is wrong, for the status line and the summary; nil when nothing is.
    var note: String? {
        guard isActive else { return nil }
        return "error: not listening on \(missing.joined(separator: ", ")) (lost at a failed change; trying to open again)"
    }

    /// Starts retrying: `attempt` tries to open what is missing and returns
    /// the addresses still missing (empty: recovered).
    func begin(missing: [String], attempt: @escaping () -> [String]) {
        let first = !isActive
        self.missing = missing
        if first { delay = Self.firstDelay }
        Log.error("\(note!); next try in \(Double(delay) / 1000) s")
        schedule(attempt)
    }

    /// Another plan is in force (or the listeners are back): nothing to retry.
    func end() {
        missing = []
        timer?.close()
        timer = nil
    }

    private func schedule(_ attempt: @escaping () -> [String]) {
        timer?.close()
        do throws(UVError) {
            timer = try LoopTimer(loop: loop, everyMilliseconds: delay) { [unowned self] in
                self.timer?.close()
                self.timer = nil
                let still = attempt()
                guard !still.isEmpty else {
                    self.missing = []
                    return
                }
                self.missing = still
                self.delay = min(self.delay * 2, Self.maxDelay)
                Log.error("\(self.note!); next try in \(Double(self.delay) / 1000) s")
                self.schedule(attempt)
            }
        } catch {
            Log.error("cannot start the timer to open the lost listeners again: \(error)")
        }
    }
}
