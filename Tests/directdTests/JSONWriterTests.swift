import Foundation
import Testing
@testable import directd

struct JSONWriterTests {
    /// Quotes, backslashes, controls, C1, line separators and bidi controls:
    /// valid JSON that decodes back to the same string.
    @Test func anyStringRoundTripsThroughAJSONParser() throws {
        let nasty = "a\"b\\c\nd\u{1b}[31m\u{85}\u{2028}\u{202e}é\u{0}"
        var object = JSONWriter()
        object.field("name", string: nasty)
        let text = object.text
        #expect(!text.unicodeScalars.contains(where: LogEscaping.needsEscaping))
        let decoded = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: String])
        #expect(decoded["name"] == nasty)
    }
}
