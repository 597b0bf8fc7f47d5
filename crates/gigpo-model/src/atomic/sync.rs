//! Flushing written files and directories to disk.

use std::fs;
use std::path::Path;

use super::error::WriteError;

/// Flushes an already written file to disk.
pub(super) fn sync_file(path: &Path) -> Result<(), WriteError> {
    fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| WriteError::new("flush", path, e))
}

/// Best effort: directories cannot be flushed on every platform.
pub(super) fn sync_dir(dir: &Path) {
    if let Ok(f) = fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

/// Flushes every file below `dir`, then the directories themselves.
pub(super) fn sync_tree(dir: &Path) -> Result<(), WriteError> {
    let entries = fs::read_dir(dir).map_err(|e| WriteError::new("list", dir, e))?;
    for entry in entries {
        let path = entry.map_err(|e| WriteError::new("list", dir, e))?.path();
        if path.is_dir() {
            sync_tree(&path)?;
        } else if path.is_file() {
            sync_file(&path)?;
        }
    }
    sync_dir(dir);
    Ok(())
}
