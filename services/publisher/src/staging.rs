//! Model directories in, immutable staged snapshots out.
//!
//! A model directory is accepted only if it is a tree of regular files and directories. A symlink
//! is allowed when its target is a relative path to a regular file inside the directory reached
//! through no further link (a Hugging Face cache snapshot's `blobs/` links, made relative);
//! absolute links, links out of the directory and links to links are refused. The snapshot is
//! copied into the publisher's state so that what is hashed, uploaded and committed is exactly
//! the same bytes, whatever happens to the source afterwards.
//!
//! The publisher reads with its own rights (its token is readable to it), so the walk must not be
//! redirected: every step opens from a directory descriptor, never by path again. The root is
//! reached from `/` one component at a time without following links; below it each file is
//! opened with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` from the root's descriptor (or,
//! on kernels without `openat2`, `O_NOFOLLOW` at every component), checked against what the scan
//! saw (device, inode, size, mtime) and read through that descriptor. A directory swapped for a
//! symlink between scan and copy fails the job with nothing staged. With a [`Caller`], every
//! directory (and each of the root's ancestors) and file must also be one that caller could read.
//!
//! Copying goes to `staging/<job>` and is renamed to `staged/<job>` only when complete and
//! fsynced, so a crash never leaves a half snapshot where a whole one is expected.

use std::ffi::OsStr;
use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use rustix::fd::OwnedFd;
use rustix::fs::{Mode, OFlags, ResolveFlags, CWD};
use rustix::io::Errno;
use taominer_core::config::Profile;
use taominer_core::daemon::store::fsync_dir;

use crate::access::{Caller, READ, SEARCH};
use crate::error::{Error, Result};

/// What a valid model directory holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSummary {
    pub files: usize,
    pub bytes: u64,
}

/// What identifies a file between the scan and the copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
}

impl FileId {
    fn of(m: &Metadata) -> FileId {
        FileId {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
        }
    }
}

/// One file to stage: where it is read from (relative to the root, links resolved) and where it
/// goes, relative to the snapshot root.
#[derive(Debug)]
struct SourceFile {
    open: PathBuf,
    rel: PathBuf,
    executable: bool,
    id: FileId,
}

/// What the scan found: the root's descriptor, the files and the directories to create.
struct Scan {
    root: OwnedFd,
    files: Vec<SourceFile>,
    dirs: Vec<PathBuf>,
}

/// Checks a model directory without copying anything.
pub fn inspect(root: &Path, profile: Profile, caller: Option<&Caller>) -> Result<SourceSummary> {
    let scan = scan(root, profile, caller)?;
    Ok(SourceSummary {
        files: scan.files.len(),
        bytes: scan.files.iter().map(|f| f.id.size).sum(),
    })
}

/// Copies a model directory into `dest` (which must not exist) via `tmp`, durably.
/// `progress` counts bytes copied, so the caller can tell a slow copy from a hung one.
/// On any error `tmp` is removed: nothing half-staged stays behind.
pub fn stage(
    root: &Path,
    profile: Profile,
    caller: Option<&Caller>,
    tmp: &Path,
    dest: &Path,
    progress: &AtomicU64,
) -> Result<SourceSummary> {
    let scan = scan(root, profile, caller)?;
    // Tests hold this window open to swap the source under the publisher.
    taominer_core::daemon::fault::pause_point("publisher.stage-scanned");
    if tmp.exists() {
        fs::remove_dir_all(tmp).map_err(|e| io_err("cannot clear", tmp, e))?;
    }
    let copied = copy_all(&scan, root, tmp, progress);
    let bytes = match copied {
        Ok(b) => b,
        Err(e) => {
            let _ = fs::remove_dir_all(tmp);
            return Err(e);
        }
    };
    taominer_core::daemon::fault::crash_point("publisher.stage-copied");
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).map_err(|e| io_err("cannot create", parent, e))?;
    }
    fs::rename(tmp, dest).map_err(|e| io_err("cannot rename into place", dest, e))?;
    if let Some(parent) = dest.parent() {
        fsync_dir(parent)?;
    }
    taominer_core::daemon::fault::crash_point("publisher.stage-renamed");
    Ok(SourceSummary {
        files: scan.files.len(),
        bytes,
    })
}

/// Copies every scanned file into `tmp`, each read through a descriptor opened beneath the root
/// and checked against the scan; fsyncs files and directories. Returns the bytes copied.
fn copy_all(scan: &Scan, root: &Path, tmp: &Path, progress: &AtomicU64) -> Result<u64> {
    fs::create_dir_all(tmp).map_err(|e| io_err("cannot create", tmp, e))?;
    for d in &scan.dirs {
        let p = tmp.join(d);
        fs::create_dir_all(&p).map_err(|e| io_err("cannot create", &p, e))?;
    }
    let mut bytes = 0u64;
    for f in &scan.files {
        let shown = root.join(&f.rel);
        let changed = |why: &str| {
            Error::Invalid(format!(
                "{}: {why} since the directory was checked; nothing was staged (publish it again once it is stable)",
                shown.display()
            ))
        };
        let fd = open_beneath(&scan.root, &f.open, OFlags::RDONLY).map_err(|e| match e {
            Errno::LOOP | Errno::XDEV | Errno::NOTDIR => {
                changed("a path component became a symlink or left the directory")
            }
            Errno::NOENT => changed("it disappeared"),
            e => io_err("cannot open", &shown, e.into()),
        })?;
        let mut src = File::from(fd);
        let meta = src
            .metadata()
            .map_err(|e| io_err("cannot stat", &shown, e))?;
        if !meta.is_file() || FileId::of(&meta) != f.id {
            return Err(changed("it was replaced or modified"));
        }
        let to = tmp.join(&f.rel);
        let copied = copy_file(&mut src, &to, progress)?;
        let after = src
            .metadata()
            .map_err(|e| io_err("cannot stat", &shown, e))?;
        if copied != f.id.size || FileId::of(&after) != f.id {
            return Err(changed("it changed while it was being copied"));
        }
        // Staged files are read-only: the snapshot is immutable once written.
        let mode = if f.executable { 0o555 } else { 0o444 };
        fs::set_permissions(&to, fs::Permissions::from_mode(mode))
            .map_err(|e| io_err("cannot set permissions on", &to, e))?;
        bytes += copied;
    }
    // Directories deepest first, so each creation below is on disk.
    for d in scan.dirs.iter().rev() {
        fsync_dir(&tmp.join(d))?;
    }
    fsync_dir(tmp)?;
    Ok(bytes)
}

/// Copies in slices so `progress` moves during a multi-gigabyte file. `io::copy` between two
/// files uses `copy_file_range(2)` (an in-kernel copy, a reflink where the filesystem can) and
/// falls back to read/write by itself; a `Take` slice keeps that path.
fn copy_file(src: &mut File, to: &Path, progress: &AtomicU64) -> Result<u64> {
    const SLICE: u64 = 64 << 20;
    let mut dst = File::create(to).map_err(|e| io_err("cannot create", to, e))?;
    let mut total = 0u64;
    loop {
        let n = io::copy(&mut (&mut *src).take(SLICE), &mut dst)
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

/// Whether `openat2(2)` works here: 0 unknown, 1 yes, 2 no (ENOSYS before Linux 5.6, or a
/// seccomp filter that answers EPERM).
static OPENAT2: AtomicU8 = AtomicU8::new(0);

/// Opens `rel` (a path of normal components) beneath `root` without following any symlink and
/// without leaving `root`: `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` where the
/// kernel has it, else [`open_nofollow_steps`].
fn open_beneath(root: &OwnedFd, rel: &Path, flags: OFlags) -> rustix::io::Result<OwnedFd> {
    let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    if OPENAT2.load(Ordering::Relaxed) != 2 {
        match rustix::fs::openat2(
            root,
            rel,
            flags,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS,
        ) {
            Err(Errno::NOSYS) | Err(Errno::PERM) => {
                if OPENAT2.swap(2, Ordering::Relaxed) != 2 {
                    tracing::info!(
                        "openat2 is unavailable here: staging walks with O_NOFOLLOW at every step"
                    );
                }
            }
            other => {
                OPENAT2.store(1, Ordering::Relaxed);
                return other;
            }
        }
    }
    open_nofollow_steps(root, rel, flags)
}

/// The fallback: one `openat(O_NOFOLLOW)` per component (directories as `O_PATH`, which needs
/// only search permission), so no component can be a symlink; `..` and absolute paths are
/// refused outright, so nothing leaves `root`.
fn open_nofollow_steps(root: &OwnedFd, rel: &Path, flags: OFlags) -> rustix::io::Result<OwnedFd> {
    let parts: Vec<&OsStr> = rel
        .components()
        .map(|c| match c {
            Component::Normal(p) => Ok(p),
            _ => Err(Errno::XDEV),
        })
        .collect::<rustix::io::Result<_>>()?;
    let Some((last, dirs)) = parts.split_last() else {
        return Err(Errno::INVAL);
    };
    let dir_flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut held: Option<OwnedFd> = None;
    for d in dirs {
        let next = match &held {
            Some(fd) => rustix::fs::openat(fd, *d, dir_flags, Mode::empty())?,
            None => rustix::fs::openat(root, *d, dir_flags, Mode::empty())?,
        };
        held = Some(next);
    }
    let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match &held {
        Some(fd) => rustix::fs::openat(fd, *last, flags, Mode::empty()),
        None => rustix::fs::openat(root, *last, flags, Mode::empty()),
    }
}

/// Opens the root directory from `/`, one component of its canonical path at a time without
/// following links, checking that `caller` may search each ancestor and read the root.
fn open_root(shown: &Path, real_root: &Path, caller: Option<&Caller>) -> Result<OwnedFd> {
    let race = || {
        Error::Invalid(format!(
            "{}: the path changed while it was being opened; nothing was staged",
            shown.display()
        ))
    };
    let errno = |e: Errno, at: &Path| match e {
        Errno::LOOP | Errno::NOTDIR | Errno::NOENT => race(),
        e => io_err("cannot open", at, e.into()),
    };
    let dir_flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut fd = rustix::fs::openat(CWD, "/", dir_flags, Mode::empty())
        .map_err(|e| errno(e, Path::new("/")))?;
    let mut at = PathBuf::from("/");
    let parts: Vec<&OsStr> = real_root
        .components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p),
            _ => None,
        })
        .collect();
    for (i, part) in parts.iter().enumerate() {
        if let Some(c) = caller {
            c.require(&meta_of(&fd, &at)?, SEARCH, &at)?;
        }
        at.push(part);
        let last = i + 1 == parts.len();
        let flags = if last {
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
        } else {
            dir_flags
        };
        fd = rustix::fs::openat(&fd, *part, flags, Mode::empty()).map_err(|e| errno(e, &at))?;
    }
    if parts.is_empty() {
        fd = rustix::fs::openat(
            CWD,
            "/",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| errno(e, Path::new("/")))?;
    }
    if let Some(c) = caller {
        c.require(&meta_of(&fd, shown)?, READ | SEARCH, shown)?;
    }
    Ok(fd)
}

/// `fstat` of a descriptor (an `O_PATH` one included), as std metadata.
fn meta_of(fd: &OwnedFd, shown: &Path) -> Result<Metadata> {
    let dup = fd
        .try_clone()
        .map_err(|e| io_err("cannot stat", shown, e))?;
    File::from(dup)
        .metadata()
        .map_err(|e| io_err("cannot stat", shown, e))
}

/// Walks and validates a model directory: files to copy and directories to create.
fn scan(root: &Path, profile: Profile, caller: Option<&Caller>) -> Result<Scan> {
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
    let root_fd = open_root(root, &real_root, caller)?;
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    let ctx = Walk {
        shown: root,
        root: &root_fd,
        caller,
    };
    let listing_fd = root_fd
        .try_clone()
        .map_err(|e| io_err("cannot list", root, e))?;
    ctx.scan_dir(listing_fd, Path::new(""), &mut files, &mut dirs)?;
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
    Ok(Scan {
        root: root_fd,
        files,
        dirs,
    })
}

/// The fixed part of a scan.
struct Walk<'a> {
    shown: &'a Path,
    root: &'a OwnedFd,
    caller: Option<&'a Caller>,
}

impl Walk<'_> {
    fn scan_dir(
        &self,
        dir: OwnedFd,
        rel: &Path,
        files: &mut Vec<SourceFile>,
        dirs: &mut Vec<PathBuf>,
    ) -> Result<()> {
        let here = self.shown.join(rel);
        let listing =
            rustix::fs::Dir::read_from(&dir).map_err(|e| io_err("cannot list", &here, e.into()))?;
        let mut names = Vec::new();
        for entry in listing {
            let entry = entry.map_err(|e| io_err("cannot list", &here, e.into()))?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            names.push(OsStr::from_bytes(name).to_os_string());
        }
        names.sort();
        for name in names {
            let path = here.join(&name);
            if name.to_str().is_none() {
                return Err(Error::Invalid(format!(
                    "{}: file names must be UTF-8",
                    path.display()
                )));
            }
            let rel_path = rel.join(&name);
            // O_PATH | O_NOFOLLOW opens the entry itself, whatever it is: its fstat is lstat.
            let entry_fd = rustix::fs::openat(
                &dir,
                name.as_os_str(),
                OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| io_err("cannot open", &path, e.into()))?;
            let meta = meta_of(&entry_fd, &path)?;
            let ft = meta.file_type();
            if ft.is_dir() {
                if let Some(c) = self.caller {
                    c.require(&meta, READ | SEARCH, &path)?;
                }
                let sub = rustix::fs::openat(
                    &dir,
                    name.as_os_str(),
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| io_err("cannot open", &path, e.into()))?;
                if FileId::of(&meta_of(&sub, &path)?).ino != meta.ino() {
                    return Err(Error::Invalid(format!(
                        "{}: replaced while it was being checked",
                        path.display()
                    )));
                }
                dirs.push(rel_path.clone());
                self.scan_dir(sub, &rel_path, files, dirs)?;
            } else if ft.is_file() {
                if let Some(c) = self.caller {
                    c.require(&meta, READ, &path)?;
                }
                files.push(SourceFile {
                    open: rel_path.clone(),
                    rel: rel_path,
                    executable: meta.mode() & 0o100 != 0,
                    id: FileId::of(&meta),
                });
            } else if ft.is_symlink() {
                let open = self.link_target(&dir, &name, rel, &path)?;
                let fd = open_beneath(self.root, &open, OFlags::RDONLY).map_err(|e| match e {
                    Errno::NOENT => {
                        Error::Invalid(format!("{}: dangling symlink", path.display()))
                    }
                    Errno::LOOP | Errno::XDEV | Errno::NOTDIR => Error::Invalid(format!(
                        "{}: symlink to a symlink (or through one); copy the files in (cp -rL) and publish the copy",
                        path.display()
                    )),
                    e => io_err("cannot open", &path, e.into()),
                })?;
                let tmeta = meta_of(&fd, &path)?;
                if !tmeta.is_file() {
                    return Err(Error::Invalid(format!(
                        "{}: symlink to something other than a regular file",
                        path.display()
                    )));
                }
                if let Some(c) = self.caller {
                    c.require(&tmeta, READ, &self.shown.join(&open))?;
                }
                files.push(SourceFile {
                    open,
                    rel: rel_path,
                    executable: tmeta.mode() & 0o100 != 0,
                    id: FileId::of(&tmeta),
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

    /// The root-relative path a symlink names: its (relative) target resolved lexically against
    /// the link's directory, which is exact because no component on the way may be a link.
    fn link_target(&self, dir: &OwnedFd, name: &OsStr, rel: &Path, path: &Path) -> Result<PathBuf> {
        let target = rustix::fs::readlinkat(dir, name, Vec::new())
            .map_err(|e| io_err("cannot read the link", path, e.into()))?;
        let target = PathBuf::from(OsStr::from_bytes(target.as_bytes()));
        let outside = || {
            Error::Invalid(format!(
                "{}: symlink points outside the model directory (to {}); copy the files in (cp -rL) and publish the copy",
                path.display(),
                target.display()
            ))
        };
        let mut out = rel.to_path_buf();
        for c in target.components() {
            match c {
                Component::Normal(p) => out.push(p),
                Component::CurDir => {}
                Component::ParentDir => {
                    if !out.pop() {
                        return Err(outside());
                    }
                }
                Component::RootDir | Component::Prefix(_) => return Err(outside()),
            }
        }
        if out.as_os_str().is_empty() {
            return Err(outside());
        }
        Ok(out)
    }
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
            None,
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

    /// Proves: a directory swapped for a symlink (to a directory holding a secret of the same
    /// name and size) after the scan fails the copy, through `openat2` and through the
    /// `O_NOFOLLOW` fallback alike, and so does a file modified after the scan.
    #[test]
    fn a_directory_swapped_for_a_symlink_after_the_scan_stages_nothing() {
        let src = tempfile::tempdir().unwrap();
        model(src.path());
        fs::create_dir(src.path().join("extra")).unwrap();
        fs::write(src.path().join("extra/notes.txt"), b"0123456789").unwrap();
        let secret = tempfile::tempdir().unwrap();
        fs::write(secret.path().join("notes.txt"), b"hf_SECRET!").unwrap();
        let scan = scan(src.path(), Profile::Pretraining, None).unwrap();
        fs::rename(src.path().join("extra"), src.path().join("moved")).unwrap();
        symlink(secret.path(), src.path().join("extra")).unwrap();
        let state = tempfile::tempdir().unwrap();
        let tmp = state.path().join("staging/j");
        let e = copy_all(&scan, src.path(), &tmp, &AtomicU64::new(0))
            .unwrap_err()
            .to_string();
        assert!(e.contains("became a symlink"), "{e}");
        let rel = Path::new("extra/notes.txt");
        assert_eq!(
            open_nofollow_steps(&scan.root, rel, OFlags::RDONLY).unwrap_err(),
            Errno::NOTDIR
        );
        assert!(open_nofollow_steps(&scan.root, Path::new("../x"), OFlags::RDONLY).is_err());
        // A file modified after the scan (another size and mtime) fails the copy too.
        let dest = state.path().join("staged/j");
        fs::remove_file(src.path().join("extra")).unwrap();
        fs::rename(src.path().join("moved"), src.path().join("extra")).unwrap();
        fs::write(src.path().join("extra/notes.txt"), b"changed!!!").unwrap();
        let scan = scan_then(src.path(), |root| {
            fs::write(root.join("extra/notes.txt"), b"changed again, longer").unwrap()
        });
        assert!(copy_all(&scan, src.path(), &tmp, &AtomicU64::new(0)).is_err());
        assert!(!dest.exists());
    }

    fn scan_then(root: &Path, change: impl FnOnce(&Path)) -> Scan {
        let s = scan(root, Profile::Pretraining, None).unwrap();
        change(root);
        s
    }

    /// Proves: a caller who may not read a file (or search a directory) is refused before
    /// anything is copied, while root and the owner are not.
    #[test]
    fn the_callers_own_rights_bound_what_is_read() {
        let src = tempfile::tempdir().unwrap();
        model(src.path());
        let owner = fs::metadata(src.path()).unwrap().uid();
        fs::set_permissions(src.path(), fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(
            src.path().join("model.safetensors"),
            fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let stranger = Caller {
            uid: owner.wrapping_add(4242),
            gids: vec![],
        };
        let e = inspect(src.path(), Profile::Pretraining, Some(&stranger))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("model.safetensors") && e.contains("may not read"),
            "{e}"
        );
        let me = Caller {
            uid: owner,
            gids: vec![],
        };
        assert!(inspect(src.path(), Profile::Pretraining, Some(&me)).is_ok());
        fs::set_permissions(src.path(), fs::Permissions::from_mode(0o700)).unwrap();
        let e = inspect(src.path(), Profile::Pretraining, Some(&stranger))
            .unwrap_err()
            .to_string();
        assert!(e.contains("may not read and search"), "{e}");
    }

    #[test]
    fn refuses_what_it_cannot_publish() {
        let d = tempfile::tempdir().unwrap();
        let missing = d.path().join("nope");
        assert!(inspect(&missing, Profile::Pretraining, None)
            .unwrap_err()
            .to_string()
            .contains("no such directory"));
        let file = d.path().join("file");
        fs::write(&file, b"x").unwrap();
        assert!(inspect(&file, Profile::Pretraining, None)
            .unwrap_err()
            .to_string()
            .contains("not a directory"));
        let empty = d.path().join("empty");
        fs::create_dir(&empty).unwrap();
        assert!(inspect(&empty, Profile::Pretraining, None)
            .unwrap_err()
            .to_string()
            .contains("no files"));
        let noconf = d.path().join("noconf");
        fs::create_dir(&noconf).unwrap();
        fs::write(noconf.join("w.bin"), b"x").unwrap();
        assert!(inspect(&noconf, Profile::Pretraining, None)
            .unwrap_err()
            .to_string()
            .contains("config.json"));
        assert!(
            inspect(&noconf, Profile::Soundsright, None).is_ok(),
            "only LLM profiles need config.json"
        );
        let escape = d.path().join("escape");
        fs::create_dir(&escape).unwrap();
        model(&escape);
        symlink(&file, escape.join("leak")).unwrap();
        let e = inspect(&escape, Profile::Pretraining, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("outside the model directory"), "{e}");
        let dangling = d.path().join("dangling");
        fs::create_dir(&dangling).unwrap();
        model(&dangling);
        symlink("nowhere", dangling.join("x")).unwrap();
        assert!(inspect(&dangling, Profile::Pretraining, None)
            .unwrap_err()
            .to_string()
            .contains("dangling"));
    }
}
