import XCTest
final class PluginHostTestsPlaceholder: XCTestCase { func testNothing() {} }
