//! Tests of the write rules (Unix: links, FIFOs, devices and modes).

use super::leftovers::{leftover, Leftover};
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
