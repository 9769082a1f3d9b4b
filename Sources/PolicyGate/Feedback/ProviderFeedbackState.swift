import Synchronization

/// What a provider said about its own limits, shared by every key of the provider: while the
/// provider pauses the gate (a 429's retry time) nothing is admitted, and no more requests or
/// tokens than it said are left are admitted until that quantity resets.
///
/// It can only tighten the configured caps (it is checked after them, never instead of them),
/// and each part expires on its own: a pause at its end, an allowance at its reset.
///
/// The state machines of the provider's keys consult it where they decide an admission, under
/// their own lock; its lock is a leaf, never held while taking another. Whether anything is in
/// force is read without the lock, so a provider that said nothing costs one relaxed load.
final class ProviderFeedbackState: Sendable {
    /// What is left of one quantity until its reset.
    struct Allowance: Sendable, Hashable {
        var remaining: Int64
        /// The reset, in the service's nanoseconds.
        let until: Int64
    }

    struct State: Sendable {
        var pausedUntil: Int64 = .min
        var pauseCause = ""
        var requests: Allowance?
        var tokens: Allowance?
        /// Whether a call was refused since the state last loosened: waiters may be parked on it.
        var refused = false

        func isInForce(at now: Int64) -> Bool {
            now < pausedUntil || (requests.map { now < $0.until } ?? false) || (tokens.map { now < $0.until } ?? false)
        }

        /// Takes one request of `tokens` from the allowances still in force.
        mutating func take(tokens: Int64, now: Int64) {
            if let a = requests, now < a.until { requests?.remaining = a.remaining - 1 }
            if let a = self.tokens, now < a.until { self.tokens?.remaining = a.remaining - tokens }
        }
    }

    private let inForce = Atomic<Bool>(false)
    private let state = Locked(State())

    /// Takes one request of `tokens` from what the provider left, if the provider does not
    /// pause the gate and both fit; otherwise returns why not and until when (nothing taken).
    @inline(__always)
    func take(tokens: Int64, now: Int64) -> Rejection? {
        guard inForce.load(ordering: .relaxed) else { return nil }
        return check(tokens: tokens, now: now, taking: true)
    }

    /// Why a call of `tokens` would be refused now, taking nothing (the shared store's path
    /// asks before the store and takes once it admitted).
    func refusal(tokens: Int64, now: Int64) -> Rejection? {
        guard inForce.load(ordering: .relaxed) else { return nil }
        return check(tokens: tokens, now: now, taking: false)
    }

    /// Takes what an admission made elsewhere (the shared store) used, without refusing it.
    func consume(tokens: Int64, now: Int64) {
        guard inForce.load(ordering: .relaxed) else { return }
        state.withLock { $0.take(tokens: tokens, now: now) }
    }

    private func check(tokens: Int64, now: Int64, taking: Bool) -> Rejection? {
        state.withLock { state -> Rejection? in
            guard state.isInForce(at: now) else {
                inForce.store(false, ordering: .relaxed)
                return nil
            }
            var refusal: Rejection?
            func refuse(until: Int64, _ cause: ProviderRefusal) {
                if until > (refusal?.retryAt ?? .min) { refusal = Rejection(kind: nil, retryAt: until, provider: cause) }
            }
            if now < state.pausedUntil { refuse(until: state.pausedUntil, .paused) }
            if let a = state.requests, now < a.until, a.remaining < 1 { refuse(until: a.until, .noRequests) }
            if let a = state.tokens, now < a.until, a.remaining < tokens { refuse(until: a.until, .tokens(left: a.remaining)) }
            if refusal != nil {
                state.refused = true
                return refusal
            }
            if taking { state.take(tokens: tokens, now: now) }
            return nil
        }
    }

    /// What changed when feedback was applied: whether parked waiters must look again.
    struct Applied {
        /// Calls were refused before and the state may now admit more.
        var mayAdmitMore = false
    }

    /// Adopts what the provider said at `now`: a pause lasts until the later of the current
    /// and the new end; an allowance is replaced by the newer report of its quantity (the
    /// provider's own count, which already includes the calls this gate let through).
    func apply(pauseUntil: Int64?, cause: String, requests: Allowance?, tokens: Allowance?, now: Int64) -> Applied {
        state.withLock { state in
            var applied = Applied()
            // A newer report loosens if it leaves more, or resets sooner (smaller but ending
            // earlier: a waiter parked until the old reset could go at the new one). Where no
            // report was in force, a new one only restricts.
            func loosens(_ new: Allowance?, _ old: Allowance?) -> Bool {
                guard let new, let old, now < old.until else { return false }
                return new.remaining > old.remaining || new.until < old.until
            }
            let loosened = loosens(requests, state.requests) || loosens(tokens, state.tokens)
            if let pauseUntil, pauseUntil > state.pausedUntil {
                state.pausedUntil = pauseUntil
                state.pauseCause = cause
            }
            if let requests { state.requests = requests }
            if let tokens { state.tokens = tokens }
            if state.refused && loosened {
                applied.mayAdmitMore = true
                state.refused = false
            }
            inForce.store(state.isInForce(at: now), ordering: .relaxed)
            return applied
        }
    }

    /// What is in force at `now`, for readouts; `nil` when nothing is.
    func readout(at now: Int64) -> PolicyState.ProviderFeedback? {
        let state = state.withLock { $0 }
        guard state.isInForce(at: now) else { return nil }
        func left(_ until: Int64) -> Duration { .nanoseconds(until - now) }
        let paused = now < state.pausedUntil
        let requests = state.requests.flatMap { now < $0.until ? $0 : nil }
        let tokens = state.tokens.flatMap { now < $0.until ? $0 : nil }
        return PolicyState.ProviderFeedback(
            pausedFor: paused ? left(state.pausedUntil) : nil, pauseCause: paused ? state.pauseCause : nil,
            requestsRemaining: requests.map { Int(max(0, $0.remaining)) }, requestsResetIn: requests.map { left($0.until) },
            tokensRemaining: tokens.map { Int(max(0, $0.remaining)) }, tokensResetIn: tokens.map { left($0.until) })
    }
}
