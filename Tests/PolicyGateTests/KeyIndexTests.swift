import PolicyGateTestKit
import Testing

@testable import PolicyGate

/// ``KeyIndex`` against a dictionary, with the shard's way of using it: keys appended at the
/// end of an array, a removal moving the last key into the hole.
@Suite("Key index", .timeLimit(.minutes(5)))
struct KeyIndexTests {
    /// A stand-in for a shard: ids in positions, each id with a hash of the test's choosing, and
    /// the dictionary the index must agree with.
    struct Model {
        var index = KeyIndex()
        var ids: [Int] = []
        var hashes: [Int: Int] = [:]
        var expected: [Int: Int] = [:]

        /// The hash of the id at `position`.
        func hashAt(_ position: Int) -> Int { hashes[ids[position]]! }

        /// Where the index finds `id`.
        func lookup(_ id: Int) -> Int? {
            index.position(ofHash: hashes[id]!) { ids[$0] == id }
        }

        /// Appends `id` (not present) with `hash`.
        mutating func insert(_ id: Int, hash: Int) {
            hashes[id] = hash
            index.insert(hash: hash, at: ids.count) { hashes[ids[$0]]! }
            expected[id] = ids.count
            ids.append(id)
        }

        /// Removes the id at `position`, moving the last one into its place.
        mutating func remove(at position: Int) {
            let id = ids[position]
            index.remove(hash: hashes[id]!, at: position) { hashes[ids[$0]]! }
            expected[id] = nil
            let last = ids.removeLast()
            if position < ids.count {
                index.move(hash: hashes[last]!, from: ids.count, to: position)
                ids[position] = last
                expected[last] = position
            }
        }

        /// Swaps the ids at two positions through a free one, as a series of position updates.
        mutating func swap(_ a: Int, _ b: Int) {
            guard a != b else { return }
            let (idA, idB) = (ids[a], ids[b])
            let free = ids.count
            index.move(hash: hashes[idA]!, from: a, to: free)
            index.move(hash: hashes[idB]!, from: b, to: a)
            index.move(hash: hashes[idA]!, from: free, to: b)
            ids.swapAt(a, b)
            (expected[idA], expected[idB]) = (b, a)
        }

        /// Every id found where the dictionary says, an absent one not found, and the table's
        /// size within its bounds.
        func check(absent: [Int], sourceLocation: SourceLocation = #_sourceLocation) {
            #expect(index.count == expected.count, sourceLocation: sourceLocation)
            var wrong = 0
            for (id, position) in expected where lookup(id) != position { wrong += 1 }
            for id in absent where expected[id] == nil && hashes[id] != nil && lookup(id) != nil { wrong += 1 }
            #expect(wrong == 0, "\(wrong) of \(expected.count) ids misplaced", sourceLocation: sourceLocation)
            let capacity = index.capacity
            if capacity > 0 {
                #expect(capacity.nonzeroBitCount == 1 && capacity >= KeyIndex.minimumCapacity, sourceLocation: sourceLocation)
                #expect(expected.count * 4 <= capacity * 3, "count \(expected.count), capacity \(capacity)", sourceLocation: sourceLocation)
                #expect(
                    capacity == KeyIndex.minimumCapacity || expected.count * 8 >= capacity,
                    "count \(expected.count), capacity \(capacity)", sourceLocation: sourceLocation)
            }
        }
    }

    /// A hash that often shares its bucket bits, its fragment, or all of itself with others.
    static func hash(_ random: inout SeededRandomNumberGenerator) -> Int {
        let bits = Int(bitPattern: UInt(random.next()))
        switch random.next() % 4 {
        case 0: return bits
        case 1: return bits & ~0xFFFF_FFFF | 0x1234_5000  // one bucket for all, fragments differ
        case 2: return 0x7777_0000_0000_0000 | bits & 0xFFFF_FFFF  // one fragment, buckets differ
        default: return [0x0BAD_CAFE_0000_0020, -1, 0][Int(random.next() % 3)]  // the very same hashes
        }
    }

    @Test(
        "inserts, removals, moves and lookups agree with a dictionary, through growth and shrinkage",
        arguments: [1, 7, 42, 2_026, 90_001] as [UInt64])
    func modelAgrees(seed: UInt64) {
        var random = SeededRandomNumberGenerator(seed: seed)
        var model = Model()
        var nextID = 0
        var retired: [Int] = []
        // Waves: fill towards a target, then drain towards a small one, so that the table grows
        // and shrinks several times, with every kind of operation mixed in.
        for wave in 0..<6 {
            let target = wave.isMultiple(of: 2) ? Int(random.next() % 1_500) + 200 : Int(random.next() % 20)
            var steps = 0
            while model.ids.count != target && steps < 20_000 {
                steps += 1
                let roll = random.next() % 10
                if (roll < 6) == (model.ids.count < target) {
                    model.insert(nextID, hash: Self.hash(&random))
                    nextID += 1
                } else if !model.ids.isEmpty {
                    let position = Int(random.next() % UInt64(model.ids.count))
                    if roll == 9 {
                        model.swap(position, Int(random.next() % UInt64(model.ids.count)))
                    } else {
                        retired.append(model.ids[position])
                        model.remove(at: position)
                    }
                }
                if steps % 97 == 0 { model.check(absent: retired.suffix(50)) }
            }
            model.check(absent: retired)
        }
        model.index.removeAll()
        #expect(model.index.capacity == 0 && model.index.count == 0)
    }

    /// The hash of an entry homed at `bucket` (its bits above the shard's), told apart by `tag`.
    static func hash(bucket: Int, tag: Int) -> Int {
        tag << 40 | bucket << GateCore.shardCount.trailingZeroBitCount
    }

    @Test("removing from the middle of a run, across the end of the table, keeps the rest reachable")
    func backwardShift() {
        // Eight slots (five entries stay under 3/4): homes 7, 7, 7, 0, 6 make one run that wraps
        // from slot 6 through slot 1.
        let homes = [7, 7, 7, 0, 6]
        for victim in homes.indices {
            var model = Model()
            for (id, home) in homes.enumerated() { model.insert(id, hash: Self.hash(bucket: home, tag: id + 1)) }
            #expect(model.index.capacity == 8)
            model.remove(at: model.expected[victim]!)
            model.check(absent: [victim])
            // Entries after the hole come back as far as their homes allow (slots 7, 0, 1, 2 hold
            // homes 7, 7, 7, 0 at displacements 0, 1, 2, 2; slot 6 home 6).
            let displacement = model.index.totalDisplacement(hashAt: model.hashAt)
            #expect(displacement == [2, 2, 2, 3, 5][victim], "victim \(victim): displacement \(displacement)")
            // And the freed slot is used again.
            model.insert(99, hash: Self.hash(bucket: homes[victim], tag: 99))
            model.check(absent: [victim])
        }
    }

    @Test("keys sharing all their bucket bits, or their whole hash, are told apart; removals keep runs whole")
    func collisions() {
        for sameHash in [false, true] {
            var model = Model()
            for id in 0..<40 { model.insert(id, hash: Self.hash(bucket: 3, tag: sameHash ? 1 : id + 1)) }
            model.check(absent: [])
            // Remove from the middle of the one long run, then its ends, then most of it.
            for id in [20, 21, 0, 39, 10] + Array(stride(from: 1, to: 38, by: 3)) where model.expected[id] != nil {
                model.remove(at: model.expected[id]!)
                model.check(absent: [20, 21, 0, 39, 10])
            }
            while model.ids.count > 1 { model.remove(at: 0) }
            model.check(absent: Array(0..<40))
            #expect(model.index.capacity == KeyIndex.minimumCapacity)
        }
    }

    @Test("the keys of one shard spread over the table: buckets do not come from the bits that picked the shard")
    func oneShardSpreads() {
        var model = Model()
        var id = 0
        while model.ids.count < 1_000 {
            let key = PolicyKey(provider: "p", scope: .user("u\(id)"))
            if key.keyHash & (GateCore.shardCount - 1) == 0 { model.insert(model.ids.count, hash: key.keyHash) }
            id += 1
        }
        model.check(absent: [])
        // Linear probing at most 3/4 full averages under 1.5 slots past the home bucket; keys
        // crowded into one bucket in 32 (buckets from the hash's lowest bits) average about 8.
        let average = Double(model.index.totalDisplacement(hashAt: model.hashAt)) / Double(model.ids.count)
        #expect(average < 3, "average displacement \(average)")
    }

    /// Whether `gate` admits a call of `key` now (its permit released at once).
    static func admits(_ key: PolicyKey, _ gate: PolicyService) -> Bool {
        do {
            let permit = try gate.tryAcquire(key)
            permit.release()
            return true
        } catch {
            return false
        }
    }

    /// How many of `keys` do not admit exactly twice (their own two requests a minute).
    static func miscounted(_ keys: some Sequence<PolicyKey>, _ gate: PolicyService) -> Int {
        keys.reduce(0) { sum, key in sum + (admits(key, gate) && admits(key, gate) && !admits(key, gate) ? 0 : 1) }
    }

    /// Once a minute and a bucket have passed and idle keys are purged: the gate holds no key,
    /// its index agrees, and every key counts anew from zero (in reverse order, so that keys
    /// land in other positions than before).
    static func purgedAndCountedAnew(
        _ keys: [PolicyKey], _ gate: PolicyService, _ clock: ManualClock, consistent: () -> Bool,
        sourceLocation: SourceLocation = #_sourceLocation
    ) {
        clock.advance(by: .seconds(62))
        _ = gate.purgeIdleKeys()
        #expect(gate.storedKeyCount == 0, sourceLocation: sourceLocation)
        #expect(consistent(), sourceLocation: sourceLocation)
        #expect(miscounted(keys.reversed(), gate) == 0, sourceLocation: sourceLocation)
        #expect(consistent(), sourceLocation: sourceLocation)
    }

    @Test("4 000 scopes admit by their own counters while idle ones are swept and others move in the table")
    func manyScopesThroughTheService() throws {
        let clock = ManualClock()
        let gate = try PolicyService(limits: ["p": PolicyLimits(requestsPerMinute: 2)], clock: clock)
        let keys = (0..<4_000).map { PolicyKey(provider: "p", scope: .user("s\($0)")) }
        func admits(_ key: PolicyKey) -> Bool { Self.admits(key, gate) }
        func miscounted(_ keys: some Sequence<PolicyKey>) -> Int { Self.miscounted(keys, gate) }
        /// Every storage at the position it records, and found by its key.
        func consistent() -> Bool {
            gate.core.shards.allSatisfy { shard in
                shard.table.withLock { table in
                    table.storages.indices.allSatisfy {
                        table.storages[$0].position == $0 && table.lookup(table.storages[$0].key) === table.storages[$0]
                    }
                }
            }
        }

        #expect(miscounted(keys) == 0)
        #expect(gate.storedKeyCount == keys.count)
        #expect(consistent())
        // A minute and a bucket later every key is idle: calls on half of them sweep others
        // (one per call), so keys leave, come back and move while the rest are looked up.
        clock.advance(by: .seconds(62))
        let odd = keys.indices.filter { $0 % 2 == 1 }.map { keys[$0] }
        let even = keys.indices.filter { $0 % 2 == 0 }.map { keys[$0] }
        #expect(miscounted(odd) == 0)
        #expect(gate.storedKeyCount < keys.count, "stored: \(gate.storedKeyCount)")
        #expect(consistent())
        #expect(miscounted(even) == 0)
        #expect(consistent())
        // The odd keys are still counted: one more call each is refused.
        #expect(odd.filter(admits).isEmpty)
        Self.purgedAndCountedAnew(keys, gate, clock, consistent: consistent)
    }

    @Test("2 000 users in 40 orgs of a nested provider admit by their own and their org's counters while idle levels are swept")
    func manyLevelsOfANestedProvider() throws {
        let clock = ManualClock()
        let gate = try PolicyService(
            configuration: PolicyConfiguration(
                toml: """
                    [limits.p]
                    requests_per_minute = 1_000_000

                    [limits.p.per.org]
                    requests_per_minute = 100

                    [limits.p.per.user]
                    requests_per_minute = 2
                    """), clock: clock)
        let keys = (0..<2_000).map { PolicyKey(provider: "p", scope: .user("u\($0)"), within: [.org("o\($0 % 40)")]) }
        func admits(_ key: PolicyKey) -> Bool { Self.admits(key, gate) }
        func miscounted(_ keys: some Sequence<PolicyKey>) -> Int { Self.miscounted(keys, gate) }
        /// Every live level found at its own bucket by its key, and the index holding no other.
        func consistent() -> Bool {
            gate.core.chains.withLock { Array($0.values) }.allSatisfy { chain in
                chain.withMachine { machine in
                    var levels = 0
                    let found = machine.buckets.indices.allSatisfy { b in
                        guard machine.buckets[b].isLive, case .level = machine.buckets[b].role else { return true }
                        levels += 1
                        return machine.existingLeaf(for: machine.buckets[b].key) == Int32(b)
                    }
                    return (found && levels == machine.indexedLevelCount, ChainGate.Machine.Effects())
                }
            }
        }

        // The orgs' caps of 100 a minute hold 50 users each at two requests: 40 orgs, 50 users.
        #expect(miscounted(keys) == 0)
        #expect(gate.storedKeyCount == keys.count + 40)
        #expect(consistent())
        // Each org has counted its 50 users' two requests: the org is full.
        #expect(!admits(PolicyKey(provider: "p", scope: .user("new"), within: [.org("o0")])))
        // A minute and a bucket later every level is idle: each new user's first call sweeps
        // others, so levels leave, come back into freed buckets and are looked up.
        clock.advance(by: .seconds(62))
        let fresh = (2_000..<2_400).map { PolicyKey(provider: "p", scope: .user("u\($0)"), within: [.org("o\($0 % 40)")]) }
        #expect(miscounted(fresh) == 0)
        #expect(gate.storedKeyCount < keys.count + fresh.count + 40, "stored: \(gate.storedKeyCount)")
        #expect(consistent())
        // Half of the first users, 25 per org: with the new ones, 70 of each org's 100.
        #expect(miscounted(keys.prefix(1_000)) == 0)
        #expect(consistent())
        Self.purgedAndCountedAnew(keys, gate, clock, consistent: consistent)
    }
}
