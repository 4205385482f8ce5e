import Foundation
import Testing
@testable import directd

/// The hand-written man page stays true to the option table.
struct ManPageTests {
    static let page: String = {
        let path = #filePath.replacingOccurrences(of: "Tests/directdTests/ManPageTests.swift", with: "Documentation/directd.8")
        // roff escapes "-" as "\-"; compare in plain text.
        return ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").replacingOccurrences(of: "\\-", with: "-")
    }()

    @Test func everyOptionIsInTheManPage() {
        #expect(!Self.page.isEmpty)
        for option in OptionTable.all {
            if let flag = option.flag {
                #expect(Self.page.contains(".BI --\(flag) \"") , "--\(flag) is not described in directd(8)")
            }
            if let key = option.key, option.flag != nil {
                #expect(Self.page.contains(".RB ( \(key) )"), "config key \(key) is not named in directd(8)")
            }
            if !option.defaultText.isEmpty, option.flag != nil {
                let forms = ["Default \(option.defaultText).", "\(option.defaultText) is off (the default)", ".B \(option.defaultText)\n(the default)"]
                #expect(forms.contains(where: Self.page.contains),
                        "the default of \(option.name) (\(option.defaultText)) is not in directd(8)")
            }
        }
    }

    @Test func theExitCodesAndSignalsAreInTheManPage() {
        for code in [0, 64, 69, 70, 77, 78] {
            #expect(Self.page.contains(".B \(code)\n"), "exit code \(code)")
        }
        for signal in ["SIGINT", "SIGTERM", "SIGUSR1"] {
            #expect(Self.page.contains(signal))
        }
    }

    static let hasMan = FileManager.default.isExecutableFile(atPath: "/usr/bin/man")

    @Test(.enabled(if: hasMan, "needs man(1)"))
    func manRendersItWithoutWarnings() throws {
        let path = #filePath.replacingOccurrences(of: "Tests/directdTests/ManPageTests.swift", with: "Documentation/directd.8")
        let result = try runDirectd(["--warnings", "-l", path], executable: "/usr/bin/man")
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.isEmpty, "\(result.stderr)")
        #expect(result.stdout.contains("EXIT STATUS"))
    }
}
