import XCTest
final class ConfigTestsPlaceholder: XCTestCase { func testNothing() {} }
