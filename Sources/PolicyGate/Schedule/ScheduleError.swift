/// Why a schedule, a cron expression, a date or a time zone was rejected.
///
/// Errors point into the text they came from: ``column`` is the 1-based position (in characters)
/// of the offending part inside the cron expression or date string, so a configuration reader can
/// add its own file location in front. Errors found by ``PolicySchedule/validate()`` name the
/// entry instead, through ``entryIndex``.
public struct ScheduleError: Error, Hashable, Sendable, CustomStringConvertible {
    /// A sentence saying what is wrong, such as `hour 25 is out of range 0-23`.
    public let message: String
    /// The 1-based column of the offending part in the text that was parsed; `nil` when the error
    /// is about the text as a whole (an unknown time zone) or about an entry.
    public let column: Int?
    /// The position of the offending entry in ``PolicySchedule/entries``, for errors about an entry.
    public let entryIndex: Int?

    /// Creates an error.
    /// - Parameters:
    ///   - message: What is wrong.
    ///   - column: The 1-based column in the parsed text, if the error has one.
    ///   - entryIndex: The position of the entry the error is about, if any.
    public init(_ message: String, column: Int? = nil, entryIndex: Int? = nil) {
        self.message = message
        self.column = column
        self.entryIndex = entryIndex
    }

    /// The message, preceded by the column or entry it is about.
    public var description: String {
        var prefix = ""
        if let entryIndex { prefix += "schedule entry \(entryIndex + 1): " }
        if let column { prefix += "column \(column): " }
        return prefix + message
    }
}
