/// An amount of money in integer micro-units of the provider's currency (1 000 000 micro-units
/// are one unit: one dollar, one euro). Spend budgets count in these, never in floating point,
/// so that sums never drift.
///
/// ```swift
/// let cap = try PolicyMoney(parsing: "50.00")   // 50_000_000 micro-units
/// let price = PolicyMoney(units: 2) + PolicyMoney(microUnits: 500_000)
/// ```
public struct PolicyMoney: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// The amount in micro-units (millionths of a unit).
    public var microUnits: Int64

    /// The largest amount a cap or a price may be: 2^48 micro-units (≈ 281 million units), so
    /// that no sum of a window's spend can overflow.
    public static let maximum = PolicyMoney(microUnits: 1 << 48)

    /// Zero.
    public static let zero = PolicyMoney(microUnits: 0)

    /// An amount of `microUnits` millionths of a unit.
    public init(microUnits: Int64) { self.microUnits = microUnits }

    /// A whole number of units (clamped to the range of `Int64` micro-units).
    public init(units: Int) {
        let (product, overflow) = Int64(clamping: units).multipliedReportingOverflow(by: 1_000_000)
        microUnits = overflow ? (units < 0 ? .min : .max) : product
    }

    /// Parses a decimal amount exactly: digits, an optional `.` and at most six decimals, with
    /// `_` allowed between digits (`"2.50"`, `"1_000"`, `"0.000125"`). No sign, no exponent.
    /// - Throws: ``PolicyError/Code/invalidLimits`` saying why the text is not such an amount.
    public init(parsing text: String) throws(PolicyError) {
        guard let value = Self.microUnits(exactly: text) else {
            throw PolicyError(.invalidLimits, message: Self.problem(with: text))
        }
        microUnits = value
    }

    /// The micro-units of a decimal text (see ``init(parsing:)``), or `nil` if it is not one.
    static func microUnits(exactly text: String) -> Int64? {
        var whole: Int64 = 0
        var fraction: Int64 = 0
        var decimals = 0
        var seenPoint = false
        var digits = 0
        var previousWasDigit = false
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"):
                let digit = Int64(byte - UInt8(ascii: "0"))
                if seenPoint {
                    decimals += 1
                    guard decimals <= 6 else { return nil }
                    fraction = fraction * 10 + digit
                } else {
                    let (times, o1) = whole.multipliedReportingOverflow(by: 10)
                    let (sum, o2) = times.addingReportingOverflow(digit)
                    guard !o1, !o2, sum <= maximum.microUnits / 1_000_000 else { return nil }
                    whole = sum
                }
                digits += 1
                previousWasDigit = true
            case UInt8(ascii: "_"):
                guard previousWasDigit else { return nil }
                previousWasDigit = false
            case UInt8(ascii: "."):
                guard !seenPoint, previousWasDigit else { return nil }
                seenPoint = true
                previousWasDigit = false
            default:
                return nil
            }
        }
        guard digits > 0, previousWasDigit else { return nil }
        var scale: Int64 = 1
        for _ in decimals..<6 { scale *= 10 }
        let value = whole * 1_000_000 + fraction * scale
        return value <= maximum.microUnits ? value : nil
    }

    /// Why `text` is not an amount ``init(parsing:)`` accepts.
    static func problem(with text: String) -> String {
        if let point = text.firstIndex(of: "."),
            text[text.index(after: point)...].filter({ $0 != "_" }).count > 6,
            text.allSatisfy({ $0.isASCII && ($0.isNumber || $0 == "." || $0 == "_") })
        {
            return "\"\(text)\" has more than 6 decimals: amounts are counted exactly in micro-units (millionths)"
        }
        if text.hasPrefix("-") { return "\"\(text)\" is negative: an amount must be 0 or more" }
        return "\"\(text)\" is not an amount such as \"2.50\" (digits, at most 6 decimals, at most \(maximum))"
    }

    /// The micro-units a TOML float stands for, if it is exact: the value's shortest decimal
    /// form (what the file said, for any literal of at most 15 significant digits) with at
    /// most six decimals. `nil` for anything else (more decimals, an exponent beyond that,
    /// negative, or non-finite).
    static func microUnits(exactly value: Double) -> Int64? {
        guard value.isFinite, value >= 0 else { return nil }
        // Swift prints the shortest text that reads back as the same double.
        var text = "\(value)"
        if let e = text.firstIndex(where: { $0 == "e" || $0 == "E" }) {
            // 1e-05 and 1e+16 style: only small exponents of exact values are expanded.
            guard let exponent = Int(text[text.index(after: e)...]), exponent >= -6, exponent <= 15 else { return nil }
            let mantissa = String(text[..<e])
            let parts = mantissa.split(separator: ".", omittingEmptySubsequences: false)
            let digits = parts[0] + (parts.count > 1 ? parts[1] : "")
            let point = parts[0].count + exponent
            if point <= 0 {
                text = "0." + String(repeating: "0", count: -point) + digits
            } else if point >= digits.count {
                text = String(digits) + String(repeating: "0", count: point - digits.count)
            } else {
                text = String(digits.prefix(point)) + "." + String(digits.dropFirst(point))
            }
        }
        if text.hasSuffix(".0") { text.removeLast(2) }
        return microUnits(exactly: text)
    }

    /// The amount with its decimals, as written in a configuration: `2.5`, `0.000125`, `50`.
    public var description: String {
        let sign = microUnits < 0 ? "-" : ""
        let magnitude = microUnits.magnitude
        let whole = magnitude / 1_000_000
        var fraction = String(magnitude % 1_000_000)
        guard fraction != "0" else { return "\(sign)\(whole)" }
        fraction = String(repeating: "0", count: 6 - fraction.count) + fraction
        while fraction.hasSuffix("0") { fraction.removeLast() }
        return "\(sign)\(whole).\(fraction)"
    }

    /// Compares amounts.
    public static func < (lhs: PolicyMoney, rhs: PolicyMoney) -> Bool { lhs.microUnits < rhs.microUnits }

    /// The sum (saturating at the ends of `Int64`).
    public static func + (lhs: PolicyMoney, rhs: PolicyMoney) -> PolicyMoney {
        PolicyMoney(microUnits: lhs.microUnits.clampedAdding(rhs.microUnits))
    }
}
