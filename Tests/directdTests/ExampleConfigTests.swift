import Foundation
import Testing
@testable import directd

/// The example config that `make install` and the package ship: every option at
/// its default, but for `bind-interface`, which is loopback so that a fresh
/// install listens nowhere reachable until the operator says where.
struct ExampleConfigTests {
    static let path = SystemdUnitTests.packaging.appendingPathComponent("directd.json").path

    @Test func everyOptionIsThereAtItsDefaultButTheBindValue() throws {
        var settings = Settings()
        let keys = try ConfigFile.load(Self.path, into: &settings)
        for option in OptionTable.all where option.name != "direct-server" {
            #expect(keys.contains(option.name), "the example config omits \(option.name)")
            if option.name == "bind-interface" {
                #expect(option.show(settings) == "127.0.0.1")
            } else {
                #expect(option.show(settings) == option.defaultText,
                        "\(option.name): \(option.show(settings)) in the example, \(option.defaultText) by default")
            }
        }
    }
}
