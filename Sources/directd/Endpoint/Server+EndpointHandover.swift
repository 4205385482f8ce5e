extension Server {
    /// The metrics and control endpoints the settings name, each as its option
    /// and a way to open it.
    private func endpointOpeners(_ settings: Settings) -> [(name: String, open: () throws(EndpointError) -> Void)] {
        var openers: [(name: String, open: () throws(EndpointError) -> Void)] = []
        if let endpoint = settings.metricsListen {
            openers.append(("metrics-listen", { [unowned self] () throws(EndpointError) in try self.serveMetrics(at: endpoint) }))
        }
        if let path = settings.controlSocket.path(environment: ServiceEnvironment.current(["RUNTIME_DIRECTORY"])) {
            openers.append(("control-socket", { [unowned self] () throws(EndpointError) in try self.serveControl(at: path) }))
        }
        return openers
    }

    /// Opens the metrics and control endpoints the settings name.
    func serveEndpoints(_ settings: Settings) throws(EndpointError) {
        for endpoint in endpointOpeners(settings) { try endpoint.open() }
    }

    /// The same in the new process of an upgrade: the old one holds the
    /// endpoints until it hears this one serves, then lets go of them, so an
    /// address still in use is tried again every 20 ms, for up to 5 s. Relaying
    /// never waits for this; an endpoint that stays taken is an error in the log.
    func serveEndpointsOnceReleased(_ settings: Settings) {
        var pending = endpointOpeners(settings)
        var tries = 0
        func attempt() -> Bool {
            tries += 1
            pending = pending.filter { endpoint in
                do throws(EndpointError) {
                    try endpoint.open()
                    return false
                } catch {
                    if error.code == .addressInUse, tries < 250 { return true }
                    Log.error("\(endpoint.name): \(error); not served after the upgrade")
                    return false
                }
            }
            return pending.isEmpty
        }
        guard !attempt() else { return }
        var timer: LoopTimer?
        timer = try? LoopTimer(loop: loop, everyMilliseconds: 20) {
            if attempt() { timer?.close(); timer = nil }
        }
        if timer == nil { Log.error("cannot start a timer to open the metrics and control endpoints") }
    }

    /// Closes the metrics and control endpoints (and their connections).
    func closeEndpoints() {
        endpoints.forEach { $0.close() }
        endpoints.removeAll()
    }
}
