/// A FIFO queue with removal from the middle (for cancellation and timeouts).
///
/// Array-backed with a moving head: appends and pops are O(1) amortised, and the queue only
/// exists on the slow path, when callers actually wait.
struct WaiterQueue<Element> {
    private var storage: [Element] = []
    private var head = 0

    var isEmpty: Bool { head == storage.count }
    var count: Int { storage.count - head }
    var first: Element? { isEmpty ? nil : storage[head] }

    subscript(position: Int) -> Element {
        get { storage[head + position] }
        set { storage[head + position] = newValue }
    }

    mutating func append(_ element: Element) { storage.append(element) }

    /// Inserts `element` before the one at `position` (`count`: at the end). O(n): only an
    /// interactive call queued ahead of batch calls does it.
    mutating func insert(_ element: Element, at position: Int) { storage.insert(element, at: head + position) }

    @discardableResult
    mutating func removeFirst() -> Element {
        let element = storage[head]
        head += 1
        if head == storage.count {
            storage.removeAll(keepingCapacity: storage.count <= 64)
            head = 0
        } else if head >= 64 && head * 2 >= storage.count {
            storage.removeFirst(head)
            head = 0
        }
        return element
    }

    @discardableResult
    mutating func remove(at position: Int) -> Element {
        if position == 0 { return removeFirst() }
        return storage.remove(at: head + position)
    }

    func firstIndex(where predicate: (Element) -> Bool) -> Int? {
        var i = head
        while i < storage.count {
            if predicate(storage[i]) { return i - head }
            i += 1
        }
        return nil
    }
}
