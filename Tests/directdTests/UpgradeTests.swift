import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Synchronization
import Testing
import UVBind
@testable import directd

/// In-place upgrades (issue 19): SIGUSR2 starts the binary installed at
/// directd's path, which takes over the listening sockets and every session
/// (with what directd had queued, in a pipe or in libuv, a FIN still to pass
/// on, a connect still under way, a connection libuv held for a listener);
/// every failure rolls back and leaves the old process serving as before,
/// its sessions intact.
///
/// Each test runs its own copy of the debug directd (`InstalledCopy`), so that
/// it can replace, remove or break the file as a package upgrade would.
@Suite(.serialized)
struct UpgradeTests {
    /// Several upgrades in a row, alternating two builds that report different
    /// versions (the test hook's version file), one of them after the binary
    /// was replaced by a rename as dpkg does: every upgrade changes the PID,
    /// the new process reports the new version and serves, a client
    /// connecting in a loop all along is never refused, and a connection open
    /// before the first upgrade moves with every upgrade and is served to its end.
    @Test func upgradesInARowRefuseNoConnection() throws {
        let copy = try InstalledCopy()
        let pidFile = copy.directory.appendingPathComponent("directd.pid").path
        let daemon = try UpgradingDaemon(["--bind-interface", "127.0.0.1", "--port", "0", "--grace", "60",
                                          "--pid-file", pidFile], copy: copy)
        #expect(readPID(pidFile) == daemon.pid)
        let port = daemon.port
        let early = try TCPClient(host: "127.0.0.1", port: port)
        #expect(roundTrip(early, "before"))

        let connects = EchoConnectLoop(port: port)
        connects.start()
        defer { connects.stop() }
        #expect(eventually(within: 10) { connects.succeeded > 20 })

        var pids = [daemon.pid]
        let rounds = 4
        for round in 1...rounds {
            let version = round % 2 == 1 ? "b" : "a"
            try copy.setVersion(version)
            if round == 2 { try copy.replaceByRename() }
            let before = connects.succeeded
            kill(pids.last!, SIGUSR2)
            let done = eventually(within: 20) { daemon.upgradedPIDs.count == round }
            try #require(done, "upgrade \(round) did not finish: \(daemon.logText)")
            let pid = daemon.upgradedPIDs.last!
            #expect(!pids.contains(pid), "upgrade \(round): the PID did not change")
            #expect(processIsAlive(pid))
            #expect(daemon.logText.contains("upgraded: pid \(pid) (directd \(directdVersion) (\(version))) serves now"))
            // The pid-file names the new process before the old one hears it serves.
            #expect(readPID(pidFile) == pid)
            pids.append(pid)
            // The new process serves: new connections keep succeeding.
            #expect(eventually(within: 10) { connects.succeeded > before + 20 })
            #expect(try roundTrip(TCPClient(host: "127.0.0.1", port: port), "after \(round)"))
        }
        connects.stop()
        #expect(connects.failed == 0, "refused or cut: \(connects.failed) of \(connects.succeeded + connects.failed); \(connects.lastError)")
        #expect(connects.succeeded > rounds * 20)

        // The connection open before the first upgrade moved with each one:
        // it still echoes, and the first process has exited (0) meanwhile.
        #expect(daemon.spawned.waitForExit() == 0, "the first process did not exit: it kept its connection")
        #expect(roundTrip(early, "still here"))
        early.finishSending()
        #expect(early.receiveAll() == [])
        // Every process but the last has exited; the last stops as usual.
        for pid in pids.dropFirst().dropLast() {
            #expect(eventually(within: 15) { !processIsAlive(pid) }, "pid \(pid) did not exit after handing over")
        }
        #expect(readPID(pidFile) == pids.last, "an old process that exited removed or rewrote the pid-file")
        kill(pids.last!, SIGTERM)
        #expect(eventually(within: 15) { !processIsAlive(pids.last!) })
        #expect(!FileManager.default.fileExists(atPath: pidFile), "the last process did not remove its pid-file")
        #expect(!daemon.logText.contains("rolled back"))
    }

    /// Relayed sessions move into the new process, in each relay mode:
    /// several streaming both ways through an echo upstream, and some
    /// half-closed (the client has finished sending; the upstream streams on),
    /// across three upgrades in a row. Every byte arrives, in order, none
    /// twice; no session is cut; each old process exits at once, so it held no
    /// session.
    @Test(arguments: ["copy", "splice", "auto"])
    func sessionsMoveByteExact(relayMode: String) throws {
        let upstream = try streamingUpstream()
        let copy = try InstalledCopy()
        let daemon = try UpgradingDaemon(["--bind-interface", "127.0.0.1", "--port", "0", "--grace", "60",
                                          "--forward", "127.0.0.1:\(upstream.port)", "--relay-mode", relayMode], copy: copy)
        let streaming = 6, halfClosed = 2
        let streams = try Streams(port: daemon.port, streaming: streaming, halfClosed: halfClosed)
        usleep(300_000)
        let pid = try daemon.upgradeInARow(3) { _ in usleep(300_000) }
        streams.expectExact()
        let moved = daemon.logText.split(separator: "\n").filter { $0.contains("upgrade: handing over 1 listeners and \(streaming + halfClosed) sessions") }
        #expect(moved.count >= 1, "\(daemon.logText.split(separator: "\n").filter { $0.contains("handing over") })")
        stopGracefully(pid)
    }

    /// Sessions streaming through a splicing relay while the new process is
    /// killed in the middle of the handover (it holds their sockets then):
    /// the old process lets them read again where they stopped, and every
    /// transfer completes byte-exact in it.
    @Test func aRollbackLeavesStreamingSessionsIntact() throws {
        let upstream = try streamingUpstream()
        let copy = try InstalledCopy()
        let daemon = try UpgradingDaemon(["--bind-interface", "127.0.0.1", "--port", "0", "--forward",
                                          "127.0.0.1:\(upstream.port)", "--relay-mode", "splice"],
                                         copy: copy, environment: ["DIRECTD_TEST_UPGRADE_STALL": "1"])
        let streams = try Streams(port: daemon.port, streaming: 4, halfClosed: 2)
        usleep(300_000)
        kill(daemon.pid, SIGUSR2)
        try #require(daemon.waitForLog("holds the handover until it is killed"), "\(daemon.logText)")
        #expect(daemon.logText.contains("upgrade: handing over 1 listeners and 6 sessions"), "\(daemon.logText)")
        usleep(300_000)   // the sessions wait, held, with bytes arriving
        kill(try #require(daemon.startedPIDs.last), SIGKILL)
        #expect(daemon.waitForLog("upgrade rolled back: the new process was killed by signal 9"), "\(daemon.logText)")
        streams.expectExact()
        #expect(daemon.spawned.isRunning)
        #expect(daemon.stop() == 0)
    }

    /// A session whose upstream resets while the upgrade holds it (it reads
    /// nothing then, so it does not notice): the new process does not refuse
    /// the upgrade for it; it passes the reset on to the client, and every
    /// other session moves.
    @Test func aSessionResetWhileHeldIsResetAndTheOthersMove() throws {
        let resetNow = Observed(false)
        let upstream = try TestServer { fd in
            var first: UInt8 = 0
            guard recv(fd, &first, 1, 0) == 1 else { return }
            if first == UInt8(ascii: "R") {
                _ = eventually(within: 20) { resetNow.get() }
                Behaviour.reset(fd)   // the close after this sends a reset
            } else {
                Behaviour.echo(fd)
            }
        }
        defer { upstream.stop() }
        let copy = try InstalledCopy()
        let pause = copy.directory.appendingPathComponent("pause").path
        let daemon = try UpgradingDaemon(["--bind-interface", "127.0.0.1", "--port", "0", "--forward",
                                          "127.0.0.1:\(upstream.port)", "--relay-mode", "copy", "--grace", "30"],
                                         copy: copy, environment: ["DIRECTD_TEST_UPGRADE_PAUSE_FILE": pause])
        let doomed = try TCPClient(host: "127.0.0.1", port: daemon.port)
        #expect(doomed.send(Array("R".utf8)))
        let kept = try TCPClient(host: "127.0.0.1", port: daemon.port)
        #expect(kept.send(Array("E".utf8)) && roundTrip(kept, "before"))
        #expect(FileManager.default.createFile(atPath: pause, contents: Data()))
        kill(daemon.pid, SIGUSR2)
        try #require(daemon.waitForLog("pauses the handover while"), "\(daemon.logText)")
        resetNow.update { $0 = true }
        usleep(200_000)   // the reset reaches directd's upstream socket, held
        unlink(pause)
        #expect(daemon.waitForLog("upgrade done: upgraded: pid"), "\(daemon.logText)")
        #expect(daemon.logText.contains("#1 ended during the upgrade: its upstream had reset; the other side is reset too"),
                "\(daemon.logText)")
        var byte: UInt8 = 0
        let got = recv(doomed.fd, &byte, 1, 0)
        #expect(got < 0 && errno == ECONNRESET, "the client sees the reset: recv \(got), errno \(errno)")
        #expect(roundTrip(kept, "after"), "the other session moved")
        kept.finishSending()
        #expect(kept.receiveAll() == [])
        let pid = try #require(daemon.upgradedPIDs.last)
        stopGracefully(pid)
    }

    /// A copying session whose client does not read moves with the bytes
    /// directd had queued for it in user space (libuv's write queue, up to
    /// write-queue-limit): they go over in the record, the new process
    /// writes them first, and the client receives every byte in order; the
    /// old process exits at once, so it kept nothing.
    @Test func aSessionWithQueuedBytesMovesWithThem() throws {
        let (upstream, copy, daemon, client) = try upgradeWithAFloodedClient(relayMode: "copy")
        defer { withExtendedLifetime((upstream, copy)) {} }
        let line = daemon.logText.split(separator: "\n").first { $0.contains("upgrade: handing over") }.map(String.init) ?? ""
        #expect(line.contains("upgrade: handing over 1 listeners and 1 sessions ("), "\(line)")
        #expect(line.contains(" bytes queued"), "nothing was queued: the test proves nothing: \(line)")
        #expect(daemon.spawned.waitForExit(timeout: 5) == 0, "the old process kept the session")
        #expect(receiveHashed(client, count: floodBytes) == "exact")
        client.finishSending()
        stopGracefully(daemon.upgradedPIDs[0])
    }

    /// A copying session half-closed by its upstream while its client does
    /// not read: with a write queue large enough for the whole flood,
    /// directd has read all of it and the upstream's FIN, and its shutdown of
    /// the client waits behind the queued bytes. Those bytes and the FIN go
    /// over; the client receives every byte in order, then the end.
    @Test func aHalfClosingSessionMovesWithItsQueueAndItsFIN() throws {
        let (upstream, copy, daemon, client) = try upgradeWithAFloodedClient(
            relayMode: "copy", options: ["--write-queue-limit", "16MiB"])
        defer { withExtendedLifetime((upstream, copy)) {} }
        #expect(daemon.logText.contains(" bytes queued, a FIN to pass on after them)"), "\(daemon.logText)")
        #expect(daemon.spawned.waitForExit(timeout: 5) == 0, "the old process kept the session")
        #expect(receiveHashed(client, count: floodBytes) == "exact")
        client.finishSending()
        stopGracefully(daemon.upgradedPIDs[0])
    }

    /// A session whose upstream has not answered yet (its accept queue is
    /// full, so the SYN is dropped and sent again a second later) moves while
    /// still connecting: the new process watches the connect finish, sends
    /// the PROXY header the old process owed, then relays what the client
    /// sent meanwhile. The old process exits at once.
    @Test func aSessionStillConnectingMovesAndConnectsInTheNewProcess() throws {
        let upstream = try TestServer(accepting: false, backlog: 0)
        defer { upstream.stop() }
        // Fills the accept queue (backlog 0 holds one): directd's SYN is dropped.
        let filler = try TCPClient(host: "127.0.0.1", port: upstream.port)
        let copy = try InstalledCopy()
        let daemon = try UpgradingDaemon(["--bind-interface", "127.0.0.1", "--port", "0", "--grace", "30",
                                          "--forward", "127.0.0.1:\(upstream.port)", "--proxy-protocol", "v1",
                                          "--connect-timeout", "30"], copy: copy)
        let client = try TCPClient(host: "127.0.0.1", port: daemon.port)
        #expect(client.send(Array("hello".utf8)))
        #expect(daemon.waitForLog("#1 opened from"))
        kill(daemon.pid, SIGUSR2)
        try #require(eventually(within: 20) { daemon.upgradedPIDs.count == 1 }, "\(daemon.logText)")
        #expect(daemon.logText.contains("upgrade: handing over 1 listeners and 1 sessions (1 connecting)"), "\(daemon.logText)")
        #expect(daemon.logText.contains(", still connecting)"), "\(daemon.logText)")
        #expect(daemon.spawned.waitForExit(timeout: 5) == 0, "the old process kept the session")
        // Room in the queue: the SYN's next try connects, to the new process.
        var timeout = timeval(tv_sec: 20, tv_usec: 0)
        setsockopt(upstream.fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        close(accept(upstream.fd, nil, nil))   // the filler's
        filler.finishSending()
        let relayed = accept(upstream.fd, nil, nil)
        try #require(relayed >= 0, "directd's connect never arrived: \(String(cString: strerror(errno)))")
        defer { close(relayed) }
        setsockopt(relayed, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var received: [UInt8] = []
        var byte: UInt8 = 0
        while !received.suffix(5).elementsEqual("hello".utf8), received.count < 200, recv(relayed, &byte, 1, 0) == 1 { received.append(byte) }
        let text = String(decoding: received, as: UTF8.self)
        #expect(text.hasPrefix("PROXY TCP4 127.0.0.1 127.0.0.1 ") && text.hasSuffix("\r\nhello"), "\(text)")
        #expect(send(relayed, "world", 5, 0) == 5)
        #expect(client.receive(exactly: 5) == Array("world".utf8))
        shutdown(relayed, Int32(SHUT_WR))
        #expect(client.receiveAll() == [])
        client.finishSending()
        stopGracefully(daemon.upgradedPIDs[0])
    }

    /// A connection libuv had accepted while directd paused accepting for
    /// want of descriptors (the limit lowered under it: libuv keeps that one
    /// connection and stops watching the listener) goes over with the
    /// listener, and the new process serves it. The limit leaves a relay
    /// one descriptor short of a session (two, and libuv's margin of four)
    /// and the upgrade the four it needs (the channel's pair, libuv's spawn
    /// pipe); the new binary is a wrapper that gives the new process its room
    /// back before it runs directd.
    @Test func aConnectionLeftWaitingForDescriptorsIsServedByTheNewProcess() throws {
        let upstream = try streamingUpstream()
        let copy = try InstalledCopy()
        let daemon = try UpgradingDaemon(["--bind-interface", "127.0.0.1", "--port", "0", "--grace", "30",
                                          "--forward", "127.0.0.1:\(upstream.port)"], copy: copy)
        let real = copy.directory.appendingPathComponent("directd-real").path
        try FileManager.default.copyItem(atPath: copy.path, toPath: real)
        let open = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(daemon.pid)/fd").count
        let limit = Process()
        limit.executableURL = URL(fileURLWithPath: "/usr/bin/prlimit")
        limit.arguments = ["--pid", String(daemon.pid), "--nofile=\(open + 5):20000"]
        try limit.run()
        limit.waitUntilExit()
        try #require(limit.terminationStatus == 0)
        let waiting = try TCPClient(host: "127.0.0.1", port: daemon.port)
        #expect(waiting.send(Array("e".utf8)))   // the upstream echoes from then on
        #expect(daemon.waitForLog("accepting paused"), "\(daemon.logText)")
        try copy.replace(with: "#!/bin/sh\nulimit -n 4096\nexec \(real) \"$@\"\n")
        kill(daemon.pid, SIGUSR2)
        try #require(eventually(within: 20) { daemon.upgradedPIDs.count == 1 }, "\(daemon.logText)")
        #expect(daemon.logText.contains("(1 connections not yet accepted)"), "\(daemon.logText)")
        #expect(daemon.logText.contains("serving a connection the old process had left waiting on 127.0.0.1:"), "\(daemon.logText)")
        #expect(roundTrip(waiting, "served"), "the waiting connection was not served")
        waiting.finishSending()
        #expect(waiting.receiveAll() == [])
        #expect(daemon.spawned.waitForExit(timeout: 5) == 0)
        stopGracefully(daemon.upgradedPIDs[0])
    }

    /// Many sessions at once: 200 relayed idle sessions (400 sockets, more
    /// than one message's 253 descriptors, so the batches are used) and a few
    /// streaming ones, across four upgrades in a row in auto mode. Every idle
    /// session still answers, in order, after each upgrade; every stream is
    /// exact.
    @Test func manySessionsMoveInBatches() throws {
        let upstream = try streamingUpstream()
        let copy = try InstalledCopy()
        let daemon = try UpgradingDaemon(["--bind-interface", "127.0.0.1", "--port", "0", "--grace", "60",
                                          "--forward", "127.0.0.1:\(upstream.port)"], copy: copy)
        var idle: [TCPClient] = []
        for _ in 0..<200 {
            let client = try TCPClient(host: "127.0.0.1", port: daemon.port)
            #expect(client.send([UInt8(ascii: "e")]))
            idle.append(client)
        }
        let streams = try Streams(port: daemon.port, streaming: 3, halfClosed: 1)
        usleep(300_000)
        let pid = try daemon.upgradeInARow(4) { round in
            var answered = 0
            for (index, client) in idle.enumerated() where roundTrip(client, "\(round)-\(index)") { answered += 1 }
            #expect(answered == idle.count, "round \(round): \(answered) of \(idle.count) idle sessions answered")
        }
        #expect(daemon.logText.contains("upgrade: handing over 1 listeners and 20"), "\(daemon.logText.split(separator: "\n").filter { $0.contains("handing over") })")
        streams.expectExact()
        idle.forEach { $0.finishSending() }
        #expect(idle.allSatisfy { $0.receiveAll() == [] })
        stopGracefully(pid)
    }

    /// A splicing session whose client does not read moves with the bytes
    /// its pipe holds for the client: the pipe itself goes over, the new
    /// process writes its bytes first, and the client receives every byte in
    /// order; the old process exits at once.
    @Test func aSplicedSessionMovesWithTheBytesInItsPipe() throws {
        let (upstream, copy, daemon, client) = try upgradeWithAFloodedClient(relayMode: "splice")
        defer { withExtendedLifetime((upstream, copy)) {} }
        #expect(daemon.logText.contains("upgrade: handing over 1 listeners and 1 sessions"), "\(daemon.logText)")
        #expect(daemon.logText.contains("bytes waiting in its pipes)"), "the pipe was empty: the test proves nothing")
        #expect(daemon.spawned.waitForExit(timeout: 5) == 0, "the old process kept the session")
        #expect(receiveHashed(client, count: floodBytes) == "exact")
        client.finishSending()
        stopGracefully(daemon.upgradedPIDs[0])
    }

    /// Under a service manager: RELOADING=1 from the old process when the
    /// upgrade starts, then MAINPID=<new pid> with READY=1 from the new one,
    /// and never STOPPING=1 (the old one drains silently); a rollback ends
    /// its RELOADING=1 with READY=1.
    @Test func theServiceManagerHearsTheNewMainProcess() throws {
        let manager = try FakeFDStore()
        defer { manager.shutdown() }
        let copy = try InstalledCopy()
        let daemon = try UpgradingDaemon(["--config", copy.config], copy: copy, environment: ["NOTIFY_SOCKET": manager.name])
        #expect(manager.wait { $0.contains("READY=1") }, "\(manager.messages)")
        kill(daemon.pid, SIGUSR2)
        try #require(eventually(within: 20) { daemon.upgradedPIDs.count == 1 }, "\(daemon.logText)")
        let pid = daemon.upgradedPIDs[0]
        #expect(manager.wait { $0.contains("MAINPID=\(pid)\nREADY=1") }, "\(manager.messages)")
        #expect(daemon.spawned.waitForExit() == 0)
        let messages = manager.messages
        let reloading = messages.firstIndex { $0.hasPrefix("RELOADING=1\nMONOTONIC_USEC=") }
        let ready = messages.firstIndex(of: "MAINPID=\(pid)\nREADY=1")
        #expect(reloading != nil && ready != nil && reloading! < ready!, "\(messages)")
        #expect(!messages.contains("STOPPING=1"), "the old process told the manager it stops: \(messages)")

        // A rollback (the binary gone) frames its attempt with RELOADING=1 and READY=1.
        try FileManager.default.removeItem(atPath: copy.path)
        let before = manager.messages.count
        kill(pid, SIGUSR2)
        #expect(daemon.waitForLog("upgrade rolled back: "), "\(daemon.logText)")
        #expect(manager.wait { Array($0.dropFirst(before)).contains("READY=1") }, "\(manager.messages)")
        let after = Array(manager.messages.dropFirst(before))
        #expect(after.first?.hasPrefix("RELOADING=1") == true, "\(after)")
        stopGracefully(pid)
    }

    /// A pid-file that cannot be written ends the start, naming it (78: the
    /// path is the configuration's).
    @Test func anUnwritablePIDFileEndsTheStart() throws {
        let result = try runDirectd(["--bind-interface", "127.0.0.1", "--port", "0",
                                     "--pid-file", "/nonexistent-directd-dir/directd.pid"])
        #expect(result.status == 78)
        #expect(result.stderr.contains("pid-file /nonexistent-directd-dir/directd.pid: cannot create"), "\(result.stderr)")
    }

    @Test func aMissingBinaryRollsBack() throws {
        try expectRollback(reason: "cannot start") { copy, _ in try FileManager.default.removeItem(atPath: copy.path) }
    }

    @Test func aBinaryThatIsNotExecutableRollsBack() throws {
        try expectRollback(reason: "permission denied") { copy, _ in chmod(copy.path, 0o644) }
    }

    @Test func aBinaryThatExitsAtStartRollsBack() throws {
        try expectRollback(reason: "the new process exited with status 3 before it took over") { copy, _ in
            try copy.replace(with: "#!/bin/sh\nexit 3\n")
        }
    }

    @Test func anInvalidConfigRollsBackAndSaysWhy() throws {
        try expectRollback(reason: "the new process refused: the config is invalid: ") { copy, _ in
            try Data("{\"options\": {\"bind-interface\": ".utf8).write(to: URL(fileURLWithPath: copy.config))
        }
    }

    @Test func aHandoverFormatMismatchRollsBack() throws {
        try expectRollback(reason: "version mismatch: the new process (directd \(directdVersion) (a)) speaks handover format 99, this one \(HandoverRecord.formatVersion)",
                           environment: ["DIRECTD_TEST_HANDOVER_FORMAT": "99"]) { _, _ in }
    }

    /// The new process is killed in the middle of the handover (the test hook
    /// holds it once it has the descriptors); a second SIGUSR2 meanwhile is
    /// read once the old process's loop runs again (it waits on the handover
    /// until then), while the attempt is still rolling back: ignored. The old
    /// process serves on, and upgrades later.
    @Test func aNewProcessKilledMidHandoverRollsBack() throws {
        let copy = try InstalledCopy()
        let pidFile = copy.directory.appendingPathComponent("directd.pid").path
        let daemon = try UpgradingDaemon(["--config", copy.config, "--pid-file", pidFile], copy: copy,
                                         environment: ["DIRECTD_TEST_UPGRADE_STALL": "1"])
        let session = try TCPClient(host: "127.0.0.1", port: daemon.port)
        #expect(roundTrip(session, "before"))
        kill(daemon.pid, SIGUSR2)
        try #require(daemon.waitForLog("holds the handover until it is killed"), "\(daemon.logText)")
        kill(daemon.pid, SIGUSR2)
        usleep(100_000)   // it waits in the signal pipe, behind the loop's wait
        let child = try #require(daemon.startedPIDs.last)
        kill(child, SIGKILL)
        #expect(daemon.waitForLog("upgrade rolled back: the new process was killed by signal 9 before it took over"), "\(daemon.logText)")
        #expect(daemon.logText.contains("an upgrade is in progress already; ignored"), "\(daemon.logText)")
        #expect(daemon.spawned.isRunning)
        #expect(readPID(pidFile) == daemon.pid)
        #expect(roundTrip(session, "after"))
        #expect(try roundTrip(TCPClient(host: "127.0.0.1", port: daemon.port), "new"))
        #expect(eventually(within: 10) { !processIsAlive(child) })
        // No upgrade is in flight any more: the next SIGUSR2 starts one (the
        // hook holds that one too, and it is killed as well).
        kill(daemon.pid, SIGUSR2)
        #expect(eventually(within: 10) { daemon.startedPIDs.count == 2 })
        if let second = daemon.startedPIDs.last, second != child {
            #expect(eventually(within: 10) { daemon.logText.components(separatedBy: "holds the handover").count == 3 })
            kill(second, SIGKILL)
            #expect(eventually(within: 10) { daemon.logText.components(separatedBy: "upgrade rolled back").count == 3 })
        }
        session.finishSending()
        #expect(session.receiveAll() == [])
        #expect(daemon.stop() == 0)
    }

    /// A relayed session whose client does not read while the upstream floods
    /// it (directd's queue, or its pipe, and the client's buffers fill), then
    /// one upgrade, done.
    private func upgradeWithAFloodedClient(relayMode: String, options: [String] = []) throws
        -> (TestServer, InstalledCopy, UpgradingDaemon, TCPClient) {
        let upstream = try streamingUpstream()
        let copy = try InstalledCopy()
        let daemon = try UpgradingDaemon(["--bind-interface", "127.0.0.1", "--port", "0", "--grace", "60",
                                          "--forward", "127.0.0.1:\(upstream.port)", "--relay-mode", relayMode] + options,
                                         copy: copy)
        let client = try TCPClient(host: "127.0.0.1", port: daemon.port)
        guard client.send([UInt8(ascii: "f")]) else { throw TestFailure("send") }
        usleep(500_000)
        kill(daemon.pid, SIGUSR2)
        guard eventually(within: 20, { daemon.upgradedPIDs.count == 1 }) else {
            throw TestFailure("the upgrade did not finish: \(daemon.logText)")
        }
        return (upstream, copy, daemon, client)
    }

    /// A new process that never answers (the hook holds it) is killed at the
    /// handover's deadline, and the old process serves on with its session.
    @Test func aNewProcessThatNeverAnswersIsKilledAtTheDeadline() throws {
        let copy = try InstalledCopy()
        let daemon = try UpgradingDaemon(["--config", copy.config], copy: copy, environment: ["DIRECTD_TEST_UPGRADE_STALL": "1"])
        let session = try TCPClient(host: "127.0.0.1", port: daemon.port)
        #expect(roundTrip(session, "before"))
        kill(daemon.pid, SIGUSR2)
        try #require(daemon.waitForLog("holds the handover until it is killed"), "\(daemon.logText)")
        let child = try #require(daemon.startedPIDs.last)
        // The deadline is 10 s; 20 s bound this wait, never a measure of it.
        #expect(daemon.waitForLog("upgrade rolled back: no answer from the new process within 10 s", timeout: 20), "\(daemon.logText)")
        #expect(eventually(within: 10) { !processIsAlive(child) }, "the new process was not killed")
        #expect(roundTrip(session, "after"))
        session.finishSending()
        #expect(session.receiveAll() == [])
        #expect(daemon.stop() == 0)
    }

    /// Two listeners, IPv4 and IPv6 (IPv6 only), and a session on each: the
    /// same sockets go over, the IPv6 one still IPv6 only, and both sessions
    /// move.
    @Test(.enabled(if: hostHasIPv6Loopback)) func bothFamiliesMove() throws {
        let copy = try InstalledCopy()
        let daemon = try UpgradingDaemon(["--bind-interface", "127.0.0.1,::1", "--port", "0"], copy: copy)
        let port = daemon.port
        let v4 = try TCPClient(host: "127.0.0.1", port: port), v6 = try TCPClient(host: "::1", port: port)
        #expect(roundTrip(v4, "four") && roundTrip(v6, "six"))
        let pid = try daemon.upgradeInARow(1) { _ in }
        #expect(daemon.logText.contains("upgrade: handing over 2 listeners and 2 sessions"), "\(daemon.logText)")
        #expect(roundTrip(v4, "four again") && roundTrip(v6, "six again"))
        #expect(try roundTrip(TCPClient(host: "127.0.0.1", port: port), "new four"))
        #expect(try roundTrip(TCPClient(host: "::1", port: port), "new six"))
        #expect(daemon.logText.contains("taking over tcp-[__1]-\(port) from the old process"), "\(daemon.logText)")
        v4.finishSending()
        v6.finishSending()
        #expect(v4.receiveAll() == [] && v6.receiveAll() == [])
        stopGracefully(pid)
    }

    /// Breaks the upgrade with `breakIt`, sends SIGUSR2, and expects the
    /// rollback to name `reason`, the old process to serve on (its open
    /// connection and new ones), and to stop cleanly.
    private func expectRollback(reason: String, environment: [String: String] = [:],
                                _ breakIt: (InstalledCopy, UpgradingDaemon) throws -> Void) throws {
        let copy = try InstalledCopy()
        let daemon = try UpgradingDaemon(["--config", copy.config], copy: copy, environment: environment)
        let session = try TCPClient(host: "127.0.0.1", port: daemon.port)
        #expect(roundTrip(session, "before"))
        try breakIt(copy, daemon)
        kill(daemon.pid, SIGUSR2)
        #expect(daemon.waitForLog("upgrade rolled back: ", timeout: 20), "\(daemon.logText)")
        let line = daemon.logText.split(separator: "\n").first { $0.contains("upgrade rolled back: ") }.map(String.init) ?? ""
        #expect(line.contains(reason), "\(line)")
        #expect(line.contains("pid \(daemon.pid) (directd \(directdVersion) (a)) serves on"), "\(line)")
        #expect(daemon.spawned.isRunning)
        #expect(daemon.upgradedPIDs.isEmpty)
        #expect(roundTrip(session, "after"))
        #expect(try roundTrip(TCPClient(host: "127.0.0.1", port: daemon.port), "new"))
        session.finishSending()
        #expect(session.receiveAll() == [])
        #expect(daemon.stop() == 0)
    }
}

/// directd's version as `directd --version` says it (`directd 0.2.0`).
let directdVersion: String = {
    let version = (try? runDirectd(["--version"]).stdout) ?? ""
    return version.trimmingCharacters(in: .whitespacesAndNewlines).replacingOccurrences(of: "directd ", with: "")
}()

let streamingBytes = 1_500_000
let halfClosedBytes = 1_000_000
let floodBytes = 8 << 20

/// A byte of the test stream at `offset`: not periodic over a transfer's
/// length, so a lost, repeated or reordered run shows.
func hashed(_ offset: Int) -> UInt8 {
    var x = UInt64(offset) &* 0x9E37_79B9_7F4A_7C15
    x ^= x >> 29
    return UInt8(truncatingIfNeeded: x >> 24)
}

/// Sends `count` bytes of `hashed`, 16 KiB at a time with `pause` µs between.
func sendHashed(_ fd: Int32, count: Int, pause: UInt32) -> Bool {
    Behaviour.flood(fd, count: count, chunkSize: 16 << 10, pause: pause, byte: hashed)
}

/// Reads until EOF and says "exact" when exactly `count` bytes of `hashed`
/// came, in order.
func receiveHashed(_ client: TCPClient, count: Int) -> String {
    var buffer = [UInt8](repeating: 0, count: 64 << 10)
    var offset = 0
    while true {
        let got = buffer.withUnsafeMutableBytes { recv(client.fd, $0.baseAddress, $0.count, 0) }
        if got == 0 { break }
        if got < 0 {
            if errno == EINTR { continue }
            return "cut after \(offset) bytes: \(String(cString: strerror(errno)))"
        }
        for index in 0..<got {
            guard buffer[index] == hashed(offset + index) else { return "wrong byte at \(offset + index)" }
        }
        offset += got
    }
    return offset == count ? "exact" : "\(offset) bytes of \(count)"
}

/// An upstream for `Streams`: the first byte says what to do: "e" echo,
/// "h" read to EOF, then stream `halfClosedBytes` of `hashed` and close;
/// "f" flood `floodBytes` of `hashed` at once, then close.
func streamingUpstream() throws -> TestServer {
    try TestServer { fd in
        var kind: UInt8 = 0
        guard recv(fd, &kind, 1, 0) == 1 else { return }
        if kind == UInt8(ascii: "e") { return Behaviour.echo(fd) }
        if kind == UInt8(ascii: "f") {
            _ = sendHashed(fd, count: floodBytes, pause: 0)
            return
        }
        _ = Behaviour.drain(fd)
        _ = sendHashed(fd, count: halfClosedBytes, pause: 40_000)
        shutdown(fd, Int32(SHUT_WR))
    }
}

/// Relayed sessions through directd to a `streamingUpstream`: `streaming`
/// ones send and receive `streamingBytes` of `hashed` each way (16 KiB every
/// 30 ms, about 3 s), `halfClosed` ones finish sending at once and receive
/// `halfClosedBytes`. Each checks what it received.
final class Streams: Sendable {
    let count: Int
    private let results = Mutex<[String]>([])
    private let finished = Atomic<Int>(0)

    init(port: UInt16, streaming: Int, halfClosed: Int) throws {
        count = streaming + halfClosed
        for index in 0..<count {
            let client = try TCPClient(host: "127.0.0.1", port: port)
            let echo = index < streaming
            guard client.send([echo ? UInt8(ascii: "e") : UInt8(ascii: "h")]) else { throw TestFailure("send") }
            Thread { [self] in
                let outcome: String
                if echo {
                    let writer = Thread { _ = sendHashed(client.fd, count: streamingBytes, pause: 30_000); client.finishSending() }
                    writer.start()
                    outcome = receiveHashed(client, count: streamingBytes)
                } else {
                    client.finishSending()
                    outcome = receiveHashed(client, count: halfClosedBytes)
                }
                results.withLock { $0.append("#\(index): \(outcome)") }
                finished.add(1, ordering: .releasing)
            }.start()
        }
    }

    /// Expects the transfers still running now, then every one to end exact.
    func expectExact() {
        #expect(finished.load(ordering: .acquiring) < count, "the transfers ended too early; the test proves nothing")
        #expect(eventually(within: 60) { finished.load(ordering: .acquiring) == count })
        let outcomes = results.withLock { $0 }
        #expect(outcomes.count == count)
        for outcome in outcomes { #expect(outcome.hasSuffix(": exact"), "\(outcome)") }
    }
}

/// SIGTERM to a process the test did not spawn (an upgrade's new one), and
/// its exit (bounded) expected.
func stopGracefully(_ pid: Int32, sourceLocation: SourceLocation = #_sourceLocation) {
    kill(pid, SIGTERM)
    #expect(eventually(within: 15) { !processIsAlive(pid) }, "pid \(pid) did not stop", sourceLocation: sourceLocation)
}

/// The PID a pid-file names, if it names one.
func readPID(_ path: String) -> Int32? {
    (try? String(contentsOfFile: path, encoding: .utf8)).flatMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
}

/// One echo round trip on an open connection.
func roundTrip(_ client: TCPClient, _ text: String) -> Bool {
    let bytes = Array(text.utf8)
    return client.send(bytes) && client.receive(exactly: bytes.count) == bytes
}

/// The process runs (it exists and is not a zombie).
func processIsAlive(_ pid: Int32) -> Bool {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let close = stat.lastIndex(of: ")") else { return false }
    let state = stat[stat.index(close, offsetBy: 2)...].first
    return state != "Z" && state != "X"
}

/// directd started from an `InstalledCopy` with a clean signal state
/// (`Spawned`), its log (and that of every process it upgrades to) in a file.
final class UpgradingDaemon {
    let spawned: Spawned
    let logPath: String

    init(_ arguments: [String], copy: InstalledCopy, environment: [String: String] = [:]) throws {
        logPath = copy.directory.appendingPathComponent("log").path
        spawned = try Spawned(arguments, executable: copy.path, stderr: .file(logPath),
                              environment: copy.environment.merging(environment) { $1 })
        guard eventually(within: 20, { logText.contains("serving echo") || logText.contains("relaying every connection") }) else {
            throw TestFailure("directd did not start: \(logText)")
        }
    }

    var pid: Int32 { spawned.pid }
    var logText: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// The port of the first listener.
    var port: UInt16 {
        let line = logText.split(separator: "\n").map(withoutTimestamp).first { $0.hasPrefix("listening on ") }!
        return UInt16(line.split(separator: ":").last!)!
    }

    func waitForLog(_ text: String, timeout: Double = 10) -> Bool {
        eventually(within: timeout) { logText.contains(text) }
    }

    /// SIGTERM, then the exit status (nil if it did not exit in time).
    func stop() -> Int32? {
        spawned.signal(SIGTERM)
        return spawned.waitForExit()
    }

    /// The PIDs the log says serve after each upgrade, in order.
    var upgradedPIDs: [Int32] { pids(after: "upgrade done: upgraded: pid ") }

    /// `rounds` upgrades in a row, each expected to leave the old process
    /// with no session (it exits at once); `after` runs after each. Returns
    /// the PID that serves at the end.
    func upgradeInARow(_ rounds: Int, after: (Int) -> Void) throws -> Int32 {
        var pid = self.pid
        for round in 1...rounds {
            kill(pid, SIGUSR2)
            guard eventually(within: 30, { upgradedPIDs.count == round }) else {
                throw TestFailure("upgrade \(round) did not finish: \(logText.suffix(3000))")
            }
            let old = pid
            pid = upgradedPIDs.last!
            #expect(eventually(within: 10) { !processIsAlive(old) }, "pid \(old) still runs: it kept sessions")
            after(round)
        }
        return pid
    }
    /// The PIDs of the new processes the log says were started.
    var startedPIDs: [Int32] { pids(after: "upgrade: pid ", in: " started; ") }

    private func pids(after prefix: String, in marker: String = "") -> [Int32] {
        logText.split(separator: "\n").compactMap { line -> Int32? in
            guard let range = line.range(of: prefix), marker.isEmpty || line.contains(marker) else { return nil }
            return Int32(line[range.upperBound...].prefix { $0.isNumber })
        }
    }
}

/// A copy of the debug directd in a directory of its own, as an installed
/// binary that a package upgrade replaces; with a config file and the test
/// hook's version file ("a" to begin with). Removed at deinit.
final class InstalledCopy {
    let directory: URL
    let path: String
    let config: String
    let versionFile: String

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("directd-upgrade-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        path = directory.appendingPathComponent("directd").path
        config = directory.appendingPathComponent("directd.json").path
        versionFile = directory.appendingPathComponent("version").path
        try FileManager.default.copyItem(atPath: directdPath, toPath: path)
        try Data("{\"options\": {\"bind-interface\": \"127.0.0.1\", \"port\": \"0\", \"grace\": \"30\"}}".utf8)
            .write(to: URL(fileURLWithPath: config))
        try setVersion("a")
    }

    var environment: [String: String] { ["DIRECTD_TEST_VERSION_FILE": versionFile] }

    func setVersion(_ version: String) throws {
        try Data("\(version)\n".utf8).write(to: URL(fileURLWithPath: versionFile))
    }

    /// A new file at the path, renamed over the old one (as dpkg installs).
    func replaceByRename() throws {
        let staged = path + ".dpkg-new"
        try FileManager.default.copyItem(atPath: directdPath, toPath: staged)
        guard rename(staged, path) == 0 else { throw TestFailure("rename: \(errno)") }
    }

    /// Another program at the path (a script).
    func replace(with script: String) throws {
        let staged = path + ".new"
        try Data(script.utf8).write(to: URL(fileURLWithPath: staged))
        chmod(staged, 0o755)
        guard rename(staged, path) == 0 else { throw TestFailure("rename: \(errno)") }
    }

    deinit { try? FileManager.default.removeItem(at: directory) }
}

/// A client that connects in a loop (connect, one echo round trip, close),
/// counting what succeeded and what was refused or cut. Bounded in count
/// and time.
final class EchoConnectLoop: Sendable {
    let port: UInt16
    private let ok = Atomic<Int>(0)
    private let bad = Atomic<Int>(0)
    private let stopping = Atomic<Bool>(false)
    private let ended = Atomic<Bool>(false)
    private let error = Mutex<String>("")

    init(port: UInt16) { self.port = port }

    var succeeded: Int { ok.load(ordering: .relaxed) }
    var failed: Int { bad.load(ordering: .relaxed) }
    var lastError: String { error.withLock { $0 } }

    func start() {
        Thread { [self] in
            let deadline = Date().addingTimeInterval(300)
            var count = 0
            while !stopping.load(ordering: .relaxed), count < 1_000_000, Date() < deadline {
                count += 1
                do {
                    let client = try TCPClient(host: "127.0.0.1", port: port, connectTimeout: 5)
                    if roundTrip(client, "x") {
                        ok.add(1, ordering: .relaxed)
                    } else {
                        bad.add(1, ordering: .relaxed)
                        error.withLock { $0 = "round trip \(count) failed: \(String(cString: strerror(errno)))" }
                    }
                } catch {
                    bad.add(1, ordering: .relaxed)
                    self.error.withLock { $0 = "\(error)" }
                }
            }
            ended.store(true, ordering: .releasing)
        }.start()
    }

    /// Stops the loop and waits (bounded) for it to end.
    func stop() {
        stopping.store(true, ordering: .relaxed)
        _ = eventually(within: 15) { ended.load(ordering: .acquiring) }
    }
}

/// The new process's checks, in process: the state record read back as
/// written, and refused (fail closed, with the reason) when anything in it or
/// in the descriptors sent with it is not what it says.
struct HandoverCheckTests {
    static let name = StoredListenerName(parsing: "tcp-127.0.0.1-21118")!

    static func session(client: Int, upstream: Int?, local: String, peer: String) -> HandoverRecord.SessionEntry {
        .init(id: 7, age: 1000, idle: 10, writeQueueLimit: 65536, client: client, clientLocal: local, clientPeer: peer,
              upstream: upstream, upstreamLocal: upstream == nil ? "" : local, upstreamPeer: upstream == nil ? "" : peer,
              directions: upstream == nil ? [.init(moved: 5, finished: false)]
                  : [.init(moved: 5, finished: true), .init(moved: 9, finished: false, pipeReadEnd: 2, pipeWriteEnd: 3, inPipe: 4)])
    }

    @Test func aRecordReadsBackAsWritten() throws {
        var queued = Self.session(client: 4, upstream: 5, local: "127.0.0.1:1", peer: "127.0.0.1:2")
        queued = .init(id: 9, age: 5, idle: 1, writeQueueLimit: 65536, client: 4, clientLocal: "127.0.0.1:1",
                       clientPeer: "127.0.0.1:2", upstream: 5, upstreamLocal: "127.0.0.1:3", upstreamPeer: "127.0.0.1:4",
                       listener: "127.0.0.1:1",
                       directions: [.init(moved: 70_000, finished: false, ending: true, unsent: Array(repeating: 7, count: 70_000)),
                                    .init(moved: 3, finished: false, unsent: [1, 2, 3])])
        let connecting = HandoverRecord.SessionEntry(
            id: 10, age: 50, idle: 50, writeQueueLimit: 65536, client: 6, clientLocal: "127.0.0.1:1", clientPeer: "127.0.0.1:5",
            upstream: 7, upstreamLocal: "127.0.0.1:6", upstreamPeer: "[2001:db8::1]:80", listener: "127.0.0.1:1",
            connecting: true, proxyProtocol: .v2, directions: [])
        let record = HandoverRecord(fromSocketUnit: false, descriptorCount: 10,
                                    listeners: [.init(descriptor: 0, name: Self.name, waiting: 1)],
                                    sessions: [Self.session(client: 8, upstream: nil, local: "127.0.0.1:1", peer: "127.0.0.1:2"),
                                               queued, connecting])
        #expect(try HandoverRecord(decoding: record.encoded()) == record)
    }

    /// More bytes queued than a direction can hold (its limit, a read and a
    /// PROXY header) are not a record directd wrote.
    @Test func queuedBytesPastTheWriteQueueLimitAreRefused() throws {
        let tooMany = HandoverRecord.SessionEntry(
            id: 11, age: 0, idle: 0, writeQueueLimit: 1024, client: 1, clientLocal: "127.0.0.1:1", clientPeer: "127.0.0.1:2",
            upstream: nil, upstreamLocal: "", upstreamPeer: "",
            directions: [.init(moved: 1, finished: false, unsent: Array(repeating: 0, count: 1024 + (64 << 10) + 105))])
        let record = HandoverRecord(fromSocketUnit: false, descriptorCount: 2,
                                    listeners: [.init(descriptor: 0, name: Self.name)], sessions: [tooMany])
        #expect(throws: HandoverRefusal.self) { try HandoverRecord(decoding: record.encoded()) }
    }

    /// Ways a record can be damaged, and what the refusal then says.
    enum Damage: CaseIterable, Sendable {
        case magic, format, cutShort, trailing, listenerIndex

        func apply(_ bytes: inout [UInt8]) {
            switch self {
            case .magic: bytes[0] = 0
            case .format: bytes[8] = 9
            case .cutShort: bytes.removeLast(3)
            case .trailing: bytes.append(0)
            case .listenerIndex: bytes[28] = 200   // the first listener's descriptor index
            }
        }

        var reason: String {
            switch self {
            case .magic: "not directd's"
            case .format: "format is version 9"
            case .cutShort: "ends early"
            case .trailing: "past its end"
            case .listenerIndex: "past the"
            }
        }
    }

    @Test(arguments: Damage.allCases)
    func aDamagedRecordIsRefused(_ damage: Damage) throws {
        let record = HandoverRecord(fromSocketUnit: false, descriptorCount: 2,
                                    listeners: [.init(descriptor: 0, name: Self.name)],
                                    sessions: [Self.session(client: 1, upstream: nil, local: "127.0.0.1:1", peer: "127.0.0.1:2")])
        var bytes = record.encoded()
        damage.apply(&bytes)
        do {
            _ = try HandoverRecord(decoding: bytes)
            Issue.record("a damaged record (\(damage)) was read")
        } catch {
            #expect(error.description.contains(damage.reason), "\(damage): \(error)")
        }
    }

    /// A session socket that is connected elsewhere than the record says, or
    /// a listener bound elsewhere than its name, refuses the handover.
    @Test func aSocketThatIsNotWhatTheStateSaysIsRefused() throws {
        let server = try TestServer { fd in _ = Behaviour.drain(fd) }
        let client = try TCPClient(host: "127.0.0.1", port: server.port)
        let bound = try #require(HandedSession.addresses(of: client.fd))
        let right = Self.session(client: 0, upstream: nil, local: bound.local, peer: bound.peer)
        #expect(throws: Never.self) { try HandedSession(right, descriptors: [client.fd]) }
        let wrong = Self.session(client: 0, upstream: nil, local: bound.local, peer: "127.0.0.1:1")
        do {
            _ = try HandedSession(wrong, descriptors: [client.fd])
            Issue.record("a socket connected elsewhere was taken")
        } catch {
            #expect(error.description.contains("the state says"), "\(error)")
        }
        // A listener on the server's port, named as if it listened on 21118.
        let record = HandoverRecord(fromSocketUnit: false, descriptorCount: 1,
                                    listeners: [.init(descriptor: 0, name: Self.name)], sessions: [])
        do {
            _ = try HandedListeners(record: record, descriptors: [server.fd])
            Issue.record("a listener elsewhere than its name was taken")
        } catch {
            #expect(error.description.contains("listener tcp-127.0.0.1-21118"), "\(error)")
        }
        // A pipe that holds another count of bytes than the state says.
        var ends: [Int32] = [-1, -1]
        try #require(pipe(&ends) == 0)
        defer { ends.forEach { close($0) } }
        #expect(write(ends[1], "abc", 3) == 3)
        let piped = HandoverRecord.SessionEntry(
            id: 8, age: 0, idle: 0, writeQueueLimit: 65536, client: 0, clientLocal: bound.local, clientPeer: bound.peer,
            upstream: 1, upstreamLocal: bound.local, upstreamPeer: bound.peer,
            directions: [.init(moved: 0, finished: false), .init(moved: 4, finished: false, pipeReadEnd: 2, pipeWriteEnd: 3, inPipe: 4)])
        do {
            _ = try HandedSession(piped, descriptors: [client.fd, client.fd, ends[0], ends[1]])
            Issue.record("a pipe holding 3 bytes passed for 4")
        } catch {
            #expect(error.description.contains("holds 3 bytes, the state says 4"), "\(error)")
        }
    }
}
