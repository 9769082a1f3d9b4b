/// A list that is usually empty: `nil` until the first append, so the common case builds and
/// destroys nothing.
struct Few<Element> {
    var items: [Element]?

    @inline(__always)
    mutating func append(_ element: Element) {
        if items == nil { items = [element] } else { items?.append(element) }
    }

    mutating func append(contentsOf other: Few<Element>) {
        guard let more = other.items else { return }
        if items == nil { items = more } else { items?.append(contentsOf: more) }
    }
}

extension Few: Sendable where Element: Sendable {}
