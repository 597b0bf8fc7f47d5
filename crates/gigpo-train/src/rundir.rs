//! What a run directory holds, and the rules for starting a run in one that is not empty.
//!
//! A run writes [`RUN_FILES`] into its directory. A fresh run refuses a directory holding any
//! of them (the earlier run would be lost or mixed with the new one) unless told to overwrite,
//! in which case exactly those files are removed first and nothing else in the directory is
//! touched. A run stopped before its first checkpoint restarts from the beginning with the
//! configuration it saved, its earlier metrics kept under a new name (see
//! [`keep_earlier_metrics`]).

use std::path::{Path, PathBuf};

use crate::error::{Result, TrainError};

/// The files and directories a run writes into its run directory.
pub const RUN_FILES: [&str; 7] = [
    "config.toml",
    "metrics.jsonl",
    crate::sft::SFT_CURVE_FILE,
    "checkpoints",
    "tensorboard",
    "curves.png",
    crate::vllm::ADAPTER_DIR,
];

/// Which of [`RUN_FILES`] are present in `run_dir`.
pub fn existing_run_files(run_dir: &Path) -> Vec<&'static str> {
    RUN_FILES
        .iter()
        .copied()
        .filter(|name| std::fs::symlink_metadata(run_dir.join(name)).is_ok())
        .collect()
}

/// Errors when `run_dir` holds the output of a run.
pub fn refuse_earlier_run(run_dir: &Path) -> Result<()> {
    let found = existing_run_files(run_dir);
    if found.is_empty() {
        return Ok(());
    }
    Err(TrainError::RunDirInUse {
        path: run_dir.to_path_buf(),
        found: found.join(", "),
    })
}

/// Removes [`RUN_FILES`] from `run_dir` (a link is removed, not what it points to).
pub fn remove_earlier_run(run_dir: &Path) -> Result<()> {
    for name in existing_run_files(run_dir) {
        let path = run_dir.join(name);
        let meta = std::fs::symlink_metadata(&path).map_err(|e| TrainError::io(&path, e))?;
        let removed = if meta.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(|e| TrainError::io(&path, e))?;
    }
    Ok(())
}

/// Renames `run_dir/metrics.jsonl` to the first free `metrics.before-restart-K.jsonl`
/// (K = 1, 2, ...) and returns the new path; `None` when there is no metrics file.
pub fn keep_earlier_metrics(run_dir: &Path) -> Result<Option<PathBuf>> {
    let current = run_dir.join("metrics.jsonl");
    if !current.exists() {
        return Ok(None);
    }
    let free = (1..)
        .map(|k| run_dir.join(format!("metrics.before-restart-{k}.jsonl")))
        .find(|p| std::fs::symlink_metadata(p).is_err())
        .expect("some name is free");
    std::fs::rename(&current, &free).map_err(|e| TrainError::io(&current, e))?;
    Ok(Some(free))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_or_foreign_directory_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        refuse_earlier_run(dir.path()).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
        refuse_earlier_run(dir.path()).unwrap();
    }

    #[test]
    fn metrics_alone_are_refused_and_removed_only_on_request() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("metrics.jsonl"), "{}\n").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
        let e = refuse_earlier_run(dir.path()).unwrap_err().to_string();
        assert!(e.contains("metrics.jsonl") && e.contains("--resume"), "{e}");
        assert!(e.contains("--force"), "{e}");
        remove_earlier_run(dir.path()).unwrap();
        assert!(!dir.path().join("metrics.jsonl").exists());
        assert!(dir.path().join("notes.txt").exists());
    }

    #[test]
    fn earlier_metrics_get_a_free_name() {
        let dir = tempfile::tempdir().unwrap();
        for k in 1..=2 {
            std::fs::write(dir.path().join("metrics.jsonl"), format!("{k}\n")).unwrap();
            let kept = keep_earlier_metrics(dir.path()).unwrap().unwrap();
            assert!(kept.ends_with(format!("metrics.before-restart-{k}.jsonl")));
            assert_eq!(std::fs::read_to_string(kept).unwrap(), format!("{k}\n"));
        }
        assert_eq!(keep_earlier_metrics(dir.path()).unwrap(), None);
    }
}
