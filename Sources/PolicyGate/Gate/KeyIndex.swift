/// Where each key of a shard sits in the shard's storages: an open-addressing table of 8-byte
/// slots, in place of a `[HashedKey: Int]` that kept a copy of every key per entry (about
/// 230 bytes less per key in the floors' RSS reading).
///
/// A slot packs 32 bits of the key's hash (its fragment) above `position + 1`; 0 is an empty
/// slot. The keys themselves stay in the storages, so every operation that must tell keys apart
/// asks its caller: `matches` confirms a fragment's candidate, and `hashAt` gives the hash of the
/// key at a position when slots move (a resize, a deletion). A position is unique in the index,
/// so removing and moving an entry need no key comparison at all.
///
/// Linear probing, deletion by backward shift (no tombstones, so a lookup's run never grows
/// with churn). Not thread-safe: guarded by its owner's lock (a shard's ``ShardTable``, a
/// nested provider's ``ChainStateMachine``).
struct KeyIndex {
    /// The slots, a power of two of them.
    private var slots: [UInt64]
    /// `slots.count - 1`, kept so that a probe does not read the array's header for it.
    private var mask: Int
    /// The entries in use.
    private(set) var count = 0

    /// An empty index's slots: one empty slot, shared (statically initialised, so no index
    /// allocates before its first key) and letting a lookup probe without an emptiness check.
    private static let emptySlots: [UInt64] = [0]

    /// The fewest slots an index that holds keys keeps, so that a shard going back and forth
    /// around a handful of keys does not reallocate each time.
    static let minimumCapacity = 8

    /// The bits of a slot holding `position + 1`; the fragment is the other half.
    private static let positionBits: UInt64 = 0xFFFF_FFFF

    /// The lowest bits of a key's hash picked its shard (`GateCore.shard(for:)`), so they are the
    /// same for every key here; buckets are taken from the bits above them, or every key of a
    /// shard would crowd into one bucket in 32. Computed, so that it folds to a constant.
    @inline(__always) private static var bucketShift: Int { GateCore.shardCount.trailingZeroBitCount }

    /// An empty index (no allocation).
    init() {
        slots = Self.emptySlots
        mask = 0
    }

    /// The slots allocated: 0 in the shared empty state, else a power of two of at least
    /// ``minimumCapacity``.
    var capacity: Int { mask == 0 ? 0 : mask &+ 1 }

    /// The fragment of `hash` placed in a slot: its high 32 bits, independent of the bucket bits.
    @inline(__always)
    private static func fragment(_ hash: Int) -> UInt64 {
        UInt64(truncatingIfNeeded: hash) & ~positionBits
    }

    /// The bucket `hash` starts probing at.
    @inline(__always)
    private func bucket(_ hash: Int) -> Int {
        Int(bitPattern: UInt(bitPattern: hash) &>> Self.bucketShift) & mask
    }

    /// The position a slot holds.
    @inline(__always)
    private static func position(_ slot: UInt64) -> Int {
        Int(truncatingIfNeeded: slot & positionBits) &- 1
    }

    /// The slot for an entry of `hash` at `position`.
    @inline(__always)
    private static func slot(_ hash: Int, _ position: Int) -> UInt64 {
        fragment(hash) | UInt64(truncatingIfNeeded: position &+ 1)
    }

    /// The position of the key whose hash is `hash` and for whose position `matches` holds, or
    /// `nil`. `matches` is asked only about positions whose fragment is the key's.
    @inline(__always)
    func position(ofHash hash: Int, where matches: (Int) -> Bool) -> Int? {
        let fragment = Self.fragment(hash)
        var bucket = bucket(hash)
        while true {
            let slot = slots[bucket]
            if slot == 0 { return nil }
            if slot & ~Self.positionBits == fragment {
                let position = Self.position(slot)
                if matches(position) { return position }
            }
            bucket = (bucket &+ 1) & mask
        }
    }

    /// Records the key whose hash is `hash` at `position`. The key must not be in the index.
    /// `hashAt` gives the hash of the key at any position already recorded (to grow).
    mutating func insert(hash: Int, at position: Int, hashAt: (Int) -> Int) {
        precondition(position >= 0 && position < Int(Self.positionBits), "KeyIndex: position out of range")
        // Grow once more than 3/4 of the slots would be in use: past that, linear probing's runs
        // lengthen quickly. The shared empty state (one slot) always grows here.
        if (count &+ 1) &* 4 > (mask &+ 1) &* 3 {
            resize(to: max(Self.minimumCapacity, (mask &+ 1) &* 2), hashAt: hashAt)
        }
        place(Self.slot(hash, position), at: bucket(hash))
        count &+= 1
    }

    /// Forgets the entry of hash `hash` at `position`, which must be in the index. `hashAt` gives
    /// the hash of the key at any other position recorded (to shift entries back, or shrink).
    mutating func remove(hash: Int, at position: Int, hashAt: (Int) -> Int) {
        var hole = find(hash: hash, at: position)
        // Backward shift: pull each later entry of the run into the hole unless that would put it
        // before its own bucket, so that every run stays unbroken without tombstones.
        var next = (hole &+ 1) & mask
        while true {
            let slot = slots[next]
            if slot == 0 { break }
            let home = bucket(hashAt(Self.position(slot)))
            // It may move back to the hole if the hole is not before its home (cyclically).
            if (next &- home) & mask >= (next &- hole) & mask {
                slots[hole] = slot
                hole = next
            }
            next = (next &+ 1) & mask
        }
        slots[hole] = 0
        count &-= 1
        // Halve below 1/8 full (1/4 full afterwards, well short of growing back).
        if count &* 8 < mask &+ 1 && mask &+ 1 > Self.minimumCapacity {
            resize(to: (mask &+ 1) / 2, hashAt: hashAt)
        }
    }

    /// Records that the entry of hash `hash` at `old` is now at `new` (a position not in use).
    mutating func move(hash: Int, from old: Int, to new: Int) {
        precondition(new >= 0 && new < Int(Self.positionBits), "KeyIndex: position out of range")
        slots[find(hash: hash, at: old)] = Self.slot(hash, new)
    }

    /// Forgets every entry and gives the slots back.
    mutating func removeAll() {
        slots = Self.emptySlots
        mask = 0
        count = 0
    }

    /// The sum over entries of how far each lies past its bucket (what lookups pay beyond their
    /// first probe), for tests to check that the keys of one shard spread out.
    func totalDisplacement(hashAt: (Int) -> Int) -> Int {
        var total = 0
        for (index, slot) in slots.enumerated() where slot != 0 {
            total += (index &- bucket(hashAt(Self.position(slot)))) & mask
        }
        return total
    }

    /// The bucket holding the entry of hash `hash` at `position`, which must be in the index.
    /// Positions are unique, so the whole slot identifies the entry.
    private func find(hash: Int, at position: Int) -> Int {
        let slot = Self.slot(hash, position)
        var bucket = bucket(hash)
        while slots[bucket] != slot {
            precondition(slots[bucket] != 0, "KeyIndex: entry not found")
            bucket = (bucket &+ 1) & mask
        }
        return bucket
    }

    /// Puts `slot` in the first empty bucket from `bucket` on.
    private mutating func place(_ slot: UInt64, at bucket: Int) {
        var bucket = bucket
        while slots[bucket] != 0 { bucket = (bucket &+ 1) & mask }
        slots[bucket] = slot
    }

    /// Rebuilds the table with `capacity` slots (a power of two, more than `count`).
    private mutating func resize(to capacity: Int, hashAt: (Int) -> Int) {
        let old = slots
        slots = Array(repeating: 0, count: capacity)
        mask = capacity &- 1
        for slot in old where slot != 0 {
            place(slot, at: bucket(hashAt(Self.position(slot))))
        }
    }
}

/// What an index's owner keeps at each position: something that carries its key (a shard's
/// ``KeyStorage``, a nested provider's ``ChainStateMachine/Bucket``).
protocol KeyIndexed {
    /// The key the entry is found by.
    var key: PolicyKey { get }
}

// The owner's array as the index's keys. Taking the array as an argument (not a closure over
// the owner) lets a mutating owner pass its index and its array together: they are separate
// stored properties, so neither access overlaps the other.
extension KeyIndex {
    /// The position of `key` in `elements`, if it is recorded.
    // Out of line: inlined, it made the admission path too big for the state machine's
    // `tryAdmit` to be inlined there, and the cycle cost 27 instructions more than with this
    // call (`Benchmarks/callgrind-cycles.sh`, capped).
    @inline(never)
    func position<Element: KeyIndexed>(of key: PolicyKey, in elements: [Element]) -> Int? {
        position(ofHash: key.keyHash) { elements[$0].key == key }
    }

    /// Records `key` at `position` of `elements` (which may not hold it yet).
    mutating func insert<Element: KeyIndexed>(_ key: PolicyKey, at position: Int, in elements: [Element]) {
        insert(hash: key.keyHash, at: position) { elements[$0].key.keyHash }
    }

    /// Forgets the key at `position` of `elements`.
    mutating func remove<Element: KeyIndexed>(at position: Int, in elements: [Element]) {
        remove(hash: elements[position].key.keyHash, at: position) { elements[$0].key.keyHash }
    }
}

extension KeyStorage: KeyIndexed {}
