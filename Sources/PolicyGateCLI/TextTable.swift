/// A table of text with aligned columns: numbers to the right, words to the left.
package struct TextTable: Sendable {
    /// How a column's cells line up.
    package enum Alignment: Sendable {
        /// Flush left (names, words).
        case left
        /// Flush right (numbers).
        case right
    }

    /// The header cells and their alignments, one per column.
    package var columns: [(title: String, alignment: Alignment)]
    /// The body rows; a short row is padded with empty cells.
    package var rows: [[String]] = []

    /// Creates an empty table with these columns.
    package init(_ columns: [(title: String, alignment: Alignment)]) {
        self.columns = columns
    }

    /// Appends a row.
    package mutating func append(_ row: [String]) { rows.append(row) }

    /// The header and the rows, each line indented by `indent` spaces, columns two spaces
    /// apart, with no trailing spaces.
    package func render(indent: Int = 0) -> [String] {
        let all = [columns.map(\.title)] + rows
        let widths = columns.indices.map { column in
            all.map { column < $0.count ? $0[column].count : 0 }.max() ?? 0
        }
        return all.map { row in
            var line = String(repeating: " ", count: indent)
            for (column, width) in widths.enumerated() {
                let cell = column < row.count ? row[column] : ""
                let padding = String(repeating: " ", count: width - cell.count)
                if column > 0 { line += "  " }
                line += columns[column].alignment == .right ? padding + cell : cell + padding
            }
            while line.last == " " { line.removeLast() }
            return line
        }
    }
}
