//! The engine's progress: the JSON-lines file it appends to (`TAOMINER_METRICS_FILE`), read
//! from where the last read stopped, so step, loss and tokens/s reach `Status`, `STATUS=` and
//! `minerctl train status|top|plot` as they do for the built-in loop. Bounded: at most
//! [`MAX_READ`] bytes a poll (a file that grew more is read from its tail), lines longer than
//! [`MAX_LINE`] are skipped.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

use serde::Deserialize;

use crate::progress::Shared;

/// Most bytes read in one poll.
pub const MAX_READ: u64 = 1 << 20;
/// Longest line taken; a longer one is not a metrics record.
pub const MAX_LINE: usize = 4096;

/// One line of the metrics file.
#[derive(Debug, Clone, Deserialize)]
pub struct Metric {
    pub step: u64,
    pub loss: f64,
    #[serde(default)]
    pub tokens_per_second: f64,
    #[serde(default)]
    pub epoch: Option<u64>,
}

/// Where the reading of the metrics file stands.
pub struct MetricsTail {
    path: PathBuf,
    offset: u64,
    /// The start of a line not yet ended by `\n`.
    partial: Vec<u8>,
    /// A partial line that outgrew [`MAX_LINE`]: skip up to the next newline.
    skipping: bool,
    bad_lines: u64,
}

impl MetricsTail {
    pub fn new(path: PathBuf) -> MetricsTail {
        MetricsTail {
            path,
            offset: 0,
            partial: Vec::new(),
            skipping: false,
            bad_lines: 0,
        }
    }

    /// Reads what was appended since the last poll and returns its records, oldest first.
    pub fn poll(&mut self) -> Vec<Metric> {
        let Ok(mut f) = File::open(&self.path) else {
            return Vec::new();
        };
        let Ok(len) = f.metadata().map(|m| m.len()) else {
            return Vec::new();
        };
        if len < self.offset {
            // Truncated or replaced: a new file, read from its start.
            self.offset = 0;
            self.partial.clear();
            self.skipping = false;
        }
        if len - self.offset > MAX_READ {
            // Far behind: only the tail matters for the figures shown.
            self.offset = len - MAX_READ / 16;
            self.partial.clear();
            self.skipping = true;
        }
        let mut buf = Vec::new();
        if f.seek(SeekFrom::Start(self.offset)).is_err()
            || f.take(len - self.offset).read_to_end(&mut buf).is_err()
        {
            return Vec::new();
        }
        self.offset += buf.len() as u64;
        self.parse(&buf)
    }

    fn parse(&mut self, bytes: &[u8]) -> Vec<Metric> {
        let mut out = Vec::new();
        let lines = bytes.iter().filter(|&&b| b == b'\n').count();
        for (i, piece) in bytes.split(|&b| b == b'\n').enumerate() {
            // The last piece is not ended by a newline (yet).
            let ended = i < lines;
            if self.skipping {
                if ended {
                    self.skipping = false;
                }
                continue;
            }
            if self.partial.len() + piece.len() > MAX_LINE {
                self.partial.clear();
                self.skipping = !ended;
                self.bad(format_args!("a line longer than {MAX_LINE} bytes"));
                continue;
            }
            self.partial.extend_from_slice(piece);
            if !ended {
                break;
            }
            let line = std::mem::take(&mut self.partial);
            let text = String::from_utf8_lossy(&line);
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            match serde_json::from_str::<Metric>(text) {
                Ok(m) if m.loss.is_finite() || m.loss.is_nan() => out.push(m),
                Ok(_) => self.bad(format_args!("an infinite loss")),
                Err(e) => {
                    let shown: String = text.chars().take(120).collect();
                    self.bad(format_args!("{e}: {shown}"))
                }
            }
        }
        out
    }

    fn bad(&mut self, what: std::fmt::Arguments) {
        self.bad_lines += 1;
        // Said for the first few, then every hundredth: a broken engine must not flood the journal.
        if self.bad_lines <= 5 || self.bad_lines.is_multiple_of(100) {
            tracing::warn!(
                "{}: skipping a line that is not a metrics record ({} so far): {what}",
                self.path.display(),
                self.bad_lines
            );
        }
    }

    /// Polls and shows the newest record in the progress.
    pub fn update(&mut self, shared: &Shared) {
        let records = self.poll();
        let Some(last) = records.last().cloned() else {
            return;
        };
        shared.update(|p| {
            for m in &records {
                if m.tokens_per_second > 0.0 {
                    p.throughput.record(m.step, m.tokens_per_second);
                }
            }
            p.step = last.step;
            p.loss = last.loss;
            p.tokens_per_second = last.tokens_per_second;
            if let Some(e) = last.epoch {
                p.epoch = e;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Proves: records are read incrementally across polls (a line split between two writes is
    /// read once, whole), bad and overlong lines are skipped, and a truncated file is re-read
    /// from its start.
    #[test]
    fn the_tail_reads_appended_records_and_skips_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.jsonl");
        let mut f = File::create(&path).unwrap();
        let mut tail = MetricsTail::new(path.clone());
        assert!(tail.poll().is_empty());
        write!(f, "{{\"step\": 1, \"loss\": 5.0, \"tokens_per_second\": 10.0}}\nnot json\n{{\"step\": 2, \"lo").unwrap();
        let got = tail.poll();
        assert_eq!(got.iter().map(|m| m.step).collect::<Vec<_>>(), [1]);
        write!(
            f,
            "ss\": 4.5}}\n{}\n{{\"step\": 3, \"loss\": 4.0}}\n",
            "x".repeat(MAX_LINE + 10)
        )
        .unwrap();
        let got = tail.poll();
        assert_eq!(got.iter().map(|m| m.step).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(got[0].loss, 4.5);
        assert_eq!(tail.bad_lines, 2);
        drop(f);
        std::fs::write(&path, "{\"step\": 7, \"loss\": 1.0}\n").unwrap();
        assert_eq!(tail.poll()[0].step, 7, "a truncated file is read again");
    }
}
