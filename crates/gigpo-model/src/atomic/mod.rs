//! Writing files and directories so that a reader sees the old version or the new one, never a
//! part of either, and so that nothing but the named target is ever replaced.
//!
//! The rules, shared by every file this workspace writes (see `docs/formats.md`):
//!
//! - The new content goes to a temporary file (or directory) in the target's directory, named
//!   `.NAME.gigpo-tmp-PID-XXXXXX` (PID: the writing process; a file keeps its extension after
//!   that: `.curves.png.gigpo-tmp-PID-XXXXXX.png`), is flushed to disk, and is renamed over the
//!   target; the directory is flushed after the rename. A failed write removes its temporary.
//! - A write that was killed leaves its temporary behind. Every write first removes, from the
//!   directory it writes into, the temporaries of this kind whose process no longer runs
//!   ([`remove_stale_temporaries`]); nothing else in the directory is touched.
//! - A symbolic link is written through: the file it points to is replaced and the link stays.
//!   A link to nothing is refused.
//! - A target that exists but is not a regular file (a directory where a file is expected, a
//!   FIFO, a socket, a device) is refused; for [`atomic_dir`] the target must be a directory.
//! - A replaced file keeps its permission bits; a new one gets `0666` less the umask, like any
//!   newly created file. Owner and group are those of the writing process.
//! - The target's directory must exist: these functions never create directories. Callers that
//!   own a directory (a run directory, its `checkpoints/`) create it themselves.

mod error;
mod leftovers;
mod sync;
mod target;
#[cfg(all(test, unix))]
mod tests;

use std::fs;
use std::path::Path;

pub use error::WriteError;
pub use leftovers::remove_stale_temporaries;

use leftovers::{aside_name, temp_prefix, temp_suffix};
use sync::{sync_dir, sync_file, sync_tree};
use target::{Kind, Target};

/// Writes one file atomically: `fill` writes the content to the temporary path it is given,
/// which is then flushed and renamed over `dest` (see the module's rules). A failure leaves
/// `dest` as it was and removes the temporary file.
pub fn atomic_file<E: From<WriteError>>(
    dest: &Path,
    fill: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(), E> {
    let target = Target::of(dest, Kind::File)?;
    remove_stale_temporaries(&target.parent);
    let (prefix, suffix) = (temp_prefix(&target.path), temp_suffix(&target.path));
    let tmp = temp_builder(&prefix, &suffix, Kind::File)
        .tempfile_in(&target.parent)
        .map_err(|e| WriteError::new("create a temporary file in", &target.parent, e))?;
    fill(tmp.path())?;
    target.keep_mode(tmp.path())?;
    sync_file(tmp.path())?;
    tmp.persist(&target.path)
        .map_err(|e| WriteError::new("rename into place", &target.path, e.error))?;
    sync_dir(&target.parent);
    Ok(())
}

/// Writes `bytes` to `dest` atomically (see [`atomic_file`]).
pub fn write_bytes(dest: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    atomic_file(dest, |tmp| {
        fs::write(tmp, bytes).map_err(|e| WriteError::new("write", tmp, e))
    })
}

/// Writes a directory atomically: `fill` writes into a fresh temporary directory next to
/// `dest`, every file in it is flushed, and it replaces `dest` by rename (an existing `dest` is
/// moved aside first and removed afterwards). A failure leaves `dest` as it was. An existing
/// `dest` must be a directory (or a link to one, which is written through).
pub fn atomic_dir<E: From<WriteError>>(
    dest: &Path,
    fill: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(), E> {
    let target = Target::of(dest, Kind::Dir)?;
    remove_stale_temporaries(&target.parent);
    let prefix = temp_prefix(&target.path);
    let tmp = temp_builder(&prefix, "", Kind::Dir)
        .tempdir_in(&target.parent)
        .map_err(|e| WriteError::new("create a temporary directory in", &target.parent, e))?;
    fill(tmp.path())?;
    target.keep_mode(tmp.path())?;
    sync_tree(tmp.path())?;
    let tmp_path = tmp.keep();
    replace_dir(&tmp_path, &target)?;
    Ok(())
}

/// Renames `tmp` to `target`, moving an existing `target` aside first and removing it after.
fn replace_dir(tmp: &Path, target: &Target) -> Result<(), WriteError> {
    let (parent, target, exists) = (&target.parent, &target.path, target.existing.is_some());
    let aside = exists.then(|| parent.join(aside_name(target)));
    if let Some(aside) = &aside {
        if let Err(e) = fs::rename(target, aside) {
            let _ = fs::remove_dir_all(tmp);
            return Err(WriteError::new("move aside", target, e));
        }
    }
    if let Err(e) = fs::rename(tmp, target) {
        if let Some(aside) = &aside {
            let _ = fs::rename(aside, target);
        }
        let _ = fs::remove_dir_all(tmp);
        return Err(WriteError::new("rename into place", target, e));
    }
    sync_dir(parent);
    if let Some(aside) = aside {
        fs::remove_dir_all(&aside).map_err(|e| WriteError::new("remove", &aside, e))?;
    }
    Ok(())
}

/// A temporary file or directory created like any new one: mode `0666` (files) or `0777`
/// (directories) less the umask, not the private `0600`/`0700` of temporary files.
fn temp_builder<'a>(prefix: &'a str, suffix: &'a str, kind: Kind) -> tempfile::Builder<'a, 'a> {
    let mut b = tempfile::Builder::new();
    b.prefix(prefix).suffix(suffix);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = match kind {
            Kind::Dir => 0o777,
            Kind::File => 0o666,
        };
        b.permissions(fs::Permissions::from_mode(mode));
    }
    #[cfg(not(unix))]
    let _ = kind;
    b
}
