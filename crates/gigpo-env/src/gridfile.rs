//! Reading level and map files: small text files, refused before reading when they are larger
//! than any level can be.

use crate::env::EnvError;
use std::io::Read;
use std::path::Path;

/// The largest level or map file read. A Sokoban room of the largest size (255×255 cells)
/// written with a space between cells takes about 260 kB.
pub const MAX_GRID_FILE_BYTES: u64 = 1 << 20;

/// Reads the text of a level or map file (`what`: "level file", "map file"), naming the file
/// in any error and the line for text that is not UTF-8. A file over [`MAX_GRID_FILE_BYTES`]
/// (or a stream that goes on past it) is refused without being read whole.
pub fn read(path: &Path, what: &str) -> Result<String, EnvError> {
    let name = path.display();
    let io = |e: std::io::Error| EnvError::Io(format!("reading {what} {name}: {e}"));
    let too_large = |size: String| {
        EnvError::Config(format!(
            "{what} {name}: {size} bytes, more than a level can take ({MAX_GRID_FILE_BYTES})"
        ))
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    if size > MAX_GRID_FILE_BYTES {
        return Err(too_large(size.to_string()));
    }
    let mut bytes = Vec::new();
    file.take(MAX_GRID_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_GRID_FILE_BYTES {
        return Err(too_large(format!("more than {MAX_GRID_FILE_BYTES}")));
    }
    String::from_utf8(bytes).map_err(|e| {
        let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = good.iter().filter(|&&b| b == b'\n').count() + 1;
        EnvError::Config(format!("{what} {name}: line {line} is not UTF-8 text"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_files_and_bad_bytes_are_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.txt");
        let f = std::fs::File::create(&big).unwrap();
        f.set_len(10_000 * 10_000 * 2).unwrap();
        let e = read(&big, "level file").unwrap_err().to_string();
        assert!(e.contains("big.txt: 200000000 bytes"), "{e}");

        let bad = dir.path().join("bad.txt");
        std::fs::write(&bad, b"# # #\n# P #\n# \xff #\n").unwrap();
        let e = read(&bad, "map file").unwrap_err().to_string();
        assert!(e.ends_with("bad.txt: line 3 is not UTF-8 text"), "{e}");

        let zero = Path::new("/dev/zero");
        if zero.exists() {
            let e = read(zero, "level file").unwrap_err().to_string();
            assert!(e.contains("more than 1048576 bytes"), "{e}");
        }
    }
}
