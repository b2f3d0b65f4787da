// Files a config names or is: checked with stat(2) before anything is read, so a directory,
// /dev/zero, a FIFO or a huge file gives a clear message instead of a hang or a Foundation error.

#if canImport(Glibc)
import Glibc
#endif

struct FileProblem: Error { var message: String }

enum FileProblems {
    static let missing = "does not exist"
}

/// What is wrong with `path` as a file to read (nil: a readable regular file).
func fileProblem(_ path: String) -> String? {
    var st = stat()
    guard stat(path, &st) == 0 else {
        switch errno {
        case ENOENT: return FileProblems.missing
        case EACCES: return "cannot be reached (permission denied on a directory of its path)"
        case ENOTDIR: return "does not exist (a component of the path is not a directory)"
        default: return "cannot be opened (\(String(cString: strerror(errno))))"
        }
    }
    switch st.st_mode & S_IFMT {
    case S_IFREG: break
    case S_IFDIR: return "is a directory, not a file"
    case S_IFCHR: return "is a character device, not a regular file"
    case S_IFBLK: return "is a block device, not a regular file"
    case S_IFIFO: return "is a FIFO, not a regular file"
    case S_IFSOCK: return "is a socket, not a regular file"
    default: return "is not a regular file"
    }
    guard access(path, R_OK) == 0 else { return "is not readable (permission denied)" }
    return nil
}

/// Permission bits of `path` (after symlinks), nil when it cannot be stat'ed.
func permissions(_ path: String) -> UInt32? {
    var st = stat()
    guard stat(path, &st) == 0 else { return nil }
    return UInt32(st.st_mode) & 0o7777
}

/// Size of `path` in bytes (after symlinks), nil when it cannot be stat'ed.
func fileSize(_ path: String) -> Int64? {
    var st = stat()
    guard stat(path, &st) == 0 else { return nil }
    return Int64(st.st_size)
}

/// Reads a regular file of at most `limit` bytes.
func readBounded(_ path: String, limit: Int) -> Result<[UInt8], FileProblem> {
    if let problem = fileProblem(path) {
        return .failure(FileProblem(message: problem == FileProblems.missing ? "no such file" : "the config file \(problem)"))
    }
    let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
    guard fd >= 0 else { return .failure(FileProblem(message: "cannot open: \(String(cString: strerror(errno)))")) }
    defer { close(fd) }
    var st = stat()
    guard fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFREG else {
        return .failure(FileProblem(message: "the config file is not a regular file"))
    }
    guard st.st_size <= limit else {
        return .failure(FileProblem(message: "the file is \(st.st_size) bytes: a config may be at most \(limit) bytes"))
    }
    var out: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while out.count <= limit {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 {
            if errno == EINTR { continue }
            return .failure(FileProblem(message: "cannot read: \(String(cString: strerror(errno)))"))
        }
        if n == 0 { break }
        out += chunk[0..<n]
    }
    guard out.count <= limit else {
        return .failure(FileProblem(message: "the file grew past \(limit) bytes while being read"))
    }
    return .success(out)
}
