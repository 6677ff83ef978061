//! The ledger: where an offline committer writes what it would have put on chain, and where an
//! online one records what it wrote (with the chain's block), for `Commitments()`.
//!
//! It plays the chain's part for offline mode and is held to the same rule: a job's commitment is
//! written at most once. Entries carry the job id, so "is it already written?" is a lookup, the
//! offline twin of reading `CommitmentOf` back before writing. The file is rewritten atomically
//! on each append; `block` is the ledger's own sequence (1, 2, ...), as there is no chain.

use std::path::{Path, PathBuf};

use taominer_core::bus::CommitmentRecord;
use taominer_core::store::{read_json, write_json};

use crate::error::Result;

/// `ledger.json` in the committer's state directory.
#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    entries: Vec<CommitmentRecord>,
}

impl Ledger {
    /// Loads the ledger, or starts an empty one.
    pub fn open(state_dir: &Path) -> Result<Ledger> {
        let path = state_dir.join("ledger.json");
        let entries = read_json::<Vec<CommitmentRecord>>(&path)?.unwrap_or_default();
        Ok(Ledger { path, entries })
    }

    /// The entry written for a job, if any.
    pub fn find(&self, job_id: &str) -> Option<&CommitmentRecord> {
        self.entries.iter().find(|e| e.job_id == job_id)
    }

    /// Appends an entry with the next block number; durable when this returns.
    pub fn append(&mut self, mut record: CommitmentRecord) -> Result<CommitmentRecord> {
        record.block = self.entries.last().map_or(1, |e| e.block + 1);
        let mut next = self.entries.clone();
        next.push(record.clone());
        write_json(&self.path, &next)?;
        self.entries = next;
        Ok(record)
    }

    /// Appends an entry as written on chain, with the chain's block; durable when this returns.
    pub fn append_on_chain(&mut self, record: CommitmentRecord) -> Result<CommitmentRecord> {
        let mut next = self.entries.clone();
        next.push(record.clone());
        write_json(&self.path, &next)?;
        self.entries = next;
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
    }
}
