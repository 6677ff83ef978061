//! The hashes validators recompute, reproduced exactly.
//!
//! * [`model_hash`]: taoverse `get_hash_of_directory` — for each file in an `os.walk` of sorted
//!   directories and sorted file names, base64(sha256(contents)); the directory hash is sha256
//!   over those base64 strings, base64-encoded. File names are not hashed.
//! * [`secure_hash`]: taoverse `get_hash_of_two_strings(model_hash, hotkey)`, base64(sha256(a+b)).
//! * [`content_hash`]: SoundsRight `get_directory_content_hash` — sha256 over relpath then
//!   contents of each file, skipping `.git` and files named `.lock` / `.metadata`.
//! * [`git_tree_id`]: git's tree object id of a directory, the revision an offline snapshot is
//!   committed under (no Hub commit exists offline; git itself can recompute this id).
//!
//! Walk order is part of the format, so it is spelled out once in [`walk`].

use std::fs::{self, File};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::error::IoContext;
use crate::{Error, Result};

/// Read buffer for hashing. Any size gives the same digest; 1 MiB keeps syscalls rare on
/// multi-gigabyte safetensors files.
const CHUNK: usize = 1 << 20;

/// base64(sha256(contents of `path`)), taoverse `get_hash_of_file`.
pub fn file_hash(path: &Path) -> Result<String> {
    Ok(BASE64.encode(sha256_file(path, &AtomicU64::new(0))?))
}

fn sha256_file(path: &Path, progress: &AtomicU64) -> Result<[u8; 32]> {
    let mut file = File::open(path).ctx("cannot open", path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = file.read(&mut buf).ctx("cannot read", path)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        progress.fetch_add(n as u64, Ordering::Relaxed);
    }
    Ok(hasher.finalize().into())
}

/// One entry of a directory walk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalkEntry {
    /// Full path.
    pub path: PathBuf,
    /// Path relative to the walked root, with `/` separators.
    pub rel: String,
}

/// Python's `os.walk(root)` with `dirnames.sort()` and `sorted(filenames)`, top-down: the files of a
/// directory come before those of its subdirectories, which are visited in sorted order.
///
/// As in `os.walk`, a symlink to a file counts as a file (and is read through), a symlink to a
/// directory is listed but not descended into, and names sort by code point (byte order of UTF-8).
/// `skip_dir` prunes directories by name.
pub fn walk(root: &Path, skip_dir: &dyn Fn(&str) -> bool) -> Result<Vec<WalkEntry>> {
    let mut out = Vec::new();
    walk_into(root, root, skip_dir, &mut out)?;
    Ok(out)
}

fn walk_into(
    root: &Path,
    dir: &Path,
    skip_dir: &dyn Fn(&str) -> bool,
    out: &mut Vec<WalkEntry>,
) -> Result<()> {
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    for entry in fs::read_dir(dir).ctx("cannot list", dir)? {
        let entry = entry.ctx("cannot list", dir)?;
        let path = entry.path();
        let name = entry.file_name();
        let file_type = entry.file_type().ctx("cannot stat", &path)?;
        // os.walk classifies with is_dir(), which follows symlinks.
        let is_dir = if file_type.is_symlink() {
            fs::metadata(&path).map(|m| m.is_dir()).unwrap_or(false)
        } else {
            file_type.is_dir()
        };
        if is_dir {
            if !file_type.is_symlink() {
                dirs.push((name, path));
            }
        } else {
            files.push((name, path));
        }
    }
    files.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    dirs.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    for (_, path) in files {
        let rel = relative(root, &path)?;
        out.push(WalkEntry { path, rel });
    }
    for (name, path) in dirs {
        let name_str = name.to_str().ok_or_else(|| non_utf8(&path))?;
        if !skip_dir(name_str) {
            walk_into(root, &path, skip_dir, out)?;
        }
    }
    Ok(())
}

fn relative(root: &Path, path: &Path) -> Result<String> {
    let rel = path.strip_prefix(root).unwrap_or(path);
    let s = rel.to_str().ok_or_else(|| non_utf8(path))?;
    Ok(s.to_string())
}

fn non_utf8(path: &Path) -> Error {
    Error::Model(format!(
        "{}: file names must be UTF-8 (validators read them as Python str)",
        path.display()
    ))
}

/// taoverse `get_hash_of_directory`: the model hash validators compute on the downloaded snapshot.
///
/// File hashes are independent, so they are computed on all cores and then fed to the directory
/// hash in walk order; the result is identical to the sequential Python.
pub fn model_hash(dir: &Path) -> Result<String> {
    model_hash_with(dir, &AtomicU64::new(0))
}

/// [`model_hash`], counting the bytes hashed into `progress` (for progress bars).
pub fn model_hash_with(dir: &Path, progress: &AtomicU64) -> Result<String> {
    let entries = walk(dir, &|_| false)?;
    let paths: Vec<&Path> = entries.iter().map(|e| e.path.as_path()).collect();
    Ok(model_hash_of_digests(&file_digests_with(&paths, progress)?))
}

/// The taoverse directory hash from the sha256 of each file, in walk order.
pub fn model_hash_of_digests(digests: &[[u8; 32]]) -> String {
    let mut dir_hash = Sha256::new();
    for d in digests {
        dir_hash.update(BASE64.encode(d).as_bytes());
    }
    BASE64.encode(dir_hash.finalize())
}

/// sha256 of each file, computed on all cores, in the order given. The same digest is the
/// taoverse file hash (base64) and the Git LFS object id (hex), so one pass serves both.
pub fn file_digests(paths: &[&Path]) -> Result<Vec<[u8; 32]>> {
    file_digests_with(paths, &AtomicU64::new(0))
}

/// [`file_digests`], counting the bytes hashed into `progress`.
pub fn file_digests_with(paths: &[&Path], progress: &AtomicU64) -> Result<Vec<[u8; 32]>> {
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(paths.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut results: Vec<(usize, Result<[u8; 32]>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(path) = paths.get(i) else { break };
                        out.push((i, sha256_file(path, progress)));
                    }
                    out
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_default())
            .collect()
    });
    if results.len() != paths.len() {
        return Err(Error::Model("a hashing thread panicked".into()));
    }
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// taoverse `get_hash_of_two_strings`: base64(sha256(a + b)).
pub fn hash_of_two_strings(a: &str, b: &str) -> String {
    let mut h = Sha256::new();
    h.update(a.as_bytes());
    h.update(b.as_bytes());
    BASE64.encode(h.finalize())
}

/// The secure hash committed on chain: the model hash bound to the miner's hotkey.
pub fn secure_hash(model_hash: &str, hotkey_ss58: &str) -> String {
    hash_of_two_strings(model_hash, hotkey_ss58)
}

/// SoundsRight `get_directory_content_hash`.
///
/// Upstream sorts file names but leaves subdirectories in the filesystem's listing order, so for
/// a repository with more than one subdirectory its value depends on the validator's disk. We sort
/// subdirectories too (the only reproducible choice); for flat repositories, the usual case, the
/// two agree exactly.
pub fn content_hash(dir: &Path) -> Result<String> {
    content_hash_with(dir, &AtomicU64::new(0))
}

/// [`content_hash`], counting the bytes hashed into `progress`.
pub fn content_hash_with(dir: &Path, progress: &AtomicU64) -> Result<String> {
    let mut h = Sha256::new();
    for entry in walk(dir, &|name| name == ".git")? {
        let name = entry.rel.rsplit('/').next().unwrap_or(&entry.rel);
        if name == ".lock" || name == ".metadata" {
            continue;
        }
        h.update(entry.rel.as_bytes());
        let contents = fs::read(&entry.path).ctx("cannot read", &entry.path)?;
        h.update(&contents);
        progress.fetch_add(contents.len() as u64, Ordering::Relaxed);
    }
    Ok(BASE64.encode(h.finalize()))
}

/// The id git gives the tree of `dir` (`git add -A && git write-tree`), as 40 hex digits.
///
/// Files are blobs with mode 100644, or 100755 when executable by the owner; empty directories
/// are left out, as git does. Symlinks are not supported (a staged snapshot has none).
pub fn git_tree_id(dir: &Path) -> Result<String> {
    tree_id(dir)?
        .map(hex::encode)
        .ok_or_else(|| Error::Model(format!("{}: no files to make a tree of", dir.display())))
}

/// (sort key, mode, name, id); git sorts trees as if their name ended in '/'.
type TreeEntry = (Vec<u8>, &'static str, Vec<u8>, [u8; 20]);

fn tree_id(dir: &Path) -> Result<Option<[u8; 20]>> {
    let mut entries: Vec<TreeEntry> = Vec::new();
    for entry in fs::read_dir(dir).ctx("cannot list", dir)? {
        let entry = entry.ctx("cannot list", dir)?;
        let path = entry.path();
        let name = entry.file_name().as_bytes().to_vec();
        let meta = fs::symlink_metadata(&path).ctx("cannot stat", &path)?;
        if meta.is_dir() {
            if let Some(id) = tree_id(&path)? {
                let mut key = name.clone();
                key.push(b'/');
                entries.push((key, "40000", name, id));
            }
        } else if meta.is_file() {
            let mode = if meta.permissions().mode() & 0o100 != 0 {
                "100755"
            } else {
                "100644"
            };
            entries.push((name.clone(), mode, name, blob_id(&path, meta.len())?));
        } else {
            return Err(Error::Model(format!(
                "{}: only regular files and directories can be staged",
                path.display()
            )));
        }
    }
    if entries.is_empty() {
        return Ok(None);
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut body = Vec::new();
    for (_, mode, name, id) in &entries {
        body.extend_from_slice(mode.as_bytes());
        body.push(b' ');
        body.extend_from_slice(name);
        body.push(0);
        body.extend_from_slice(id);
    }
    let mut h = Sha1::new();
    h.update(format!("tree {}\0", body.len()).as_bytes());
    h.update(&body);
    Ok(Some(h.finalize().into()))
}

fn blob_id(path: &Path, len: u64) -> Result<[u8; 20]> {
    let mut file = File::open(path).ctx("cannot open", path)?;
    let mut h = Sha1::new();
    h.update(format!("blob {len}\0").as_bytes());
    let mut buf = vec![0u8; CHUNK];
    let mut seen = 0u64;
    loop {
        let n = file.read(&mut buf).ctx("cannot read", path)?;
        if n == 0 {
            break;
        }
        seen += n as u64;
        h.update(&buf[..n]);
    }
    if seen != len {
        return Err(Error::Model(format!(
            "{}: changed while it was being hashed",
            path.display()
        )));
    }
    Ok(h.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_test_vector() {
        // taoverse tests/model/test_model_utils.py
        assert_eq!(
            hash_of_two_strings("hello", "world"),
            "k2oYXKqiZrucvpgengXLeM1zKwsygOuURBK7b4+PB68="
        );
    }

    #[test]
    fn walk_is_top_down_with_sorted_names() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::create_dir_all(r.join("b/c")).unwrap();
        fs::create_dir_all(r.join("a")).unwrap();
        for f in ["z.txt", "b/c/x", "b/y", "a/w", "B"] {
            fs::write(r.join(f), f).unwrap();
        }
        let rels: Vec<_> = walk(r, &|_| false)
            .unwrap()
            .into_iter()
            .map(|e| e.rel)
            .collect();
        assert_eq!(rels, ["B", "z.txt", "a/w", "b/y", "b/c/x"]);
    }

    #[test]
    fn single_file_model_hash_is_hash_of_its_base64() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("f"), b"abc").unwrap();
        // sha256("abc") in base64, then sha256 of that string.
        let file_b64 = "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=";
        assert_eq!(file_hash(&d.path().join("f")).unwrap(), file_b64);
        let expected = BASE64.encode(Sha256::digest(file_b64.as_bytes()));
        assert_eq!(model_hash(d.path()).unwrap(), expected);
    }

    #[test]
    fn empty_blob_and_tree_ids_match_git() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("empty"), b"").unwrap();
        // git hash-object of an empty file.
        assert_eq!(
            hex::encode(blob_id(&d.path().join("empty"), 0).unwrap()),
            "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
        );
        fs::create_dir(d.path().join("nothing")).unwrap();
        // A tree with one empty file named "empty"; the empty directory is left out.
        assert_eq!(
            git_tree_id(d.path()).unwrap(),
            "417c01c8795a35b8e835113a85a5c0c1c77f67fb"
        );
    }
}
