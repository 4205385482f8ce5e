#if canImport(Glibc)
import Glibc
#endif

extension Server {
    /// Opens a request endpoint on the loop: its connections count in the
    /// accept gate's descriptor budget, and it closes when the server finishes.
    func openEndpoint(_ place: MetricsEndpoint.Place, mode: mode_t, limits: RequestServer.Limits, overflowReply: [UInt8],
                      answer: @escaping (UnsafeRawBufferPointer) -> [UInt8]?) throws(EndpointError) -> RequestServer {
        let server = try RequestServer(loop: loop, endpoint: place, mode: mode, limits: limits,
                                       overflowReply: overflowReply, answer: answer)
        server.descriptorsChanged = { [unowned gate] delta in gate.sessionDescriptorsChanged(by: delta) }
        endpoints.append(server)
        return server
    }
}
