//! Atomic writes of files and directories.

use std::io::Write;
use std::path::Path;

use crate::error::{Result, TrainError};

/// Writes `bytes` to `path` through a temporary file in the same directory, synced, then renamed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = parent(path);
    std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| TrainError::io(dir, e))?;
    tmp.write_all(bytes).map_err(|e| TrainError::io(path, e))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| TrainError::io(path, e))?;
    tmp.persist(path)
        .map_err(|e| TrainError::io(path, e.error))?;
    sync_dir(dir);
    Ok(())
}

/// Builds a directory at `target` atomically: `fill` writes into a fresh temporary directory
/// next to it, every file is synced, and the directory is renamed into place (replacing an
/// older one).
pub fn write_dir_atomic(target: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let dir = parent(target);
    std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    let tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempdir_in(dir)
        .map_err(|e| TrainError::io(dir, e))?;
    fill(tmp.path())?;
    sync_tree(tmp.path())?;
    if target.exists() {
        std::fs::remove_dir_all(target).map_err(|e| TrainError::io(target, e))?;
    }
    let path = tmp.keep();
    std::fs::rename(&path, target).map_err(|e| TrainError::io(target, e))?;
    sync_dir(dir);
    Ok(())
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn sync_tree(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| TrainError::io(dir, e))? {
        let p = entry.map_err(|e| TrainError::io(dir, e))?.path();
        if p.is_dir() {
            sync_tree(&p)?;
        } else {
            std::fs::File::open(&p)
                .and_then(|f| f.sync_all())
                .map_err(|e| TrainError::io(&p, e))?;
        }
    }
    sync_dir(dir);
    Ok(())
}

/// Best effort: directories cannot be synced on every platform.
fn sync_dir(dir: &Path) {
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = f.sync_all();
    }
}
