//! The names of temporaries and of directories moved aside, and the removal of those that
//! writes of ended processes left behind.

use std::fs;
use std::path::{Path, PathBuf};

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
pub(super) fn temp_prefix(path: &Path) -> String {
    format!(".{}{TEMP_MARK}{}-", file_name(path), std::process::id())
}

/// The target's extension, so that writers choosing a format by it still can.
pub(super) fn temp_suffix(path: &Path) -> String {
    match path.extension() {
        Some(ext) => format!(".{}", ext.to_string_lossy()),
        None => String::new(),
    }
}

/// `.NAME.gigpo-old-PID`: where an existing directory waits while its replacement moves in.
pub(super) fn aside_name(path: &Path) -> String {
    format!(".{}{ASIDE_MARK}{}", file_name(path), std::process::id())
}

/// What a directory entry left by a write is: the PID of its writer, and for a directory moved
/// aside, the name of the target it belongs to.
pub(super) enum Leftover {
    Temporary { pid: u32 },
    Aside { pid: u32, target: String },
}

/// Recognises the names [`temp_prefix`] and [`aside_name`] make; anything else is `None`.
pub(super) fn leftover(name: &str) -> Option<Leftover> {
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
