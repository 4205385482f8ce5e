import CUV
#if canImport(Glibc)
import Glibc
#endif
import Testing
@testable import directd

/// What an upgrade reads of libuv's write queue (`WriteQueue.unsent`, over
/// the `cuv_stream_unsent` shim): on a real stream whose peer does not read,
/// with requests of one and of several buffers, the first written in part, it
/// is exactly the tail of what was given to `uv_write` that libuv has not
/// written, before and after the peer reads some.
struct WriteQueueTests {
    @Test func theUnsentBytesAreTheTailOfWhatWasQueued() throws {
        let loop = TestLoop()
        var ends: [Int32] = [-1, -1]
        try #require(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &ends) == 0)
        defer { close(ends[1]) }
        var small: Int32 = 16 << 10
        setsockopt(ends[0], SOL_SOCKET, SO_SNDBUF, &small, socklen_t(MemoryLayout<Int32>.size))
        let pipe = UnsafeMutablePointer<uv_pipe_t>.allocate(capacity: 1)
        try #require(uv_pipe_init(loop.loop, pipe, 0) == 0)
        try #require(uv_pipe_open(pipe, ends[0]) == 0)
        let stream = UnsafeMutableRawPointer(pipe).assumingMemoryBound(to: uv_stream_t.self)

        // Four requests: 100,000 bytes in one buffer, then 3 x 70,000 in three buffers each.
        let total = 100_000 + 3 * 210_000
        let bytes = UnsafeMutablePointer<UInt8>.allocate(capacity: total)
        defer { bytes.deallocate() }
        for index in 0..<total { bytes[index] = UInt8(truncatingIfNeeded: index &* 2_654_435_761 >> 13) }
        let requests = UnsafeMutablePointer<uv_write_t>.allocate(capacity: 4)
        defer { requests.deallocate() }
        var offset = 0
        for request in 0..<4 {
            let sizes = request == 0 ? [100_000] : [70_000, 70_000, 70_000]
            var buffers = sizes.map { size -> uv_buf_t in
                defer { offset += size }
                return uv_buf_init(UnsafeMutableRawPointer(bytes + offset).assumingMemoryBound(to: CChar.self), UInt32(size))
            }
            try #require(uv_write(requests + request, stream, &buffers, UInt32(buffers.count), nil) == 0)
        }
        func expectTail(_ when: String) {
            let queued = uv_stream_get_write_queue_size(stream)
            #expect(queued > 0 && queued < total, "\(when): \(queued) queued of \(total): the test proves nothing")
            let unsent = WriteQueue.unsent(of: stream)
            #expect(unsent?.count == queued, "\(when)")
            #expect(unsent.map { $0.elementsEqual(UnsafeBufferPointer(start: bytes + total - queued, count: queued)) } == true,
                    "\(when): the unsent bytes are not the tail of what was queued")
        }
        expectTail("at once")
        // The peer reads part of it; libuv writes on, into the middle of a request.
        var scratch = [UInt8](repeating: 0, count: 150_000)
        var read = 0
        for _ in 0..<1000 where read < 150_000 {
            let got = scratch.withUnsafeMutableBytes { recv(ends[1], $0.baseAddress, 150_000 - read, Int32(MSG_DONTWAIT)) }
            if got > 0 { read += got } else { loop.run(milliseconds: 5) }
        }
        #expect(read == 150_000)
        loop.run(milliseconds: 20)
        expectTail("after the peer read 150,000 bytes")
        uv_close(UnsafeMutableRawPointer(pipe).assumingMemoryBound(to: uv_handle_t.self), nil)
        loop.run(milliseconds: 5)
        pipe.deallocate()
        #expect(loop.close())
    }
}
