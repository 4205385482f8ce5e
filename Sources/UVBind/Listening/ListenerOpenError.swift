extension Listener {
    /// Why a listener could not open: the step and libuv's code, nothing more.
    ///
    /// It carries no bind value and no message: the caller (a `ListenerGroup`)
    /// knows the value and the interfaces, and turns it into a `BindError`.
    public struct OpenError: Error, Hashable, Sendable, CustomStringConvertible {
        public let step: BindError.Step
        public let code: UVError

        public init(_ step: BindError.Step, _ code: UVError) {
            self.step = step
            self.code = code
        }

        public var description: String { "\(step.rawValue): \(code)" }
    }
}
