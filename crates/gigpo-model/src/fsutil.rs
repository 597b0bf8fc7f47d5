//! File helpers: reading with errors that name the file, and writes through [`crate::atomic`],
//! the one writer of this crate.

use std::fs;
use std::path::{Path, PathBuf};

use crate::atomic::{atomic_file, write_bytes};
use crate::error::{ModelError, Result};

/// `path` when it is a regular file; otherwise [`ModelError::MissingFile`] saying `what` it is
/// for.
pub(crate) fn require_file(path: PathBuf, what: &'static str) -> Result<PathBuf> {
    if path.is_file() {
        Ok(path)
    } else {
        Err(ModelError::MissingFile { path, what })
    }
}

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

/// Reads every tensor of a safetensors file onto `device`. A file that is not one (empty,
/// truncated, a header that does not parse) is an error naming it.
pub fn read_safetensors(
    path: &Path,
    device: &candle_core::Device,
) -> Result<std::collections::HashMap<String, candle_core::Tensor>> {
    candle_core::safetensors::load(path, device).map_err(|e| {
        let reason = match io_reason(e) {
            io if io.kind() != std::io::ErrorKind::Other => io,
            other => std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("not a complete safetensors file ({other})"),
            ),
        };
        ModelError::io("read", path, reason)
    })
}

/// Writes `tensors` to a safetensors file at `path`, atomically (the rules of
/// [`crate::atomic`]). A failure is an error naming the file.
pub fn write_safetensors<K: AsRef<str> + Ord + std::fmt::Display>(
    tensors: &std::collections::HashMap<K, candle_core::Tensor>,
    path: &Path,
) -> Result<()> {
    atomic_file(path, |tmp| {
        candle_core::safetensors::save(tensors, tmp)
            .map_err(|e| ModelError::io("write", path, io_reason(e)))
    })
}

/// The operating system's error behind a candle error, or the candle error as one.
fn io_reason(e: candle_core::Error) -> std::io::Error {
    if let candle_core::Error::Io(io) = e {
        return io;
    }
    let mut cause: Option<&dyn std::error::Error> = Some(&e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return std::io::Error::new(io.kind(), io.to_string());
        }
        cause = c.source();
    }
    std::io::Error::other(e.to_string())
}

/// Writes `bytes` to `path`, atomically.
pub(crate) fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    Ok(write_bytes(path, bytes)?)
}

/// Writes `value` as pretty-printed JSON to `path`, atomically.
pub(crate) fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("JSON value serialises");
    write_file(path, text.as_bytes())
}
