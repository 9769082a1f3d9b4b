// libFuzzer entry point for the PolicyGateTOML parser; built and run by run-toml-fuzzer.sh,
// never by SwiftPM (no target names this directory).
//
// Beyond "does not crash" under AddressSanitizer, each input checks properties that must hold
// for any bytes:
// - parsing the bytes and parsing the same text as a `String` agree (same table or same error);
// - an error always has a position inside the document (line 1...lines+1, column >= 1);
// - a parsed document can be written as tagged JSON.

/// Called by libFuzzer with each input.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = UnsafeBufferPointer(start: data, count: size)
    let fromBytes: Result<TOMLTable, TOMLError> = Result { () throws(TOMLError) in try TOMLTable(parsingUTF8: bytes) }
    switch fromBytes {
    case .success(let table):
        _ = table.taggedJSON
        let text = String(decoding: bytes, as: UTF8.self)
        guard let again = try? TOMLTable(parsing: text), again == table || containsNaN(table) else {
            fatalError("parsing the same text as a String gave a different result")
        }
    case .failure(let error):
        guard let position = error.position else { fatalError("error without a position: \(error)") }
        var lines = 1
        for byte in bytes where byte == 0x0A { lines += 1 }
        precondition(position.line >= 1 && position.line <= lines, "line out of range: \(error)")
        precondition(position.column >= 1, "column out of range: \(error)")
        if error.code != .invalidUTF8 {
            let text = String(decoding: bytes, as: UTF8.self)
            do {
                _ = try TOMLTable(parsing: text)
                fatalError("the bytes failed (\(error)) but the String parsed")
            } catch {
                // Both failed: consistent.
            }
        }
    }
    return 0
}

/// Whether a NaN sits anywhere in the table (NaN != NaN, so such tables never compare equal).
func containsNaN(_ table: TOMLTable) -> Bool {
    table.keys.contains { key in table[key].map(containsNaN) ?? false }
}

func containsNaN(_ value: TOMLValue) -> Bool {
    switch value {
    case .float(let float): float.isNaN
    case .array(let elements): elements.contains(where: containsNaN)
    case .table(let table): containsNaN(table)
    default: false
    }
}
