//! The error of a write.

use std::io;
use std::path::{Path, PathBuf};

/// A write that could not be done, naming the path and what was being done.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {}: {source}", path.display())]
pub struct WriteError {
    /// What was being done ("write", "rename into place", ...).
    pub action: &'static str,
    /// The file or directory.
    pub path: PathBuf,
    /// The reason.
    #[source]
    pub source: io::Error,
}

impl WriteError {
    pub(super) fn new(action: &'static str, path: &Path, source: io::Error) -> Self {
        Self {
            action,
            path: path.to_path_buf(),
            source,
        }
    }

    pub(super) fn refuse(path: &Path, reason: String) -> Self {
        Self::new(
            "write",
            path,
            io::Error::new(io::ErrorKind::InvalidInput, reason),
        )
    }
}
