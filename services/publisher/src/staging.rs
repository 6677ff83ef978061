//! Model directories in, immutable staged snapshots out.
//!
//! A model directory is accepted only if it is a tree of regular files (symlinks allowed when they
//! resolve to a regular file inside the directory, as in a Hugging Face cache snapshot whose files
//! are links into its blobs; anything escaping the directory is refused). The snapshot is copied
//! into the publisher's state so that what is hashed, uploaded and committed is exactly the same
//! bytes, whatever happens to the source afterwards.
//!
//! Copying goes to `staging/<job>` and is renamed to `staged/<job>` only when complete and
//! fsynced, so a crash never leaves a half snapshot where a whole one is expected.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use taominer_core::config::Profile;
use taominer_core::store::fsync_dir;

use crate::error::{Error, Result};

/// What a valid model directory holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSummary {
    pub files: usize,
    pub bytes: u64,
}

/// One file to stage: where it is read from and where it goes, relative to the snapshot root.
#[derive(Debug)]
struct SourceFile {
    read_from: PathBuf,
    rel: PathBuf,
    executable: bool,
    len: u64,
}

/// Checks a model directory without copying anything.
pub fn inspect(root: &Path, profile: Profile) -> Result<SourceSummary> {
    let (files, _) = scan(root, profile)?;
    Ok(SourceSummary {
        files: files.len(),
        bytes: files.iter().map(|f| f.len).sum(),
    })
}

/// Copies a model directory into `dest` (which must not exist) via `tmp`, durably.
/// `progress` counts bytes copied, so the caller can tell a slow copy from a hung one.
pub fn stage(
    root: &Path,
    profile: Profile,
    tmp: &Path,
    dest: &Path,
    progress: &AtomicU64,
) -> Result<SourceSummary> {
    let (files, dirs) = scan(root, profile)?;
    if tmp.exists() {
        fs::remove_dir_all(tmp).map_err(|e| io_err("cannot clear", tmp, e))?;
    }
    fs::create_dir_all(tmp).map_err(|e| io_err("cannot create", tmp, e))?;
    for d in &dirs {
        let p = tmp.join(d);
        fs::create_dir_all(&p).map_err(|e| io_err("cannot create", &p, e))?;
    }
    let mut bytes = 0u64;
    for f in &files {
        let to = tmp.join(&f.rel);
        let copied = copy_file(&f.read_from, &to, progress)?;
        if copied != f.len {
            return Err(Error::Invalid(format!(
                "{} changed while it was being staged",
                f.read_from.display()
            )));
        }
        // Staged files are read-only: the snapshot is immutable once written.
        let mode = if f.executable { 0o555 } else { 0o444 };
        fs::set_permissions(&to, fs::Permissions::from_mode(mode))
            .map_err(|e| io_err("cannot set permissions on", &to, e))?;
        bytes += copied;
    }
    // Directories deepest first, so each rename/creation below is on disk.
    for d in dirs.iter().rev() {
        fsync_dir(&tmp.join(d))?;
    }
    fsync_dir(tmp)?;
    taominer_core::fault::crash_point("publisher.stage-copied");
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).map_err(|e| io_err("cannot create", parent, e))?;
    }
    fs::rename(tmp, dest).map_err(|e| io_err("cannot rename into place", dest, e))?;
    if let Some(parent) = dest.parent() {
        fsync_dir(parent)?;
    }
    taominer_core::fault::crash_point("publisher.stage-renamed");
    Ok(SourceSummary {
        files: files.len(),
        bytes,
    })
}

/// Copies in slices so `progress` moves during a multi-gigabyte file. `io::copy` between two
/// files uses `copy_file_range(2)` (an in-kernel copy, a reflink where the filesystem can) and
/// falls back to read/write by itself; a `Take` slice keeps that path.
fn copy_file(from: &Path, to: &Path, progress: &AtomicU64) -> Result<u64> {
    const SLICE: u64 = 64 << 20;
    let mut src = File::open(from).map_err(|e| io_err("cannot open", from, e))?;
    let mut dst = File::create(to).map_err(|e| io_err("cannot create", to, e))?;
    let mut total = 0u64;
    loop {
        let n = io::copy(&mut (&mut src).take(SLICE), &mut dst)
            .map_err(|e| io_err("cannot copy to", to, e))?;
        if n == 0 {
            break;
        }
        total += n;
        progress.fetch_add(n, Ordering::Relaxed);
    }
    dst.sync_all().map_err(|e| io_err("cannot fsync", to, e))?;
    Ok(total)
}

fn io_err(action: &'static str, path: &Path, e: io::Error) -> Error {
    Error::Core(taominer_core::Error::io(action, path, e))
}

/// Walks and validates a model directory: files to copy and directories to create.
fn scan(root: &Path, profile: Profile) -> Result<(Vec<SourceFile>, Vec<PathBuf>)> {
    let meta = fs::metadata(root).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => Error::Invalid(format!("{}: no such directory", root.display())),
        _ => Error::Invalid(format!("{}: {e}", root.display())),
    })?;
    if !meta.is_dir() {
        return Err(Error::Invalid(format!(
            "{}: not a directory; publish takes a model directory (config.json, *.safetensors, ...)",
            root.display()
        )));
    }
    let real_root =
        fs::canonicalize(root).map_err(|e| Error::Invalid(format!("{}: {e}", root.display())))?;
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    scan_dir(&real_root, &real_root, Path::new(""), &mut files, &mut dirs)?;
    if files.is_empty() {
        return Err(Error::Invalid(format!(
            "{}: the directory has no files",
            root.display()
        )));
    }
    if profile.is_llm() && !files.iter().any(|f| f.rel == Path::new("config.json")) {
        return Err(Error::Invalid(format!(
            "{}: no config.json; the {profile} profile publishes transformers model directories",
            root.display()
        )));
    }
    Ok((files, dirs))
}

fn scan_dir(
    real_root: &Path,
    dir: &Path,
    rel: &Path,
    files: &mut Vec<SourceFile>,
    dirs: &mut Vec<PathBuf>,
) -> Result<()> {
    let listing = fs::read_dir(dir).map_err(|e| io_err("cannot list", dir, e))?;
    for entry in listing {
        let entry = entry.map_err(|e| io_err("cannot list", dir, e))?;
        let path = entry.path();
        let name = entry.file_name();
        if name.to_str().is_none() {
            return Err(Error::Invalid(format!(
                "{}: file names must be UTF-8",
                path.display()
            )));
        }
        let rel_path = rel.join(&name);
        let meta = fs::symlink_metadata(&path).map_err(|e| io_err("cannot stat", &path, e))?;
        let ft = meta.file_type();
        if ft.is_dir() {
            dirs.push(rel_path.clone());
            scan_dir(real_root, &path, &rel_path, files, dirs)?;
        } else if ft.is_file() {
            files.push(SourceFile {
                read_from: path,
                rel: rel_path,
                executable: meta.permissions().mode() & 0o100 != 0,
                len: meta.len(),
            });
        } else if ft.is_symlink() {
            let target = fs::canonicalize(&path)
                .map_err(|_| Error::Invalid(format!("{}: dangling symlink", path.display())))?;
            if !target.starts_with(real_root) {
                return Err(Error::Invalid(format!(
                    "{}: symlink points outside the model directory (to {}); copy the files in (cp -rL) and publish the copy",
                    path.display(),
                    target.display()
                )));
            }
            let tmeta = fs::metadata(&target).map_err(|e| io_err("cannot stat", &target, e))?;
            if !tmeta.is_file() {
                return Err(Error::Invalid(format!(
                    "{}: symlink to something other than a regular file",
                    path.display()
                )));
            }
            files.push(SourceFile {
                read_from: target,
                rel: rel_path,
                executable: tmeta.permissions().mode() & 0o100 != 0,
                len: tmeta.len(),
            });
        } else {
            return Err(Error::Invalid(format!(
                "{}: not a regular file (device, socket or pipe)",
                path.display()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn model(dir: &Path) {
        fs::write(dir.join("config.json"), b"{}").unwrap();
        fs::write(dir.join("model.safetensors"), vec![7u8; 1000]).unwrap();
    }

    #[test]
    fn stages_a_read_only_copy_and_follows_internal_links() {
        let src = tempfile::tempdir().unwrap();
        model(src.path());
        fs::create_dir(src.path().join("blobs")).unwrap();
        fs::write(src.path().join("blobs/abc"), b"tok").unwrap();
        symlink("blobs/abc", src.path().join("tokenizer.json")).unwrap();
        let state = tempfile::tempdir().unwrap();
        let (tmp, dest) = (
            state.path().join("staging/j"),
            state.path().join("staged/j"),
        );
        let s = stage(
            src.path(),
            Profile::Pretraining,
            &tmp,
            &dest,
            &AtomicU64::new(0),
        )
        .unwrap();
        assert_eq!(s.files, 4);
        assert!(!tmp.exists());
        assert_eq!(fs::read(dest.join("tokenizer.json")).unwrap(), b"tok");
        assert!(!fs::symlink_metadata(dest.join("tokenizer.json"))
            .unwrap()
            .file_type()
            .is_symlink());
        let mode = fs::metadata(dest.join("config.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o444);
    }

    #[test]
    fn refuses_what_it_cannot_publish() {
        let d = tempfile::tempdir().unwrap();
        let missing = d.path().join("nope");
        assert!(inspect(&missing, Profile::Pretraining)
            .unwrap_err()
            .to_string()
            .contains("no such directory"));
        let file = d.path().join("file");
        fs::write(&file, b"x").unwrap();
        assert!(inspect(&file, Profile::Pretraining)
            .unwrap_err()
            .to_string()
            .contains("not a directory"));
        let empty = d.path().join("empty");
        fs::create_dir(&empty).unwrap();
        assert!(inspect(&empty, Profile::Pretraining)
            .unwrap_err()
            .to_string()
            .contains("no files"));
        let noconf = d.path().join("noconf");
        fs::create_dir(&noconf).unwrap();
        fs::write(noconf.join("w.bin"), b"x").unwrap();
        assert!(inspect(&noconf, Profile::Pretraining)
            .unwrap_err()
            .to_string()
            .contains("config.json"));
        assert!(
            inspect(&noconf, Profile::Soundsright).is_ok(),
            "only LLM profiles need config.json"
        );
        let escape = d.path().join("escape");
        fs::create_dir(&escape).unwrap();
        model(&escape);
        symlink(&file, escape.join("leak")).unwrap();
        let e = inspect(&escape, Profile::Pretraining)
            .unwrap_err()
            .to_string();
        assert!(e.contains("outside the model directory"), "{e}");
        let dangling = d.path().join("dangling");
        fs::create_dir(&dangling).unwrap();
        model(&dangling);
        symlink("nowhere", dangling.join("x")).unwrap();
        assert!(inspect(&dangling, Profile::Pretraining)
            .unwrap_err()
            .to_string()
            .contains("dangling"));
    }
}
