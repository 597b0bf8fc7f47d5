//! File helpers: reading with errors that name the file, and atomic writes.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

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

/// Flushes an already written file to disk.
pub(crate) fn sync_file(path: &Path) -> Result<()> {
    fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| ModelError::io("sync", path, e))
}

/// Writes a directory atomically: `fill` writes into a fresh temporary directory next to
/// `dest`, which then replaces `dest` by rename (an existing `dest` is moved aside first and
/// removed afterwards). A failure leaves `dest` as it was.
pub(crate) fn atomic_dir(dest: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).map_err(|e| ModelError::io("create directory", &parent, e))?;
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}.tmp"))
        .tempdir_in(&parent)
        .map_err(|e| ModelError::io("create temporary directory in", &parent, e))?;
    fill(tmp.path())?;
    let tmp_path = tmp.keep();
    sync_tree(&tmp_path)?;
    let old = if dest.exists() {
        let aside = parent.join(format!(".{name}.old-{}", std::process::id()));
        fs::rename(dest, &aside).map_err(|e| ModelError::io("move aside", dest, e))?;
        Some(aside)
    } else {
        None
    };
    if let Err(e) = fs::rename(&tmp_path, dest) {
        if let Some(aside) = &old {
            let _ = fs::rename(aside, dest);
        }
        let _ = fs::remove_dir_all(&tmp_path);
        return Err(ModelError::io("rename into place", dest, e));
    }
    sync_dir(&parent)?;
    if let Some(aside) = old {
        fs::remove_dir_all(&aside).map_err(|e| ModelError::io("remove", &aside, e))?;
    }
    Ok(())
}

/// Writes one file atomically: `fill` writes to a temporary path in the same directory, which
/// is flushed and renamed to `dest`.
pub(crate) fn atomic_file(dest: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).map_err(|e| ModelError::io("create directory", &parent, e))?;
    let tmp = tempfile::NamedTempFile::new_in(&parent)
        .map_err(|e| ModelError::io("create temporary file in", &parent, e))?;
    fill(tmp.path())?;
    sync_file(tmp.path())?;
    tmp.persist(dest)
        .map_err(|e| ModelError::io("rename into place", dest, e.error))?;
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| ModelError::io("sync", dir, e))
}

/// Flushes every file directly inside `dir`, then the directory itself.
fn sync_tree(dir: &Path) -> Result<()> {
    let entries = fs::read_dir(dir).map_err(|e| ModelError::io("list", dir, e))?;
    for entry in entries {
        let path = entry.map_err(|e| ModelError::io("list", dir, e))?.path();
        if path.is_file() {
            sync_file(&path)?;
        }
    }
    sync_dir(dir)
}
