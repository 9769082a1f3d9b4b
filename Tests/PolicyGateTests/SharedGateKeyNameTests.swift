import PolicyGateTestKit
import Testing

@testable import PolicyGate

/// Keys' names in a shared store: a fixed-size digest whatever the key, and a readable label.
@Suite("Shared store key names (digest and label)")
struct SharedGateKeyNameTests {
    @Test("SHA-256 matches the FIPS 180-4 examples and padding boundaries")
    func sha256Vectors() {
        #expect(SHA256.hexDigest(of: "".utf8) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(SHA256.hexDigest(of: "abc".utf8) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(
            SHA256.hexDigest(of: "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)
                == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        #expect(
            SHA256.hexDigest(of: Array(repeating: UInt8(ascii: "a"), count: 1_000_000))
                == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    }

    @Test("every key's store name has 64 hex digits, long keys and NUL included; different keys differ")
    func storeNamesAreFixedSize() {
        let keys = [
            PolicyKey(provider: "openai"),
            PolicyKey(provider: "openai", scope: .user(String(repeating: "x", count: 10_000))),
            PolicyKey(provider: "openai", scope: .user("a\u{0}b")),
            PolicyKey(provider: "openai", scope: .user("a\u{FFFD}b")),
            PolicyKey(provider: "openai", scope: .custom(kind: "team", id: "1")),
        ]
        let names = keys.map(\.storeName)
        #expect(names.allSatisfy { $0.utf8.count == 64 && $0.allSatisfy(\.isHexDigit) })
        #expect(Set(names).count == keys.count)
        #expect(PolicyKey(provider: "openai").storeName == SHA256.hexDigest(of: "6:openai/g".utf8))
    }

    @Test("the label is the readable name, control characters replaced, cut to the limit")
    func storeLabels() {
        #expect(PolicyKey(provider: "openai", scope: .user("u-1")).storeLabel == "6:openai/u:u-1")
        #expect(PolicyKey(provider: "openai", scope: .user("a\u{0}b\nc")).storeLabel == "6:openai/u:a\u{FFFD}b\u{FFFD}c")
        let long = PolicyKey(provider: "p", scope: .user(String(repeating: "é", count: 500))).storeLabel
        #expect(long.unicodeScalars.count == PolicyKey.storeLabelLimit)
        #expect(long.hasPrefix("1:p/u:éé"))
        #expect(long.hasSuffix("é…"))
        // Exactly at the limit: nothing cut.
        let exact = PolicyKey(provider: "p", scope: .user(String(repeating: "z", count: PolicyKey.storeLabelLimit - 6)))
        #expect(exact.storeLabel == exact.unambiguousName)
    }
}
