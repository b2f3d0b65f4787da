// Register behaviour of the device models in libdevices.so, without a VM.
import XCTest
@testable import DeviceModels

final class UARTRegisterTests: XCTestCase {
    func testPowerOnState() {
        var u = UARTRegisters()
        XCTAssertEqual(u.read(5), 0x60, "LSR: THR empty, transmitter empty")
        XCTAssertEqual(u.read(2), 0x01, "IIR: no interrupt")
        XCTAssertEqual(u.read(1), 0, "IER")
        XCTAssertEqual(u.read(6), 0xB0, "MSR: DCD, DSR, CTS")
        XCTAssertFalse(u.irqLevel)
    }

    func testTransmitReturnsByte() {
        var u = UARTRegisters()
        XCTAssertEqual(u.write(0, 0x41), 0x41)
        XCTAssertEqual(u.read(5) & 0x60, 0x60, "transmission is instant")
    }

    func testDivisorLatch() {
        var u = UARTRegisters()
        _ = u.write(3, 0x83) // DLAB, 8N1
        XCTAssertNil(u.write(0, 0x01), "DLL, not THR")
        _ = u.write(1, 0x02)
        XCTAssertEqual(u.read(0), 0x01)
        XCTAssertEqual(u.read(1), 0x02)
        _ = u.write(3, 0x03)
        XCTAssertEqual(u.read(1), 0, "IER untouched by the DLM write")
        XCTAssertEqual(u.read(3), 0x03)
    }

    func testTHREInterruptRaisedByEnableAndClearedByIIRRead() {
        var u = UARTRegisters()
        _ = u.write(1, 0x02) // ETBEI
        XCTAssertTrue(u.irqLevel)
        XCTAssertEqual(u.read(2), 0x02, "IIR: THR empty")
        XCTAssertFalse(u.irqLevel, "reading IIR clears THRE")
        XCTAssertEqual(u.read(2), 0x01)
        _ = u.write(0, 0x42)
        XCTAssertTrue(u.irqLevel, "THR empties again after the write")
        _ = u.write(1, 0x00)
        XCTAssertFalse(u.irqLevel, "masked by IER")
    }

    func testReceiveDataInterruptHasPriorityOverTHRE() {
        var u = UARTRegisters()
        _ = u.write(1, 0x03)
        u.receive([0x61, 0x62])
        XCTAssertEqual(u.read(5) & 0x01, 0x01, "data ready")
        XCTAssertEqual(u.read(2), 0x04, "received data first")
        XCTAssertEqual(u.read(0), 0x61)
        XCTAssertEqual(u.read(0), 0x62)
        XCTAssertEqual(u.read(5) & 0x01, 0, "FIFO empty")
        XCTAssertEqual(u.read(2), 0x02, "then THR empty")
    }

    func testOverrunAndLineStatusInterrupt() {
        var u = UARTRegisters()
        _ = u.write(1, 0x04) // ELSI
        u.receive([UInt8](repeating: 0x30, count: UARTRegisters.fifoCapacity + 1))
        XCTAssertEqual(u.read(2), 0x06, "line status")
        XCTAssertEqual(u.read(5) & 0x02, 0x02, "overrun")
        XCTAssertEqual(u.read(5) & 0x02, 0, "cleared by reading LSR")
    }

    func testFIFOControlAndIIRBits() {
        var u = UARTRegisters()
        _ = u.write(2, 0x07) // enable + clear FIFOs
        XCTAssertEqual(u.read(2), 0xC1, "FIFOs enabled bits 6-7")
        u.receive([1])
        _ = u.write(2, 0x03)
        XCTAssertEqual(u.read(5) & 0x01, 0, "RX FIFO cleared")
    }

    func testLoopback() {
        var u = UARTRegisters()
        _ = u.write(4, 0x10 | 0x03) // loopback, DTR, RTS
        XCTAssertNil(u.write(0, 0x55), "not transmitted in loopback")
        XCTAssertEqual(u.read(0), 0x55)
        XCTAssertEqual(u.read(6) & 0xF0, 0x30, "DSR, CTS from DTR, RTS")
    }

    func testScratch() {
        var u = UARTRegisters()
        _ = u.write(7, 0x5A)
        XCTAssertEqual(u.read(7), 0x5A)
        _ = u.write(5, 0x00)
        XCTAssertEqual(u.read(5), 0x60, "LSR is read-only")
    }
}

final class ExitAndResultsTests: XCTestCase {
    func testExitStatus() {
        XCTAssertEqual(ExitDevice.status(for: 0), 1)
        XCTAssertEqual(ExitDevice.status(for: 3), 7)
        XCTAssertEqual(ExitDevice.status(for: 0x7FFF_FFFF), -1)
    }

    func testResultLines() {
        var r = ResultLines()
        XCTAssertEqual(r.add(Array("{\"a\":".utf8)), [])
        XCTAssertEqual(r.add(Array("1}\r\n{\"b\":2}\n".utf8)), ["{\"result\":{\"a\":1}}\n", "{\"result\":{\"b\":2}}\n"])
        XCTAssertEqual(r.add(Array("not json \"q\"\n".utf8)), ["{\"result_text\":\"not json \\\"q\\\"\"}\n"])
        XCTAssertEqual(r.add([0x01, 0x0A]), ["{\"result_text\":\"\\u0001\"}\n"])
        let long = [UInt8](repeating: 0x78, count: ResultLines.maxLine)
        XCTAssertEqual(r.add(long).count, 1, "a full line is cut at the limit")
        XCTAssertTrue(r.buffer.isEmpty)
    }
}

/// The uart16550's state blob (ABI 4 state transfer), on the register file directly.
final class UARTStateTests: XCTestCase {
    func testRoundTripKeepsEveryRegisterTheFIFOAndTheFlags() throws {
        var r = UARTRegisters()
        _ = r.write(UARTRegisters.Offset.lcr, 0x80); _ = r.write(0, 0x30); _ = r.write(1, 0x02)
        _ = r.write(UARTRegisters.Offset.lcr, 0x1b); _ = r.write(UARTRegisters.Offset.ierDlm, 0x0f)
        _ = r.write(UARTRegisters.Offset.mcr, 0x0b); _ = r.write(UARTRegisters.Offset.scr, 0xa5); _ = r.write(2, 0x01)
        r.receive(Array(repeating: 0x41, count: 70))   // overrun past the 64-byte FIFO
        r.msrDelta = true
        let blob = r.encodeState(lineAsserted: true)
        XCTAssertEqual(blob.count, UARTRegisters.stateCapacity)
        let (back, asserted) = try blob.withUnsafeBytes { try UARTRegisters.decodeState($0) }
        XCTAssertEqual(back, r)
        XCTAssertTrue(asserted)
        XCTAssertEqual(back.pendingInterrupt, UARTRegisters.iirRLS)
    }

    func testHostileBlobsAreRefused() {
        let good = UARTRegisters().encodeState(lineAsserted: false)
        func refuses(_ b: [UInt8], _ field: String, line: UInt = #line) {
            XCTAssertThrowsError(try b.withUnsafeBytes { try UARTRegisters.decodeState($0) }, line: line) {
                XCTAssertTrue("\($0)".contains(field), "\($0)", line: line)
            }
        }
        var b = good; b[0] = 0; refuses(b, "version 0")
        b = good; b[3] = 0x20; refuses(b, "mcr 0x20")
        b = good; b[9] = 0x06; refuses(b, "fcr 0x6")
        b = good; b[11] = 65; refuses(b + Array(repeating: 0, count: 65), "fifo count 65")
        b = good; b[11] = 1; b[4] |= UARTRegisters.lsrDataReady; refuses(b, "13")
        refuses([], "0 bytes")
    }
}
