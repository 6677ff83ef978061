//! The external engine as the daemon's child: started in its own process group with the
//! contract's environment, its output forwarded to the journal (`ENGINE=` field), restarted with
//! capped backoff after a crash (resuming from the newest complete checkpoint), failed after
//! `max_restarts` quick crashes in a row, and stopped on `Pause` and daemon stop with SIGTERM to
//! the group, then SIGKILL after `stop_grace_seconds`.
//!
//! The engine must not outlive a daemon that is SIGKILLed. Two mechanisms, because each misses a
//! case: `PR_SET_PDEATHSIG` (set in the child before exec) kills the engine's leader the moment
//! the daemon dies, but reaches neither the leader's own children nor a leader that re-parented
//! itself; the pidfile `<state>/external/engine.pid` names the process group, which the next
//! daemon life kills whole before it starts anything. Workers in sessions of their own
//! (torchrun starts every rank so) are out of reach of both, and of the group signals of `Pause`:
//! they must set the death signal on themselves (the contract's recommendation, done by
//! recipes/fsdp/train.py). Under systemd, `KillMode=control-group` (the default, kept in
//! units/miner-trainer.service) is the backstop.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use taominer_core::bus::TrainerState;
use taominer_core::config::ExternalConfig;
use taominer_core::daemon::backoff::Backoff;
use taominer_core::daemon::store;

use super::files::Prepared;
use super::metrics::MetricsTail;
use crate::error::{Error, Result};
use crate::progress::{Control, Shared};

/// How often the child, the control switch and the metrics file are looked at.
const POLL: Duration = Duration::from_millis(200);
/// A crash after the engine ran this long is not a "quick" one: the count of crashes in a row
/// and the backoff start over.
const QUICK: Duration = Duration::from_secs(60);
/// Longest output line forwarded to the journal; the rest of the line is dropped.
const MAX_LINE: usize = 2048;
/// Output lines kept for the error of a failed run.
const LAST_LINES: usize = 5;

/// `engine.pid`: the engine's process group and its leader's start time (in clock ticks since
/// boot, /proc/PID/stat field 22), so a recycled pid is never mistaken for our engine.
#[derive(Debug, Serialize, Deserialize)]
struct PidFile {
    pgid: i32,
    start_time: Option<u64>,
}

fn pidfile(ext_dir: &Path) -> PathBuf {
    ext_dir.join("engine.pid")
}

/// The start time of process `pid`, or `None` when there is no such process.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Kills the process group a previous daemon life recorded, unless its leader's pid now belongs
/// to another process. Removes the pidfile.
pub fn kill_stale(ext_dir: &Path) -> Result<()> {
    let path = pidfile(ext_dir);
    let Some(rec) = store::read_json::<PidFile>(&path)? else {
        return Ok(());
    };
    let now = start_time(rec.pgid);
    // A leader that is gone leaves its group id unusable for new groups while any member lives,
    // so signalling the group reaches only the engine's leftovers (or nobody: ESRCH).
    let ours = now.is_none() || now == rec.start_time;
    if rec.pgid > 1 && ours {
        // SAFETY: kill(2) with a negative pid signals a process group; no memory is involved.
        let r = unsafe { libc::kill(-rec.pgid, libc::SIGKILL) };
        if r == 0 {
            tracing::warn!(
                PGID = rec.pgid,
                "killed the engine a previous daemon life left running"
            );
        }
    }
    std::fs::remove_file(&path).map_err(Error::io("cannot remove", &path))?;
    Ok(())
}

/// A running engine.
struct Running {
    child: Child,
    pgid: i32,
    started: Instant,
    last_lines: Arc<Mutex<VecDeque<String>>>,
    forwarders: Vec<std::thread::JoinHandle<()>>,
}

impl Running {
    /// SIGTERM to the group, SIGKILL after `grace`; waits for the leader and then kills
    /// whatever of the group is left (workers that ignored the leader's exit; workers in
    /// sessions of their own die by their own death signal, docs/trainer.md).
    fn stop(mut self, grace: Duration, shared: &Shared) -> Option<ExitStatus> {
        signal_group(self.pgid, libc::SIGTERM);
        let deadline = Instant::now() + grace;
        let mut status = None;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                status = Some(s);
                break;
            }
            shared.beat();
            std::thread::sleep(Duration::from_millis(50));
        }
        if status.is_none() {
            tracing::warn!(
                PGID = self.pgid,
                "the engine did not stop within {grace:?} of SIGTERM; SIGKILL"
            );
            signal_group(self.pgid, libc::SIGKILL);
            status = self.child.wait().ok();
        }
        self.reap();
        status
    }

    /// After the leader exited: kills any member of its group still alive, and joins the
    /// output forwarders (their pipes close when the last writer is gone).
    fn reap(&mut self) {
        signal_group(self.pgid, libc::SIGKILL);
        for f in self.forwarders.drain(..) {
            let _ = f.join();
        }
    }

    fn last_output(&self) -> String {
        let lines = self
            .last_lines
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default();
        lines.into_iter().collect::<Vec<_>>().join(" | ")
    }
}

fn signal_group(pgid: i32, sig: i32) {
    if pgid > 1 {
        // SAFETY: kill(2) on the process group we created; no memory is involved.
        unsafe {
            libc::kill(-pgid, sig);
        }
    }
}

/// Starts the engine: argv from the config, plus `<resume_flag> <checkpoint>` when there is a
/// complete checkpoint to resume from.
fn spawn(
    cfg: &ExternalConfig,
    ext_dir: &Path,
    prepared: &Prepared,
    resume: Option<&Path>,
) -> Result<Running> {
    let mut cmd = Command::new(&cfg.command[0]);
    cmd.args(&cfg.command[1..]);
    if let (Some(flag), Some(path)) = (&cfg.resume_flag, resume) {
        cmd.arg(flag).arg(path);
    }
    let workdir = cfg.workdir.clone().unwrap_or_else(|| ext_dir.to_path_buf());
    cmd.current_dir(&workdir)
        .envs(&cfg.environment)
        .env("TAOMINER_CHECKPOINT_DIR", &prepared.checkpoint_dir)
        .env("TAOMINER_METRICS_FILE", &prepared.metrics)
        .env("TAOMINER_TRAIN_TOKENS", &prepared.train_tokens)
        .env("TAOMINER_TRAIN_META", &prepared.train_meta)
        .env("TAOMINER_MODEL_CONFIG", &prepared.model_config)
        .env("TAOMINER_TOKENIZER", &prepared.tokenizer)
        // Never the daemon's own notify socket or credentials: the engine is not the service.
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .env_remove("CREDENTIALS_DIRECTORY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let parent = std::process::id() as i32;
    // SAFETY: the closure runs between fork and exec and calls only async-signal-safe functions
    // (prctl, getppid) and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The daemon died between fork and prctl: the death signal would never come.
            if libc::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| {
        Error::Model(format!(
            "cannot start the engine {:?} in {}: {e}",
            cfg.command[0],
            workdir.display()
        ))
    })?;
    let pgid = child.id() as i32;
    store::write_json(
        &pidfile(ext_dir),
        &PidFile {
            pgid,
            start_time: start_time(pgid),
        },
    )?;
    let last_lines = Arc::new(Mutex::new(VecDeque::new()));
    let mut forwarders = Vec::new();
    if let Some(out) = child.stdout.take() {
        forwarders.push(forward(out, "stdout", last_lines.clone()));
    }
    if let Some(err) = child.stderr.take() {
        forwarders.push(forward(err, "stderr", last_lines.clone()));
    }
    tracing::info!(
        PGID = pgid,
        "engine started: {}{}",
        cfg.command.join(" "),
        resume.map_or(String::new(), |p| format!(" (resuming {})", p.display()))
    );
    Ok(Running {
        child,
        pgid,
        started: Instant::now(),
        last_lines,
        forwarders,
    })
}

/// Forwards one of the engine's streams to the journal, a line at a time, each cut at
/// [`MAX_LINE`] bytes.
fn forward(
    stream: impl Read + Send + 'static,
    name: &'static str,
    last: Arc<Mutex<VecDeque<String>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        loop {
            line.clear();
            let Ok(n) = read_line_bounded(&mut reader, &mut line) else {
                break;
            };
            if n == 0 {
                break;
            }
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end();
            tracing::info!(ENGINE = name, "{text}");
            if let Ok(mut l) = last.lock() {
                if l.len() == LAST_LINES {
                    l.pop_front();
                }
                l.push_back(text.chars().take(300).collect());
            }
        }
    })
}

/// Reads up to the next newline, keeping at most [`MAX_LINE`] bytes of it. Returns the bytes
/// consumed (0 at the end of the stream).
fn read_line_bounded(reader: &mut impl BufRead, line: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut consumed = 0;
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(consumed);
        }
        let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], i + 1),
            None => (buf, buf.len()),
        };
        let room = MAX_LINE.saturating_sub(line.len());
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let ended = done > chunk.len();
        reader.consume(done);
        consumed += done;
        if ended {
            return Ok(consumed);
        }
    }
}

/// How an exit reads in an error: `exit status 3`, `signal 9`.
fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => status.to_string(),
    }
}

/// Supervises the engine until `Stop` (see the module documentation). Sets the state:
/// `training` while it runs, `paused`, `finished` when it exits 0, `failed` after too many
/// quick crashes or when it cannot be started.
pub fn supervise(cfg: &ExternalConfig, ext_dir: &Path, prepared: &Prepared, shared: &Shared) {
    let mut engine: Option<Running> = None;
    let mut backoff = Backoff::new(
        Duration::from_millis(cfg.restart_initial_ms),
        Duration::from_millis(cfg.restart_max_ms),
    );
    let mut crashes = 0u32;
    let mut next_start = Instant::now();
    let mut metrics = MetricsTail::new(prepared.metrics.clone());
    let grace = Duration::from_secs(cfg.stop_grace_seconds);
    shared.update(|p| p.parameters = prepared.parameters);
    loop {
        shared.beat();
        metrics.update(shared);
        match shared.control() {
            Control::Stop => {
                if let Some(e) = engine.take() {
                    tracing::info!("stopping the engine");
                    e.stop(grace, shared);
                }
                let _ = std::fs::remove_file(pidfile(ext_dir));
                return;
            }
            Control::Pause => {
                if let Some(e) = engine.take() {
                    shared.update_state(TrainerState::Pausing);
                    tracing::info!("pausing: stopping the engine");
                    e.stop(grace, shared);
                    let _ = std::fs::remove_file(pidfile(ext_dir));
                }
                if !shared.progress().state.is_over() {
                    shared.update_state(TrainerState::Paused);
                    tracing::info!("paused");
                    if shared.wait_while_paused() == Control::Stop {
                        continue;
                    }
                    shared.update_state(TrainerState::Training);
                    next_start = Instant::now();
                } else {
                    std::thread::sleep(POLL);
                }
                continue;
            }
            Control::Run => {}
        }
        if shared.progress().state.is_over() {
            std::thread::sleep(POLL);
            continue;
        }
        match engine.as_mut() {
            None if Instant::now() >= next_start => {
                let resume = super::intake::newest_complete(cfg, ext_dir, &prepared.checkpoint_dir);
                match spawn(cfg, ext_dir, prepared, resume.as_deref()) {
                    Ok(e) => {
                        engine = Some(e);
                        shared.update_state(TrainerState::Training);
                    }
                    Err(e) => super::fail(shared, &e),
                }
            }
            None => {}
            Some(e) => {
                if let Ok(Some(status)) = e.child.try_wait() {
                    let mut e = engine.take().expect("a running engine");
                    e.reap();
                    let _ = std::fs::remove_file(pidfile(ext_dir));
                    if status.success() {
                        tracing::info!("the engine exited 0: the run is finished");
                        shared.update_state(TrainerState::Finished);
                        continue;
                    }
                    if e.started.elapsed() >= QUICK {
                        crashes = 0;
                        backoff.reset();
                    }
                    crashes += 1;
                    let what = describe(status);
                    let last = e.last_output();
                    if crashes > cfg.max_restarts {
                        super::fail(
                            shared,
                            &Error::Model(format!(
                                "the engine exited with {what} {crashes} times in a row, each within {}s of its start (trainer.external.max_restarts = {}); its last output: {last}",
                                QUICK.as_secs(),
                                cfg.max_restarts
                            )),
                        );
                        continue;
                    }
                    let delay = backoff.next_delay();
                    tracing::warn!(
                        "the engine exited with {what} (crash {crashes} in a row); restarting in {delay:?}; its last output: {last}"
                    );
                    shared.update(|p| p.last_error = format!("the engine exited with {what}"));
                    next_start = Instant::now() + delay;
                }
            }
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves: a line longer than the cap is cut at it and the rest of that line is dropped,
    /// and the next line is read whole.
    #[test]
    fn output_lines_are_bounded() {
        let long = "y".repeat(MAX_LINE * 3);
        let text = format!("{long}\nshort\n");
        let mut r = BufReader::with_capacity(64, text.as_bytes());
        let mut line = Vec::new();
        assert_eq!(
            read_line_bounded(&mut r, &mut line).unwrap(),
            long.len() + 1
        );
        assert_eq!(line.len(), MAX_LINE);
        line.clear();
        read_line_bounded(&mut r, &mut line).unwrap();
        assert_eq!(line, b"short");
        line.clear();
        assert_eq!(read_line_bounded(&mut r, &mut line).unwrap(), 0);
    }

    /// Proves: the stale-engine cleanup reads our own start time back (so it can tell a recycled
    /// pid), and a pidfile naming a pid that now belongs to another process is left alone.
    #[test]
    fn a_recycled_pid_is_not_killed() {
        let me = std::process::id() as i32;
        assert!(start_time(me).is_some());
        let dir = tempfile::tempdir().unwrap();
        store::write_json(
            &pidfile(dir.path()),
            &PidFile {
                pgid: me,
                start_time: start_time(me).map(|t| t + 1),
            },
        )
        .unwrap();
        kill_stale(dir.path()).unwrap();
        assert!(!pidfile(dir.path()).exists());
        // Still alive: we are running this line.
    }
}
