import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Testing

/// `directd upgrade` over the control socket, with the metrics endpoint on:
/// the command waits for the outcome and exits 0 once the new process serves
/// (which then answers on the same control socket and metrics address), or
/// 75 with the reason when the upgrade rolls back.
@Suite(.serialized)
struct UpgradeCommandTests {
    @Test func theCommandWaitsForTheNewProcessAndTheEndpointsMoveWithIt() throws {
        let copy = try InstalledCopy()
        let control = copy.directory.appendingPathComponent("control.sock").path
        let metricsPort = try freePort()
        let daemon = try UpgradingDaemon(["--config", copy.config, "--control-socket", control,
                                          "--metrics-listen", "127.0.0.1:\(metricsPort)"], copy: copy)
        let session = try TCPClient(host: "127.0.0.1", port: daemon.port)
        #expect(roundTrip(session, "before"))
        try copy.setVersion("b")

        let upgraded = try runDirectd(["upgrade", "--control-socket", control, "--timeout", "30"], executable: copy.path)
        #expect(upgraded.status == 0, "\(upgraded.stdout) \(upgraded.stderr)")
        let pid = try #require(daemon.upgradedPIDs.last, "\(daemon.logText)")
        #expect(pid != daemon.pid)
        #expect(upgraded.stdout.contains("upgraded: pid \(daemon.pid) handed over to directd \(directdVersion) (b), pid \(pid)"),
                "\(upgraded.stdout)")
        #expect(roundTrip(session, "after"), "the open session moved")
        // The new process serves both endpoints once the old one let go of them.
        #expect(daemon.waitForLog("serving metrics on 127.0.0.1:\(metricsPort)"), "\(daemon.logText)")
        let status = try runDirectd(["status", "--control-socket", control], executable: copy.path)
        #expect(status.status == 0 && status.stdout.contains("pid \(pid)"), "\(status.stdout) \(status.stderr)")
        let scrape = try TCPClient(host: "127.0.0.1", port: metricsPort)
        #expect(scrape.send(Array("GET /metrics HTTP/1.0\r\n\r\n".utf8)))
        #expect(String(decoding: scrape.receiveAll() ?? [], as: UTF8.self).contains("directd_build_info"))

        // A second upgrade to a binary that is gone: 75, the reason, the same process.
        try FileManager.default.removeItem(atPath: copy.path)
        let failed = try runDirectd(["upgrade", "--control-socket", control, "--timeout", "30"])
        #expect(failed.status == 75, "\(failed.stdout) \(failed.stderr)")
        #expect(failed.stderr.contains("upgrade rolled back: cannot start") && failed.stderr.contains("pid \(pid) serves on as before"),
                "\(failed.stderr)")
        #expect(processIsAlive(pid))
        #expect(roundTrip(session, "still"))
        session.finishSending()
        #expect(session.receiveAll() == [])
        kill(pid, SIGTERM)
        #expect(eventually(within: 15) { !processIsAlive(pid) })
    }

    @Test func aTimeoutOutOfRangeIsAUsageError() throws {
        for value in ["0", "601"] {
            let result = try runDirectd(["upgrade", "--control-socket", "/nonexistent-directd/control.sock", "--timeout", value])
            #expect(result.status == 64, "--timeout \(value): \(result.stderr)")
            #expect(result.stderr.contains("--timeout must be 1 to 600 seconds, not \(value)"), "\(result.stderr)")
        }
    }

    @Test func nothingRunningIsExit69() throws {
        let result = try runDirectd(["upgrade", "--control-socket", "/nonexistent-directd/control.sock"])
        #expect(result.status == 69, "\(result.stderr)")
        #expect(result.stderr.contains("no directd answers at /nonexistent-directd/control.sock"), "\(result.stderr)")
    }
}
