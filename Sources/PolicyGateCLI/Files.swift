import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// Files are read and written through the C library so that failures carry the system's own
// reason ("No such file or directory"), the same on every platform.

/// Why `path` cannot be opened for reading (`No such file or directory`), or `nil` if it can.
func unreadable(_ path: String) -> String? {
    var isDirectory: ObjCBool = false
    if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue {
        return "it is a directory"
    }
    guard let file = fopen(path, "rb") else { return String(cString: strerror(errno)) }
    fclose(file)
    return nil
}

/// Why `path` cannot be written (`No such file or directory` for a missing directory), or `nil`
/// if it can. Leaves an existing file as it was and removes one it had to create.
func unwritable(_ path: String) -> String? {
    var isDirectory: ObjCBool = false
    let existed = FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory)
    if existed && isDirectory.boolValue { return "it is a directory" }
    // Appending creates the file if need be and does not truncate it.
    guard let file = fopen(path, "ab") else { return String(cString: strerror(errno)) }
    fclose(file)
    if !existed { unlink(path) }
    return nil
}

/// Writes `text` to `path`, replacing the file; the system's reason when that fails.
func writeFile(_ path: String, _ text: String) -> String? {
    guard let file = fopen(path, "wb") else { return String(cString: strerror(errno)) }
    let bytes = Array(text.utf8)
    let written = bytes.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, file) }
    let failed = written != bytes.count ? String(cString: strerror(errno)) : nil
    return fclose(file) != 0 ? failed ?? String(cString: strerror(errno)) : failed
}

/// The text of a file, or why it cannot be read.
func readText(_ path: String) -> Result<String, FileFailure> {
    if let reason = unreadable(path) { return .failure(FileFailure(message: reason)) }
    guard let data = FileManager.default.contents(atPath: path) else {
        return .failure(FileFailure(message: "the file cannot be read"))
    }
    guard let text = String(validating: data, as: UTF8.self) else {
        return .failure(FileFailure(message: "the file is not UTF-8 text"))
    }
    return .success(text)
}

/// Why a file could not be read or written.
struct FileFailure: Error { var message: String }
