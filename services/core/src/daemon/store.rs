//! Durable state: atomic files, the state-directory lock, and a job store.
//!
//! Every state file is written as temp file → fsync → rename → fsync of the directory
//! (docs/architecture.md §4), so after a crash at any instant a reader sees either the old file or
//! the new one, never a torn mix. Jobs are one small JSON file each; a daemon writes a job's new
//! state before it tells anyone about it, and on start it reloads the directory and resumes
//! whatever was not finished.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::marker::PhantomData;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::IoContext;
use crate::{Error, Result};

/// Writes `data` to `path` atomically and durably.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let name = path.file_name().ok_or_else(|| {
        Error::io(
            "cannot write",
            path,
            std::io::ErrorKind::InvalidInput.into(),
        )
    })?;
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    {
        let mut f = File::create(&tmp).ctx("cannot create", &tmp)?;
        f.write_all(data).ctx("cannot write", &tmp)?;
        f.sync_all().ctx("cannot fsync", &tmp)?;
    }
    fs::rename(&tmp, path).ctx("cannot rename into place", path)?;
    fsync_dir(dir)
}

/// Serializes `value` as pretty JSON and writes it atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut data = serde_json::to_vec_pretty(value).map_err(|source| Error::State {
        path: path.to_path_buf(),
        source,
    })?;
    data.push(b'\n');
    write_atomic(path, &data)
}

/// Reads a JSON state file; `None` if it does not exist.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match fs::read(path) {
        Ok(data) => serde_json::from_slice(&data)
            .map(Some)
            .map_err(|source| Error::State {
                path: path.to_path_buf(),
                source,
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("cannot read", path, e)),
    }
}

/// fsyncs a directory so that renames and creations in it are durable.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx("cannot fsync directory", dir)
}

/// Creates a directory (and parents) with mode 0700 if missing.
pub fn ensure_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .ctx("cannot create directory", dir)
}

/// Creates a directory (and parents) that its group may read (0750, less the umask), for state
/// another daemon reads by path (the trainer's checkpoints, which the publisher stages); an
/// existing one made 0700 by an older version is opened up to 0750 (group read, never write).
pub fn ensure_group_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)
        .ctx("cannot create directory", dir)?;
    let mode = fs::metadata(dir)
        .ctx("cannot stat", dir)?
        .permissions()
        .mode()
        & 0o7777;
    if mode & 0o050 != 0o050 {
        fs::set_permissions(dir, fs::Permissions::from_mode((mode | 0o050) & !0o022))
            .ctx("cannot chmod", dir)?;
    }
    Ok(())
}

/// An exclusive lock on a state directory, held for the life of the daemon.
///
/// Two daemons writing one state directory would break every guarantee above, so the second one
/// refuses to start. The lock is `flock(2)` on `<dir>/.lock` and goes away with the process, even
/// on `kill -9`.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    path: PathBuf,
}

impl DirLock {
    /// Takes the lock or fails at once with [`Error::Locked`].
    pub fn acquire(dir: &Path) -> Result<DirLock> {
        ensure_dir(dir)?;
        let path = dir.join(".lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .ctx("cannot open", &path)?;
        // SAFETY: flock on a descriptor we own.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            return if err.kind() == std::io::ErrorKind::WouldBlock {
                Err(Error::Locked(dir.to_path_buf()))
            } else {
                Err(Error::io("cannot lock", &path, err))
            };
        }
        Ok(DirLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A record kept in a [`JobStore`].
pub trait Job: Serialize + DeserializeOwned + Clone {
    /// The job's id: unique, and sortable by creation time.
    fn id(&self) -> &str;
}

/// A directory of jobs, one JSON file each, mirrored in memory.
///
/// Not synchronised: the owning daemon wraps it in its own lock. Writes go to disk first and to
/// memory only once they are durable.
#[derive(Debug)]
pub struct JobStore<T: Job> {
    dir: PathBuf,
    jobs: BTreeMap<String, T>,
    _t: PhantomData<T>,
}

impl<T: Job> JobStore<T> {
    /// Opens (creating if needed) and loads the store. Leftover temp files from a crash are
    /// removed. An entry that cannot be used (unparsable, another job's id, unreadable: a
    /// directory, no permission, an I/O error) is moved aside to `*.corrupt` and reported, never
    /// deleted, and the store opens without it: one bad file must not keep a daemon in a restart
    /// loop. Only a directory that cannot be listed at all is an error.
    pub fn open(dir: &Path) -> Result<JobStore<T>> {
        ensure_dir(dir)?;
        let mut jobs = BTreeMap::new();
        for entry in fs::read_dir(dir).ctx("cannot list", dir)? {
            let path = match entry {
                Ok(entry) => entry.path(),
                Err(e) => {
                    tracing::error!(dir = %dir.display(), "cannot read a directory entry, skipped: {e}");
                    continue;
                }
            };
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name.starts_with('.') && name.contains(".tmp.") {
                if let Err(e) = fs::remove_file(&path) {
                    tracing::warn!(file = %path.display(), "cannot remove stale temp file: {e}");
                }
                continue;
            }
            let Some(id) = name.strip_suffix(".json") else {
                continue;
            };
            let why = match read_json::<T>(&path) {
                Ok(Some(job)) if job.id() == id => {
                    jobs.insert(id.to_string(), job);
                    continue;
                }
                Ok(Some(job)) => format!("it holds job {:?}", job.id()),
                Ok(None) => "it vanished while being read".to_string(),
                Err(e) => e.to_string(),
            };
            move_aside(&path, &why);
        }
        Ok(JobStore {
            dir: dir.to_path_buf(),
            jobs,
            _t: PhantomData,
        })
    }

    /// Durably writes `job` (new or updated), then updates the in-memory view.
    pub fn put(&mut self, job: T) -> Result<()> {
        write_json(&self.path_of(job.id()), &job)?;
        self.jobs.insert(job.id().to_string(), job);
        Ok(())
    }

    /// The job with this id.
    pub fn get(&self, id: &str) -> Option<&T> {
        self.jobs.get(id)
    }

    /// All jobs, oldest first.
    pub fn all(&self) -> impl DoubleEndedIterator<Item = &T> {
        self.jobs.values()
    }

    /// Number of jobs.
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// Durably removes a job (a missing file is fine: the removal may have been interrupted).
    pub fn remove(&mut self, id: &str) -> Result<()> {
        let path = self.path_of(id);
        match fs::remove_file(&path) {
            Ok(()) => fsync_dir(&self.dir)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("cannot remove", &path, e)),
        }
        self.jobs.remove(id);
        Ok(())
    }

    fn path_of(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }
}

/// Moves an unusable state file to `<name>.corrupt` (kept for a person to look at) and logs why;
/// if even that fails, logs that too and leaves it: the caller goes on without it either way.
pub fn move_aside(path: &Path, why: &str) -> PathBuf {
    let mut aside = path.as_os_str().to_owned();
    aside.push(".corrupt");
    let aside = PathBuf::from(aside);
    match fs::rename(path, &aside) {
        Ok(()) => {
            tracing::error!(file = %path.display(), "unusable state file ({why}); moved aside to {}", aside.display());
            if let Some(dir) = path.parent() {
                if let Err(e) = fsync_dir(dir) {
                    tracing::warn!("{e}");
                }
            }
        }
        Err(e) => {
            tracing::error!(file = %path.display(), "unusable state file ({why}), skipped; cannot move it aside: {e}");
        }
    }
    aside
}

/// A new job id: UTC time to the millisecond plus 32 random bits, e.g.
/// `20261123T142501123Z-3f9a1c02`. Sorts by creation time and is unique across restarts and
/// across daemons, so it can be carried end to end.
pub fn new_job_id() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "{}-{}",
        format_utc_millis(now),
        hex::encode(random_bytes::<4>())
    )
}

/// `N` bytes from `/dev/urandom` (ids, uuids; nothing secret). Falls back to the clock's
/// nanoseconds and our pid, which with the time they go with is still unique enough.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    if File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut out))
        .is_err()
    {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let seed = (t ^ u128::from(std::process::id()).rotate_left(64)).to_le_bytes();
        for (i, b) in out.iter_mut().enumerate() {
            *b = seed[i % seed.len()];
        }
    }
    out
}

/// `YYYYMMDDTHHMMSSmmmZ` for a duration since the epoch (civil-from-days, proleptic Gregorian).
fn format_utc_millis(t: std::time::Duration) -> String {
    let c = Civil::utc(t);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}{:03}Z",
        c.year,
        c.month,
        c.day,
        c.hour,
        c.minute,
        c.second,
        t.subsec_millis()
    )
}

/// A UTC calendar time, for the few places that print dates (no time-zone crate for this).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub micros: u32,
}

impl Civil {
    /// `t` since the Unix epoch, in UTC.
    pub fn utc(t: std::time::Duration) -> Civil {
        let secs = t.as_secs();
        let (days, rem) = (secs / 86_400, secs % 86_400);
        // Howard Hinnant's days-to-civil algorithm.
        let z = days as i64 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        Civil {
            year: yoe + era * 400 + i64::from(month <= 2),
            month,
            day,
            hour: (rem / 3600) as u32,
            minute: (rem % 3600 / 60) as u32,
            second: (rem % 60) as u32,
            micros: t.subsec_micros(),
        }
    }

    /// Now, in UTC.
    pub fn now() -> Civil {
        Civil::utc(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default(),
        )
    }

    /// As Python's `str(datetime)`: `2026-11-28 21:34:52.123456`, the fraction left out when
    /// it is zero.
    pub fn python_str(&self) -> String {
        let mut s = format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        );
        if self.micros != 0 {
            s.push_str(&format!(".{:06}", self.micros));
        }
        s
    }
}

/// Current time as seconds since the epoch (for records shown to users).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_time_prints_as_python_does() {
        // 2026-11-28 21:54:52.5 UTC
        let t = std::time::Duration::new(1_795_902_892, 500_000_000);
        assert_eq!(Civil::utc(t).python_str(), "2026-11-28 21:54:52.500000");
        assert_eq!(
            Civil::utc(std::time::Duration::from_secs(951_782_400)).python_str(),
            "2000-02-29 00:00:00"
        );
    }
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct J {
        id: String,
        n: u32,
    }
    impl Job for J {
        fn id(&self) -> &str {
            &self.id
        }
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("f.json")]);
    }

    #[test]
    fn job_store_survives_reopen_and_cleans_crash_leftovers() {
        let d = tempfile::tempdir().unwrap();
        {
            let mut s = JobStore::<J>::open(d.path()).unwrap();
            s.put(J {
                id: "b".into(),
                n: 1,
            })
            .unwrap();
            s.put(J {
                id: "a".into(),
                n: 2,
            })
            .unwrap();
            s.put(J {
                id: "b".into(),
                n: 3,
            })
            .unwrap();
        }
        // What a crash mid-write leaves: a temp file, and a torn file written by something else.
        fs::write(d.path().join(".c.json.tmp.999"), b"{\"id\":").unwrap();
        fs::write(d.path().join("z.json"), b"{\"id\":").unwrap();
        let s = JobStore::<J>::open(d.path()).unwrap();
        let all: Vec<_> = s.all().cloned().collect();
        assert_eq!(
            all,
            vec![
                J {
                    id: "a".into(),
                    n: 2
                },
                J {
                    id: "b".into(),
                    n: 3
                }
            ]
        );
        assert!(!d.path().join(".c.json.tmp.999").exists());
        assert!(
            d.path().join("z.json.corrupt").exists(),
            "kept for inspection"
        );
    }

    /// An entry that cannot be read (here a directory named like a job: `read` fails with
    /// EISDIR, an I/O error, not a parse error, which used to stop `open` and with it the
    /// daemon, restart after restart) or that holds another job's id is moved aside and
    /// reported; the good jobs load and the store keeps working.
    #[test]
    fn job_store_moves_unreadable_entries_aside_and_opens() {
        let d = tempfile::tempdir().unwrap();
        {
            let mut s = JobStore::<J>::open(d.path()).unwrap();
            s.put(J {
                id: "good".into(),
                n: 1,
            })
            .unwrap();
        }
        fs::create_dir(d.path().join("dir.json")).unwrap();
        fs::write(
            d.path().join("wrong.json"),
            b"{\"id\": \"other\", \"n\": 2}",
        )
        .unwrap();
        let mut s = JobStore::<J>::open(d.path()).unwrap();
        assert_eq!(s.all().map(|j| j.id.as_str()).collect::<Vec<_>>(), ["good"]);
        assert!(d.path().join("dir.json.corrupt").is_dir());
        assert!(d.path().join("wrong.json.corrupt").is_file());
        assert!(!d.path().join("dir.json").exists());
        s.put(J {
            id: "next".into(),
            n: 3,
        })
        .unwrap();
        assert_eq!(JobStore::<J>::open(d.path()).unwrap().len(), 2);
    }

    /// The trainer's checkpoints are read by the publisher through their group: a new directory
    /// is 0750 and an old 0700 one is opened to group read (never group write).
    #[test]
    fn group_dirs_are_group_readable() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let new = d.path().join("a/b");
        ensure_group_dir(&new).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&new) & 0o070, 0o050);
        let old = d.path().join("old");
        ensure_dir(&old).unwrap();
        assert_eq!(mode(&old), 0o700);
        ensure_group_dir(&old).unwrap();
        assert_eq!(mode(&old), 0o750);
    }

    #[test]
    fn dir_lock_is_exclusive() {
        let d = tempfile::tempdir().unwrap();
        let first = DirLock::acquire(d.path()).unwrap();
        assert!(matches!(DirLock::acquire(d.path()), Err(Error::Locked(_))));
        drop(first);
        DirLock::acquire(d.path()).unwrap();
    }

    #[test]
    fn job_ids_sort_by_time_and_are_unique() {
        let a = new_job_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_job_id();
        assert!(a < b, "{a} {b}");
        assert_eq!(a.len(), "20261123T142501123Z-3f9a1c02".len());
        assert_eq!(
            format_utc_millis(std::time::Duration::from_millis(1_795_443_901_123)),
            "20261123T142501123Z"
        );
    }
}
