//! Where a write lands and what is there now: links written through, anything but a regular
//! file (or a directory, for a directory write) refused, the directory required to exist.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::error::WriteError;

/// What a write puts in place: a regular file or a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
}

/// Where a write to some `dest` goes, checked.
pub(super) struct Target {
    /// The path replaced: `dest`, or the file a symbolic link at `dest` points to.
    pub path: PathBuf,
    /// What is there now, if anything.
    pub existing: Option<fs::Metadata>,
    /// The directory of `path`, which exists.
    pub parent: PathBuf,
}

impl Target {
    /// Resolves `dest`, refuses what is there when it is not of `kind`, and requires the
    /// directory to exist.
    pub fn of(dest: &Path, kind: Kind) -> Result<Self, WriteError> {
        let (path, existing) = resolve(dest)?;
        if let Some(meta) = &existing {
            let refusal = match kind {
                Kind::File if !meta.is_file() => Some(format!(
                    "it is {}; only a regular file is replaced",
                    kind_of(meta)
                )),
                Kind::Dir if !meta.is_dir() => {
                    Some(format!("it is {}, not a directory", kind_of(meta)))
                }
                _ => None,
            };
            if let Some(reason) = refusal {
                return Err(WriteError::refuse(dest, reason));
            }
        }
        let parent = existing_parent(&path)?;
        Ok(Target {
            path,
            existing,
            parent,
        })
    }

    /// Gives the temporary `tmp` the permission bits of what it replaces, if anything.
    pub fn keep_mode(&self, tmp: &Path) -> Result<(), WriteError> {
        if let Some(meta) = &self.existing {
            fs::set_permissions(tmp, meta.permissions())
                .map_err(|e| WriteError::new("set permissions of", tmp, e))?;
        }
        Ok(())
    }
}

/// What a file is, in words, for refusals.
fn kind_of(meta: &fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_socket() {
            return "a socket";
        }
        if t.is_block_device() || t.is_char_device() {
            return "a device";
        }
    }
    "not a regular file"
}

/// Where a write to `dest` lands: `dest` itself, or the file a symbolic link points to. Also
/// returns the metadata of what is there now, if anything.
fn resolve(dest: &Path) -> Result<(PathBuf, Option<fs::Metadata>), WriteError> {
    let link = match fs::symlink_metadata(dest) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((dest.to_path_buf(), None)),
        Err(e) => return Err(WriteError::new("inspect", dest, e)),
    };
    if !link.file_type().is_symlink() {
        return Ok((dest.to_path_buf(), Some(link)));
    }
    match fs::canonicalize(dest) {
        Ok(real) => {
            let meta = fs::metadata(&real).map_err(|e| WriteError::new("inspect", &real, e))?;
            Ok((real, Some(meta)))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(WriteError::refuse(
            dest,
            "it is a symbolic link to a file that does not exist".into(),
        )),
        Err(e) => Err(WriteError::new("resolve the link", dest, e)),
    }
}

/// The directory holding `path`, which must exist.
fn existing_parent(path: &Path) -> Result<PathBuf, WriteError> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    match fs::metadata(&parent) {
        Ok(m) if m.is_dir() => Ok(parent),
        Ok(_) => Err(WriteError::refuse(
            path,
            format!("{} is not a directory", parent.display()),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(WriteError::refuse(
            path,
            format!("directory {} does not exist", parent.display()),
        )),
        Err(e) => Err(WriteError::new("inspect", &parent, e)),
    }
}
