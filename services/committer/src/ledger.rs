//! The ledger: where an offline committer writes what it would have put on chain, and where an
//! online one records what it wrote (with the chain's block), for `Commitments()`.
//!
//! It plays the chain's part for offline mode and is held to the same rule: a job's commitment is
//! written at most once. Entries carry the job id, so "is it already written?" is a lookup, the
//! offline twin of reading `CommitmentOf` back before writing. Offline, `block` is the ledger's
//! own sequence (1, 2, ...), as there is no chain.
//!
//! On disk it is an append-only log, `ledger.jsonl`: one JSON record per line, each appended with
//! one `write` and fsynced before `append` returns (a record is never rewritten, so an append
//! costs one line, not the whole ledger). On open the tail is checked:
//!
//! * a last line without its newline, or one of NUL bytes (a crash mid-append, or a file the
//!   filesystem extended before the data reached the disk), was never acknowledged: it is cut off
//!   (the file truncated to the last whole record), logged, and the ledger opens;
//! * any other line that is not a record is corruption: the records after it cannot be trusted,
//!   and dropping them could write a commitment twice. Opening fails with
//!   [`Error::LedgerCorrupt`], naming the file and line; the committer exits 65 (EX_DATAERR, not
//!   restarted by its unit) and the file is left where it is for a person to repair.
//!
//! The old format, `ledger.json` (one JSON array, rewritten on every append), is read once: its
//! records are written to `ledger.jsonl` atomically and it is renamed `ledger.json.migrated`.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use taominer_core::bus::CommitmentRecord;
use taominer_core::daemon::store::{fsync_dir, read_json, write_atomic};

use crate::error::{Error, Result};

/// `ledger.jsonl` in the committer's state directory.
#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    entries: Vec<CommitmentRecord>,
    /// Bytes of whole records in the file: where the next record starts.
    len: u64,
    /// Set when a failed append could not be cut off: nothing more is appended behind the
    /// fragment (it stays the torn tail, which the next start cuts off).
    stuck: bool,
}

/// The log's file name.
pub const LEDGER_FILE: &str = "ledger.jsonl";
/// The file of the old format, read once to migrate.
const OLD_LEDGER_FILE: &str = "ledger.json";

impl Ledger {
    /// Loads the ledger (migrating `ledger.json` if that is all there is), or starts an empty
    /// one. A torn last record is cut off; corruption anywhere else is an error.
    pub fn open(state_dir: &Path) -> Result<Ledger> {
        let path = state_dir.join(LEDGER_FILE);
        let old = state_dir.join(OLD_LEDGER_FILE);
        if !path.exists() {
            if let Some(entries) = read_json::<Vec<CommitmentRecord>>(&old)? {
                write_atomic(&path, &encode(&entries)?)?;
                tracing::info!(
                    "ledger migrated: {} records from {} to {}",
                    entries.len(),
                    old.display(),
                    path.display()
                );
            }
        }
        if old.exists() && path.exists() {
            // Written above, or before a crash that came ahead of this rename.
            let done = state_dir.join("ledger.json.migrated");
            std::fs::rename(&old, &done).map_err(|e| io("cannot rename", &old, e))?;
            fsync_dir(state_dir)?;
        }
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io("cannot read", &path, e)),
        };
        let (entries, good_len) = parse(&path, &data)?;
        if good_len < data.len() {
            tracing::warn!(
                "ledger {}: the last record was torn by a crash ({} bytes, never acknowledged); cut off",
                path.display(),
                data.len() - good_len
            );
            let f = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| io("cannot open", &path, e))?;
            f.set_len(good_len as u64)
                .and_then(|()| f.sync_all())
                .map_err(|e| io("cannot truncate", &path, e))?;
        }
        Ok(Ledger {
            path,
            entries,
            len: good_len as u64,
            stuck: false,
        })
    }

    /// The entry written for a job, if any.
    pub fn find(&self, job_id: &str) -> Option<&CommitmentRecord> {
        self.entries.iter().find(|e| e.job_id == job_id)
    }

    /// Appends an entry with the next block number; durable when this returns.
    pub fn append(&mut self, mut record: CommitmentRecord) -> Result<CommitmentRecord> {
        record.block = self.entries.last().map_or(1, |e| e.block + 1);
        self.write(record)
    }

    /// Appends an entry as written on chain, with the chain's block; durable when this returns.
    pub fn append_on_chain(&mut self, record: CommitmentRecord) -> Result<CommitmentRecord> {
        self.write(record)
    }

    /// One line, one `write(2)` in append mode, then fsync (and the directory's, when the
    /// append created the file). A failed append (a full disk) is cut off again at once, so the
    /// next record does not land behind a fragment.
    fn write(&mut self, record: CommitmentRecord) -> Result<CommitmentRecord> {
        if self.stuck {
            return Err(Error::Invalid(format!(
                "ledger {}: an earlier append failed and could not be undone; restart the committer",
                self.path.display()
            )));
        }
        let line = encode(std::slice::from_ref(&record))?;
        let created = !self.path.exists();
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| io("cannot open", &self.path, e))?;
        if let Err(e) = f.write_all(&line).and_then(|()| f.sync_data()) {
            if let Err(cut) = f.set_len(self.len).and_then(|()| f.sync_data()) {
                tracing::error!(
                    "ledger {}: cannot cut off a failed append ({cut}); no more appends until \
                     a restart cuts it",
                    self.path.display()
                );
                self.stuck = true;
            }
            return Err(io("cannot append to", &self.path, e));
        }
        self.len += line.len() as u64;
        if created {
            if let Some(dir) = self.path.parent() {
                fsync_dir(dir)?;
            }
        }
        self.entries.push(record.clone());
        Ok(record)
    }

    /// Every entry, oldest first.
    pub fn entries(&self) -> &[CommitmentRecord] {
        &self.entries
    }

    /// The latest commitment of a hotkey on a subnet, as `CommitmentOf` would hold it.
    pub fn latest(&self, netuid: u16, hotkey: &str) -> Option<&CommitmentRecord> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.netuid == netuid && e.hotkey == hotkey)
    }
}

/// Records as log lines.
fn encode(records: &[CommitmentRecord]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for r in records {
        serde_json::to_writer(&mut out, r)
            .map_err(|e| Error::Invalid(format!("cannot encode a ledger record: {e}")))?;
        out.push(b'\n');
    }
    Ok(out)
}

/// The records of a log and the length of its whole-record prefix (what is kept).
fn parse(path: &Path, data: &[u8]) -> Result<(Vec<CommitmentRecord>, usize)> {
    let mut entries = Vec::new();
    let mut good = 0;
    let mut rest = data;
    let mut line_no = 0;
    while !rest.is_empty() {
        line_no += 1;
        let (line, next, whole) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..], true),
            None => (rest, &rest[rest.len()..], false),
        };
        // The torn tail (never acknowledged: the fsync comes after the whole line): the last
        // line without its newline, even if its JSON is complete, or NUL bytes to the end.
        if next.iter().all(|&b| b == 0) && (!whole || line.iter().all(|&b| b == 0)) {
            break;
        }
        let record = serde_json::from_slice::<CommitmentRecord>(line).map_err(|e| {
            Error::LedgerCorrupt(format!(
                "ledger {} line {line_no} is not a record ({e}); the records after it cannot \
                 be trusted, so the committer will not start. Repair or remove that line (the \
                 file is left as it is), then start it again",
                path.display()
            ))
        })?;
        entries.push(record);
        good = data.len() - next.len();
        rest = next;
    }
    Ok((entries, good))
}

fn io(action: &'static str, path: &Path, e: std::io::Error) -> Error {
    Error::Core(taominer_core::Error::io(action, path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(job: &str) -> CommitmentRecord {
        CommitmentRecord {
            block: 0,
            job_id: job.into(),
            netuid: 9,
            hotkey: "h".into(),
            commitment: format!("c-{job}"),
            data_type: "Raw3".into(),
            time: 0,
        }
    }

    #[test]
    fn appends_number_blocks_and_survive_reopen() {
        let d = tempfile::tempdir().unwrap();
        let mut l = Ledger::open(d.path()).unwrap();
        assert_eq!(l.append(rec("a")).unwrap().block, 1);
        assert_eq!(l.append(rec("b")).unwrap().block, 2);
        let l = Ledger::open(d.path()).unwrap();
        assert_eq!(l.entries().len(), 2);
        assert_eq!(l.find("b").map(|e| e.block), Some(2));
        assert_eq!(l.latest(9, "h").map(|e| e.job_id.as_str()), Some("b"));
        assert!(l.latest(10, "h").is_none());
        // One line per record: an append adds a line and never rewrites the others.
        let text = std::fs::read_to_string(d.path().join(LEDGER_FILE)).unwrap();
        assert_eq!(text.lines().count(), 2);
    }

    /// A crash mid-append leaves a torn last line (a prefix of the record, or NUL bytes where
    /// the filesystem extended the file first): it is cut off, the acknowledged records stay,
    /// and the next append lands on a clean line; each job is still in the ledger exactly once.
    #[test]
    fn a_torn_tail_is_cut_off_and_exactly_once_holds() {
        for torn in [&b"{\"block\":3,\"job_id\":\"c\",\"net"[..], &[0u8; 40][..]] {
            let d = tempfile::tempdir().unwrap();
            let mut l = Ledger::open(d.path()).unwrap();
            l.append(rec("a")).unwrap();
            l.append(rec("b")).unwrap();
            let path = d.path().join(LEDGER_FILE);
            let good = std::fs::read(&path).unwrap();
            let mut f = OpenOptions::new().append(true).open(&path).unwrap();
            f.write_all(torn).unwrap();
            drop(f);

            let mut l = Ledger::open(d.path()).unwrap();
            assert_eq!(
                std::fs::read(&path).unwrap(),
                good,
                "truncated to the records"
            );
            assert_eq!(l.entries().len(), 2);
            assert!(
                l.find("c").is_none(),
                "the torn record was never acknowledged"
            );
            assert_eq!(l.append(rec("c")).unwrap().block, 3);
            let l = Ledger::open(d.path()).unwrap();
            let ids: Vec<&str> = l.entries().iter().map(|e| e.job_id.as_str()).collect();
            assert_eq!(ids, ["a", "b", "c"]);
        }
    }

    /// A damaged record that is not the torn tail is refused, naming the file and line, and the
    /// file is left untouched: silently dropping the records after it could write a job twice.
    #[test]
    fn corruption_before_the_tail_is_refused_and_left_in_place() {
        let d = tempfile::tempdir().unwrap();
        let mut l = Ledger::open(d.path()).unwrap();
        for j in ["a", "b", "c"] {
            l.append(rec(j)).unwrap();
        }
        let path = d.path().join(LEDGER_FILE);
        let text = std::fs::read_to_string(&path).unwrap();
        let damaged = text.replacen("\"job_id\":\"b\"", "\"job_id\":b\"", 1);
        std::fs::write(&path, &damaged).unwrap();
        let err = Ledger::open(d.path()).unwrap_err();
        assert!(matches!(err, Error::LedgerCorrupt(_)), "{err}");
        assert!(err.to_string().contains("line 2"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), damaged);
    }

    /// A ledger in the old format (`ledger.json`, one array) is read once into the log, with its
    /// blocks, and renamed; later appends continue its numbering.
    #[test]
    fn the_old_ledger_json_is_migrated_once() {
        let d = tempfile::tempdir().unwrap();
        let mut a = rec("a");
        a.block = 1;
        let mut b = rec("b");
        b.block = 2;
        taominer_core::daemon::store::write_json(&d.path().join("ledger.json"), &vec![a, b])
            .unwrap();
        let mut l = Ledger::open(d.path()).unwrap();
        assert_eq!(l.entries().len(), 2);
        assert!(!d.path().join("ledger.json").exists());
        assert!(d.path().join("ledger.json.migrated").exists());
        assert_eq!(l.append(rec("c")).unwrap().block, 3);
        let l = Ledger::open(d.path()).unwrap();
        assert_eq!(l.find("b").map(|e| e.block), Some(2));
        assert_eq!(l.entries().len(), 3);
    }
}
