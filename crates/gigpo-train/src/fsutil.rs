//! Atomic writes of files and directories, with the rules of [`gigpo_model::atomic`]: through
//! a temporary in the same directory, flushed, renamed; symbolic links written through; FIFOs,
//! devices and other non-regular targets refused; the mode of a replaced file kept; missing
//! directories an error, never created.

use std::path::Path;

use crate::error::{Result, TrainError};

/// Writes `bytes` to `path` through a temporary file in the same directory, synced, then renamed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    Ok(gigpo_model::atomic::write_bytes(path, bytes)?)
}

/// Builds a directory at `target` atomically: `fill` writes into a fresh temporary directory
/// next to it, every file is synced, and the directory is renamed into place (replacing an
/// older one).
pub fn write_dir_atomic(target: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    gigpo_model::atomic::atomic_dir::<TrainError>(target, fill)
}
