import CUV
import Testing
import UVBind
@testable import directd

/// The tick's expiries, confirmed after the loop's next poll: only what saw
/// nothing since is cut.
@Suite(.serialized)
struct ExpiryConfirmationTests {
    @Test func onlyTheSessionsThatSawNothingSinceTheTickAreCut() {
        let loop = TestLoop()
        let host = RecordingHost()
        let pool = BufferPool(memoryLimit: 1 << 20)
        let sessions = (1...3).map {
            Session(host: host, loop: loop.loop, pool: pool, writeQueueLimit: 65536, id: UInt64($0))!
        }
        var cut: [UInt64] = []
        let expiries = ExpiryConfirmation(loop: loop.loop) { session, expiry in
            cut.append(session.id)
            #expect(expiry == .idle)
            session.close(reason: "idle")
        }
        expiries.propose(sessions.map { ($0, .idle) })
        // Bytes read between the tick and the check (the poll's callbacks) for #2;
        // #3 closes for another reason meanwhile.
        uv_sleep(2)
        uv_update_time(loop.loop)
        sessions[1].touch()
        sessions[2].close(reason: "gone")
        loop.run(milliseconds: 20)
        #expect(cut == [1], "#1 saw nothing and is cut; #2 moved a byte; #3 had closed")
        #expect(!sessions[1].isClosed)
        // Nothing proposed: nothing cut on later turns.
        loop.run(milliseconds: 20)
        #expect(cut == [1])
        sessions[1].close(reason: nil)
        expiries.close()
        #expect(loop.finish() == 0, "every handle closed")
    }
}
