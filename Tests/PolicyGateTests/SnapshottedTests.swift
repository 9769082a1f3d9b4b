import PolicyGateTestKit
import Synchronization
import Testing

@testable import PolicyGate

/// The provider table's holder (``Snapshotted``): readers take no lock, yet never see a value
/// half written, nor an older value once a newer one has been seen.
@Suite("Snapshotted", .timeLimit(.minutes(5)))
struct SnapshottedTests {
    /// A value whose parts must agree: `stamp` and every element of `copies` are the same
    /// number, written at once by each writer. A reader that saw a slot mid-write would find
    /// them apart (and `copies` changes length, so a torn array is caught too).
    struct Stamped: Sendable, Equatable {
        var stamp: Int
        var copies: [Int]

        init(_ stamp: Int, length: Int) {
            self.stamp = stamp
            copies = Array(repeating: stamp, count: length)
        }

        var isWhole: Bool { copies.allSatisfy { $0 == stamp } }
    }

    /// The writer's end, seen by every reader task.
    final class Flag: Sendable {
        let isSet = Atomic<Bool>(false)
    }

    @Test("a write is seen by the next read, locked or not, also when the writer throws")
    func writesArePublished() {
        struct Refused: Error {}
        let holder = Snapshotted(Stamped(0, length: 1))
        #expect(holder.read { $0 } == Stamped(0, length: 1))
        holder.withLock { $0 = Stamped(1, length: 3) }
        #expect(holder.read { $0 } == Stamped(1, length: 3))
        #expect(holder.readLocked { $0 } == Stamped(1, length: 3))
        // Both slots are reused: the third write goes where the first was.
        for stamp in 2...5 {
            holder.withLock { $0 = Stamped(stamp, length: stamp) }
            #expect(holder.read { $0 } == Stamped(stamp, length: stamp))
        }
        #expect(throws: Refused.self) {
            try holder.withLock { (value: inout sending Stamped) throws(Refused) in
                value = Stamped(9, length: 2)
                throw Refused()
            }
        }
        #expect(holder.read { $0 } == Stamped(9, length: 2))
    }

    @Test("concurrent readers during writes see only whole published values, in order", arguments: [1, 2, 3] as [UInt64])
    func concurrentReaders(seed: UInt64) async {
        var random = SeededRandomNumberGenerator(seed: seed)
        let writes = Int.random(in: 2_000...4_000, using: &random)
        let readers = Int.random(in: 2...6, using: &random)
        let lengths = (0..<writes).map { _ in Int.random(in: 1...24, using: &random) }
        let holder = Snapshotted(Stamped(0, length: 1))
        let done = Flag()
        let results = await withTaskGroup(of: (torn: Int, backwards: Int, reads: Int, last: Int).self) { group in
            for _ in 0..<readers {
                group.addTask {
                    var torn = 0, backwards = 0, reads = 0, last = 0
                    while true {
                        // Checked before the read: the read after the writer's end sees its last value.
                        let isDone = done.isSet.load(ordering: .acquiring)
                        let seen = holder.read { $0 }
                        if !seen.isWhole || seen.copies.count != (seen.stamp == 0 ? 1 : lengths[seen.stamp - 1]) { torn += 1 }
                        if seen.stamp < last { backwards += 1 }
                        last = seen.stamp
                        reads += 1
                        if isDone { break }
                        // The pool may have fewer threads than tasks: let the writer run.
                        if reads % 256 == 0 { await Task.yield() }
                    }
                    return (torn, backwards, reads, last)
                }
            }
            group.addTask {
                var lockedWrong = 0
                for stamp in 1...writes {
                    holder.withLock { $0 = Stamped(stamp, length: lengths[stamp - 1]) }
                    // Readers, locked ones too, may overlap with the next write.
                    if stamp % 64 == 0 {
                        let locked = holder.readLocked { $0 }
                        if locked != Stamped(stamp, length: lengths[stamp - 1]) { lockedWrong += 1 }
                        await Task.yield()
                    }
                }
                done.isSet.store(true, ordering: .releasing)
                return (lockedWrong, 0, 0, writes)
            }
            var all: [(torn: Int, backwards: Int, reads: Int, last: Int)] = []
            for await result in group { all.append(result) }
            return all
        }
        #expect(results.map(\.torn).reduce(0, +) == 0)
        #expect(results.map(\.backwards).reduce(0, +) == 0)
        // Every reader's last read came after the last write was published.
        #expect(results.allSatisfy { $0.last == writes })
        #expect(holder.read { $0 } == Stamped(writes, length: lengths[writes - 1]))
    }
}
