//! The stable driver: replay a target's seed corpus, then mutate it for a bounded time, catching
//! panics. It runs on the stable toolchain in CI, where cargo-fuzz (nightly) is not assumed.
//!
//! Not coverage-guided: the pool grows only with mutants the parser *accepted* (distinct ones),
//! which keeps mutating from inputs that reach the deeper checks. A crash is saved under
//! `<artifacts>/<target>/crash-<hash>` (the input) with `.txt` beside it (the panic message).

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::{Duration, Instant};

use crate::mutate::{self, Rng};
use crate::targets::Target;

/// How one target is run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Mutation time after the corpus replay.
    pub time: Duration,
    pub seed: u64,
    /// Stop after this many executions (replays included), whatever the time.
    pub max_execs: Option<u64>,
    /// `<corpus>/<target>/` holds the seeds.
    pub corpus: PathBuf,
    /// `<artifacts>/<target>/` receives crashes.
    pub artifacts: PathBuf,
    /// Write each input to `<artifacts>/<target>/last-input` before running it, so that a crash
    /// that kills the process (abort, stack overflow) leaves its input behind.
    pub trace: bool,
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub seeds: usize,
    pub execs: u64,
    pub accepted: u64,
    pub pool: usize,
    pub seconds: f64,
    /// Saved crash inputs, with their panic messages.
    pub crashes: Vec<(PathBuf, String)>,
}

/// The most distinct accepted inputs kept for mutation.
const MAX_POOL: usize = 2048;
/// Crashes saved per target (the rest are counted in `execs` but not written).
const MAX_SAVED: usize = 16;

thread_local! {
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
    /// Set while [`exec`] runs a target on this thread.
    static CATCHING: Cell<bool> = const { Cell::new(false) };
}

/// Installs (once) a panic hook that, while [`exec`] runs a target, records the message instead
/// of printing it (a crash found would otherwise flood the output); other panics print as usual.
pub fn quiet_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if CATCHING.with(Cell::get) {
                LAST_PANIC.with(|p| *p.borrow_mut() = Some(info.to_string()));
            } else {
                previous(info);
            }
        }));
    });
}

/// The files of `dir`, sorted by name (a missing directory is an empty corpus).
pub fn load_corpus(dir: &Path) -> Vec<Vec<u8>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    paths.retain(|p| p.is_file());
    paths.sort();
    paths.iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

fn hash_of(data: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    data.hash(&mut h);
    h.finish()
}

/// Runs `target` once; `Err` carries the panic message.
pub fn exec(target: Target, input: &[u8]) -> Result<bool, String> {
    CATCHING.with(|c| c.set(true));
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| target(input)));
    CATCHING.with(|c| c.set(false));
    result.map_err(|_| {
        LAST_PANIC
            .with(|p| p.borrow_mut().take())
            .unwrap_or_else(|| "panic without a message".into())
    })
}

/// Replays the corpus of `name`, then mutates it until the time or the execution budget is
/// spent. Call [`quiet_panics`] first (else each crash also prints its panic).
pub fn run(name: &str, target: Target, opts: &Options) -> std::io::Result<Report> {
    let started = Instant::now();
    let artifacts = opts.artifacts.join(name);
    let mut report = Report::default();
    let mut rng = Rng::new(opts.seed ^ hash_of(name.as_bytes()));
    let mut pool = load_corpus(&opts.corpus.join(name));
    report.seeds = pool.len();
    if pool.is_empty() {
        pool.push(Vec::new());
    }
    let mut seen: HashSet<u64> = pool.iter().map(|p| hash_of(p)).collect();
    let mut crash_kinds: HashSet<String> = HashSet::new();
    let budget_left = |report: &Report| opts.max_execs.is_none_or(|m| report.execs < m);

    let mut one = |input: &[u8], report: &mut Report| -> std::io::Result<bool> {
        if opts.trace {
            std::fs::create_dir_all(&artifacts)?;
            std::fs::write(artifacts.join("last-input"), input)?;
        }
        report.execs += 1;
        match exec(target, input) {
            Ok(accepted) => {
                report.accepted += u64::from(accepted);
                Ok(accepted)
            }
            Err(message) => {
                // One file per distinct panic site (the message's first line names it).
                let kind = message.lines().next().unwrap_or_default().to_string();
                if crash_kinds.insert(kind) && report.crashes.len() < MAX_SAVED {
                    std::fs::create_dir_all(&artifacts)?;
                    let path = artifacts.join(format!("crash-{:016x}", hash_of(input)));
                    std::fs::write(&path, input)?;
                    std::fs::write(path.with_extension("txt"), &message)?;
                    report.crashes.push((path, message));
                }
                Ok(false)
            }
        }
    };

    for input in &pool {
        if !budget_left(&report) {
            break;
        }
        one(input, &mut report)?;
    }
    let deadline = Instant::now() + opts.time;
    while budget_left(&report) && Instant::now() < deadline {
        let a = rng.below(pool.len());
        let b = rng.below(pool.len());
        let mutant = mutate::mutate(&mut rng, &pool[a], &pool[b]);
        if one(&mutant, &mut report)? && pool.len() < MAX_POOL && seen.insert(hash_of(&mutant)) {
            pool.push(mutant);
        }
    }
    report.pool = pool.len();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}
