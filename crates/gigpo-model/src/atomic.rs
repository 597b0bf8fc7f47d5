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

use std::fs;
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
    fn new(action: &'static str, path: &Path, source: io::Error) -> Self {
        Self {
            action,
            path: path.to_path_buf(),
            source,
        }
    }

    fn refuse(path: &Path, reason: String) -> Self {
        Self::new(
            "write",
            path,
            io::Error::new(io::ErrorKind::InvalidInput, reason),
        )
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

/// Marks a temporary file or directory of an unfinished write.
const TEMP_MARK: &str = ".gigpo-tmp-";
/// Marks an older directory moved aside while a new one is renamed into place.
const ASIDE_MARK: &str = ".gigpo-old-";

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `.NAME.gigpo-tmp-PID-`: the random part follows.
fn temp_prefix(path: &Path) -> String {
    format!(".{}{TEMP_MARK}{}-", file_name(path), std::process::id())
}

/// The target's extension, so that writers choosing a format by it still can.
fn temp_suffix(path: &Path) -> String {
    match path.extension() {
        Some(ext) => format!(".{}", ext.to_string_lossy()),
        None => String::new(),
    }
}

/// `.NAME.gigpo-old-PID`: where an existing directory waits while its replacement moves in.
fn aside_name(path: &Path) -> String {
    format!(".{}{ASIDE_MARK}{}", file_name(path), std::process::id())
}

/// What a directory entry left by a write is: the PID of its writer, and for a directory moved
/// aside, the name of the target it belongs to.
enum Leftover {
    Temporary { pid: u32 },
    Aside { pid: u32, target: String },
}

/// Recognises the names [`temp_prefix`] and [`aside_name`] make; anything else is `None`.
fn leftover(name: &str) -> Option<Leftover> {
    let rest = name.strip_prefix('.')?;
    let (target, after, aside) = match rest.rfind(TEMP_MARK) {
        Some(i) => (&rest[..i], &rest[i + TEMP_MARK.len()..], false),
        None => {
            let i = rest.rfind(ASIDE_MARK)?;
            (&rest[..i], &rest[i + ASIDE_MARK.len()..], true)
        }
    };
    let digits = after.split('-').next()?;
    if target.is_empty() || digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let pid = digits.parse().ok()?;
    if aside {
        // Made whole by `aside_name`: nothing may follow the PID.
        (digits.len() == after.len()).then(|| Leftover::Aside {
            pid,
            target: target.to_string(),
        })
    } else {
        (after.len() > digits.len() + 1).then_some(Leftover::Temporary { pid })
    }
}

/// Whether process `pid` runs on this machine. Where that cannot be told (no `/proc`), every
/// process counts as running, so that nothing is removed.
fn process_runs(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    let proc = Path::new("/proc");
    !proc.join("self").exists() || proc.join(pid.to_string()).exists()
}

/// Removes from `dir` what writes of processes that no longer run left behind: temporary files
/// and directories (`.NAME.gigpo-tmp-PID-XXXXXX`), and directories moved aside
/// (`.NAME.gigpo-old-PID`), which are removed when `NAME` exists and otherwise renamed back to
/// `NAME` (the write stopped between moving the old directory aside and moving the new one in).
/// Temporaries of running processes and every other entry are left alone. Best effort: what
/// cannot be removed stays. Returns what was removed or restored.
pub fn remove_stale_temporaries(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut done = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let cleaned = match leftover(&name) {
            Some(Leftover::Temporary { pid }) if !process_runs(pid) => remove_entry(&path),
            Some(Leftover::Aside { pid, target }) if !process_runs(pid) => {
                let target = dir.join(target);
                match fs::symlink_metadata(&target) {
                    Ok(_) => remove_entry(&path),
                    Err(_) => fs::rename(&path, &target).is_ok(),
                }
            }
            _ => false,
        };
        if cleaned {
            done.push(path);
        }
    }
    done
}

/// Removes a file, a link or a whole directory; whether it worked.
fn remove_entry(path: &Path) -> bool {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).is_ok(),
        Ok(_) => fs::remove_file(path).is_ok(),
        Err(_) => false,
    }
}

/// Writes one file atomically: `fill` writes the content to the temporary path it is given,
/// which is then flushed and renamed over `dest` (see the module's rules). A failure leaves
/// `dest` as it was and removes the temporary file.
pub fn atomic_file<E: From<WriteError>>(
    dest: &Path,
    fill: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(), E> {
    let (target, existing) = resolve(dest)?;
    if let Some(meta) = &existing {
        if !meta.is_file() {
            let reason = format!("it is {}; only a regular file is replaced", kind_of(meta));
            return Err(WriteError::refuse(dest, reason).into());
        }
    }
    let parent = existing_parent(&target)?;
    remove_stale_temporaries(&parent);
    let (prefix, suffix) = (temp_prefix(&target), temp_suffix(&target));
    let tmp = temp_builder(&prefix, &suffix, false)
        .tempfile_in(&parent)
        .map_err(|e| WriteError::new("create a temporary file in", &parent, e))?;
    fill(tmp.path())?;
    if let Some(meta) = &existing {
        fs::set_permissions(tmp.path(), meta.permissions())
            .map_err(|e| WriteError::new("set permissions of", tmp.path(), e))?;
    }
    sync_file(tmp.path())?;
    tmp.persist(&target)
        .map_err(|e| WriteError::new("rename into place", &target, e.error))?;
    sync_dir(&parent);
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
    let (target, existing) = resolve(dest)?;
    if let Some(meta) = &existing {
        if !meta.is_dir() {
            let reason = format!("it is {}, not a directory", kind_of(meta));
            return Err(WriteError::refuse(dest, reason).into());
        }
    }
    let parent = existing_parent(&target)?;
    remove_stale_temporaries(&parent);
    let prefix = temp_prefix(&target);
    let tmp = temp_builder(&prefix, "", true)
        .tempdir_in(&parent)
        .map_err(|e| WriteError::new("create a temporary directory in", &parent, e))?;
    fill(tmp.path())?;
    if let Some(meta) = &existing {
        fs::set_permissions(tmp.path(), meta.permissions())
            .map_err(|e| WriteError::new("set permissions of", tmp.path(), e))?;
    }
    sync_tree(tmp.path())?;
    let tmp_path = tmp.keep();
    replace_dir(&tmp_path, &target, existing.is_some(), &parent)?;
    Ok(())
}

/// Renames `tmp` to `target`, moving an existing `target` aside first and removing it after.
fn replace_dir(tmp: &Path, target: &Path, exists: bool, parent: &Path) -> Result<(), WriteError> {
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
fn temp_builder<'a>(prefix: &'a str, suffix: &'a str, dir: bool) -> tempfile::Builder<'a, 'a> {
    let mut b = tempfile::Builder::new();
    b.prefix(prefix).suffix(suffix);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = if dir { 0o777 } else { 0o666 };
        b.permissions(fs::Permissions::from_mode(mode));
    }
    #[cfg(not(unix))]
    let _ = dir;
    b
}

/// Flushes an already written file to disk.
fn sync_file(path: &Path) -> Result<(), WriteError> {
    fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| WriteError::new("flush", path, e))
}

/// Best effort: directories cannot be flushed on every platform.
fn sync_dir(dir: &Path) {
    if let Ok(f) = fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

/// Flushes every file below `dir`, then the directories themselves.
fn sync_tree(dir: &Path) -> Result<(), WriteError> {
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

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn writes_through_a_symlink_and_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.jsonl");
        let link = dir.path().join("link.jsonl");
        fs::write(&real, "old").unwrap();
        std::os::unix::fs::symlink("real.jsonl", &link).unwrap();
        write_bytes(&link, b"new").unwrap();
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read_to_string(&real).unwrap(), "new");
    }

    #[test]
    fn refuses_a_dangling_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("missing", &link).unwrap();
        let err = write_bytes(&link, b"x").unwrap_err().to_string();
        assert!(err.contains("link"), "{err}");
        assert!(err.contains("does not exist"), "{err}");
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[test]
    fn refuses_a_fifo_and_leaves_it() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if !made.map(|s| s.success()).unwrap_or(false) {
            return; // no mkfifo on this system
        }
        let err = write_bytes(&fifo, b"x").unwrap_err().to_string();
        assert!(err.contains("pipe") && err.contains("FIFO"), "{err}");
        use std::os::unix::fs::FileTypeExt;
        assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
    }

    #[test]
    fn refuses_a_device() {
        let null = Path::new("/dev/null");
        if !null.exists() {
            return;
        }
        let err = write_bytes(null, b"x").unwrap_err().to_string();
        assert!(err.contains("/dev/null") && err.contains("device"), "{err}");
    }

    #[test]
    fn refuses_a_directory_where_a_file_is_expected() {
        let dir = tempfile::tempdir().unwrap();
        let err = write_bytes(dir.path(), b"x").unwrap_err().to_string();
        assert!(err.contains("a directory"), "{err}");
    }

    #[test]
    fn keeps_the_mode_of_a_replaced_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        write_bytes(&path, b"new").unwrap();
        assert_eq!(mode(&path), 0o640);
        assert_eq!(fs::read_to_string(&path).unwrap(), "new");
    }

    #[test]
    fn a_new_file_is_not_private_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.jsonl");
        write_bytes(&path, b"x").unwrap();
        // 0666 less the umask; any usual umask leaves the owner's read and write and more.
        assert_ne!(mode(&path), 0o600);
        assert_eq!(mode(&path) & 0o600, 0o600);
    }

    #[test]
    fn a_missing_directory_is_an_error_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("out.jsonl");
        let err = write_bytes(&path, b"x").unwrap_err().to_string();
        assert!(
            err.contains("missing") && err.contains("does not exist"),
            "{err}"
        );
        assert!(!dir.path().join("missing").exists());
    }

    #[test]
    fn a_failed_fill_leaves_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        fs::write(&path, "old").unwrap();
        let err = atomic_file(&path, |_| -> Result<(), WriteError> {
            Err(WriteError::refuse(Path::new("x"), "failed".into()))
        });
        assert!(err.is_err());
        assert_eq!(fs::read_to_string(&path).unwrap(), "old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    /// The PID of a process that has ended.
    fn ended_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn temporaries_are_named_by_target_and_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("curves.png");
        let seen = std::cell::RefCell::new(String::new());
        atomic_file(&path, |tmp| {
            *seen.borrow_mut() = tmp.file_name().unwrap().to_string_lossy().into_owned();
            write_bytes(tmp, b"png")
        })
        .unwrap();
        let name = seen.into_inner();
        let prefix = format!(".curves.png.gigpo-tmp-{}-", std::process::id());
        assert!(
            name.starts_with(&prefix) && name.ends_with(".png"),
            "{name}"
        );
        assert!(matches!(leftover(&name), Some(Leftover::Temporary { .. })));
        assert_eq!(names(dir.path()), ["curves.png"]);
    }

    #[test]
    fn a_write_removes_stale_temporaries_and_only_those() {
        let dir = tempfile::tempdir().unwrap();
        let dead = ended_pid();
        let mut live = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let stale_file = format!(".out.jsonl.gigpo-tmp-{dead}-a1B2c3.jsonl");
        let stale_dir = format!(".iter-3.gigpo-tmp-{dead}-Zz9yY8");
        let running = format!(".out.jsonl.gigpo-tmp-{}-q1w2e3.jsonl", live.id());
        let ours = format!(".other.gigpo-tmp-{}-r4t5y6", std::process::id());
        let foreign = [
            ".out.jsonl.tmp".to_string(),
            ".out.jsonl.gigpo-tmp-abc-def".to_string(),
            format!(".gigpo-tmp-{dead}-abcdef"),
            format!("notes.gigpo-tmp-{dead}-abcdef"),
            "out.jsonl.bak".to_string(),
        ];
        for name in [&stale_file, &running, &ours].into_iter().chain(&foreign) {
            fs::write(dir.path().join(name), "x").unwrap();
        }
        fs::create_dir(dir.path().join(&stale_dir)).unwrap();
        fs::write(
            dir.path().join(&stale_dir).join("trainable.safetensors"),
            "x",
        )
        .unwrap();

        write_bytes(&dir.path().join("out.jsonl"), b"new").unwrap();
        let _ = live.kill();
        let _ = live.wait();

        let mut expected: Vec<String> = foreign.to_vec();
        expected.extend([running, ours, "out.jsonl".to_string()]);
        expected.sort();
        assert_eq!(names(dir.path()), expected);
    }

    #[test]
    fn a_directory_left_aside_is_removed_or_restored() {
        let dir = tempfile::tempdir().unwrap();
        let dead = ended_pid();
        // The new `model` is in place: the old one moved aside is removed.
        fs::create_dir(dir.path().join("model")).unwrap();
        fs::create_dir(dir.path().join(format!(".model.gigpo-old-{dead}"))).unwrap();
        // `ckpt` never came back: the one moved aside is all there is, and is restored.
        let aside = dir.path().join(format!(".ckpt.gigpo-old-{dead}"));
        fs::create_dir(&aside).unwrap();
        fs::write(aside.join("state.json"), "{}").unwrap();
        let done = remove_stale_temporaries(dir.path());
        assert_eq!(done.len(), 2);
        assert_eq!(names(dir.path()), ["ckpt", "model"]);
        assert_eq!(
            fs::read_to_string(dir.path().join("ckpt/state.json")).unwrap(),
            "{}"
        );
    }

    #[test]
    fn a_directory_replaces_a_directory_and_refuses_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("model");
        for content in ["one", "two"] {
            atomic_dir(&target, |tmp| {
                write_bytes(&tmp.join("f"), content.as_bytes())
            })
            .unwrap();
            assert_eq!(fs::read_to_string(target.join("f")).unwrap(), content);
        }
        let file = dir.path().join("file");
        fs::write(&file, "keep").unwrap();
        let err = atomic_dir(&file, |_| Ok::<(), WriteError>(())).unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");
        assert_eq!(fs::read_to_string(&file).unwrap(), "keep");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}
