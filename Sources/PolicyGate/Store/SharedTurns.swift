/// The callers of one shared key in this process, in arrival order, and the news they wait for.
///
/// Only the head talks to the store, so a process sends at most one admission per key at a
/// time and FIFO holds within the process, per class: an interactive caller queues ahead of
/// batch callers not yet promoted (never ahead of the head, which may be asking the store), so
/// a batch caller is passed only until it has waited its aging. A pure value: ``SharedGate`` drives it under its
/// lock and resumes the continuations it hands back outside the lock.
struct SharedTurns<Payload> {
    private var queue = WaiterQueue<Turn>()
    /// News of this key (a release or a lower commit anywhere) seen so far.
    private(set) var generation: UInt64 = 0
    /// Heads waiting for news after a refusal.
    private var listeners: [(id: UInt64, payload: Payload)] = []

    private struct Turn {
        let id: UInt64
        var parked: Payload?
        /// For a batch caller: when it is promoted (interactive callers no longer pass it);
        /// `.min` for an interactive one.
        var promoteAt: Int64 = .min
    }

    var isIdle: Bool { queue.isEmpty && listeners.isEmpty }

    /// Queues caller `id`; returns whether it is the head (and may talk to the store now).
    /// - Parameters:
    ///   - promoteAt: For a batch caller, when interactive callers stop passing it; `.min`
    ///     (the default) for an interactive caller.
    ///   - now: The present, to tell which batch callers are promoted.
    mutating func enter(_ id: UInt64, promoteAt: Int64 = .min, now: Int64 = .min) -> Bool {
        var turn = Turn(id: id, parked: nil, promoteAt: promoteAt)
        if promoteAt != .min {
            // Never promoted before an earlier batch caller: the promoted ones stay a prefix of
            // the batch callers, which an interactive caller then queues behind.
            var i = queue.count - 1
            while i >= 0 && queue[i].promoteAt == .min { i -= 1 }
            if i >= 0 { turn.promoteAt = max(promoteAt, queue[i].promoteAt) }
        }
        if promoteAt == .min, queue.count > 1,
            let first = (1..<queue.count).first(where: { queue[$0].promoteAt > now })
        {
            queue.insert(turn, at: first)
            return false
        }
        queue.append(turn)
        return queue.count == 1
    }

    /// Parks `payload` until `id` is the head. Returns `false` (parking nothing) if it is the
    /// head already, or if it left the queue meanwhile.
    mutating func park(_ id: UInt64, _ payload: Payload) -> Bool {
        guard let index = queue.firstIndex(where: { $0.id == id }), index > 0 else { return false }
        queue[index].parked = payload
        return true
    }

    /// Takes back what `id` parked (it gave up waiting), leaving it queued.
    mutating func unpark(_ id: UInt64) -> Payload? {
        guard let index = queue.firstIndex(where: { $0.id == id }) else { return nil }
        defer { queue[index].parked = nil }
        return queue[index].parked
    }

    /// Removes `id` from the queue; returns the new head's parked payload to resume, if any.
    mutating func leave(_ id: UInt64) -> Payload? {
        guard let index = queue.firstIndex(where: { $0.id == id }) else { return nil }
        _ = queue.remove(at: index)
        guard index == 0, let payload = queue.first?.parked else { return nil }
        queue[0].parked = nil
        return payload
    }

    /// Waits for news after `seen`: returns `false` (keeping nothing) if news came already.
    mutating func listen(_ id: UInt64, since seen: UInt64, _ payload: Payload) -> Bool {
        guard generation == seen else { return false }
        listeners.append((id, payload))
        return true
    }

    /// Takes back a listener that gave up.
    mutating func unlisten(_ id: UInt64) -> Payload? {
        guard let index = listeners.firstIndex(where: { $0.id == id }) else { return nil }
        return listeners.remove(at: index).payload
    }

    /// Records news; returns the listeners to resume.
    mutating func announce() -> [Payload] {
        generation &+= 1
        defer { listeners.removeAll() }
        return listeners.map(\.payload)
    }
}
