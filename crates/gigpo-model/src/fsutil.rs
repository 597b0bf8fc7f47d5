//! File helpers: reading with errors that name the file, and plain writes into fresh
//! directories (atomic replacement is [`crate::atomic`]).

use std::fs;
use std::io::Write;
use std::path::Path;

use crate::error::{ModelError, Result};

/// Reads a text file.
pub(crate) fn read_text(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|e| ModelError::io("read", path, e))
}

/// Reads and parses a JSON file.
pub(crate) fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = read_text(path)?;
    serde_json::from_str(&text).map_err(|e| ModelError::Json {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Writes `bytes` to `path` and flushes it to disk.
pub(crate) fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = fs::File::create(path).map_err(|e| ModelError::io("create", path, e))?;
    f.write_all(bytes)
        .map_err(|e| ModelError::io("write", path, e))?;
    f.sync_all().map_err(|e| ModelError::io("sync", path, e))
}
