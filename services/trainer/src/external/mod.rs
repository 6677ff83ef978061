//! `trainer.engine = "external"`: the daemon runs an existing distributed training engine
//! (torchrun + FSDP, DeepSpeed, …) instead of its own loop, and does what that engine does not:
//! scores each checkpoint with the validators' metric on the held-out split, applies the
//! candidate rule, hands candidates to the publisher exactly once, survives crashes of either
//! side, and shows it all through the same `Shared` progress as the built-in loop.
//!
//! The contract with the engine (environment, checkpoint layout, resume) is in docs/trainer.md,
//! "External engine". Three parts: `files` (what the engine is given), `supervisor` (the child
//! process and its metrics file) and `intake` (checkpoints: completeness, scoring, candidates).

pub mod files;
pub mod intake;
pub mod metrics;
pub mod supervisor;

use std::path::{Path, PathBuf};

use taominer_core::bus::TrainerState;
use taominer_core::config::{Config, Start};

use crate::error::Error;
use crate::progress::{Control, Shared};
use crate::remote::Remote;

/// The daemon's own files for the engine, under `<state>/external/`.
pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("external")
}

/// The engine thread's body (the external counterpart of [`crate::train::run_thread`]): clean
/// up an engine a previous daemon life left behind, prepare the engine's inputs, then supervise
/// the engine on this thread while the intake scores checkpoints on another, until `Stop`.
pub fn run_thread(
    cfg: Config,
    state_dir: PathBuf,
    start: Start,
    remote: Option<Remote>,
    handle: tokio::runtime::Handle,
    shared: &Shared,
) {
    let ext_dir = dir(&state_dir);
    // Before anything else, even while paused: an engine of a previous daemon life that
    // survived it (a SIGKILLed daemon outside systemd) must not keep training beside ours.
    if let Err(e) = taominer_core::daemon::store::ensure_dir(&ext_dir)
        .map_err(Error::from)
        .and_then(|()| supervisor::kill_stale(&ext_dir))
    {
        fail(shared, &e);
        return;
    }
    if shared.wait_while_paused() == Control::Stop {
        return;
    }
    if cfg.trainer.data.is_empty() {
        shared.update(|p| {
            p.state = TrainerState::Idle;
            p.last_error = crate::train::NO_DATA.into();
        });
        tracing::warn!("{}", crate::train::NO_DATA);
        return;
    }
    shared.update_state(TrainerState::Starting);
    let prepared = match files::prepare(&cfg, &state_dir, &start, &|| shared.beat()) {
        Ok(p) => p,
        Err(e) => {
            fail(shared, &e);
            return;
        }
    };
    let remote = remote.map(|r| (r, handle));
    let mut intake = match intake::Intake::open(&cfg, &state_dir, &prepared, remote, shared) {
        Ok(i) => i,
        Err(e) => {
            fail(shared, &e);
            return;
        }
    };
    std::thread::scope(|s| {
        let intake_thread = std::thread::Builder::new()
            .name("intake".into())
            .spawn_scoped(s, || intake.run(shared));
        if let Err(e) = intake_thread {
            fail(
                shared,
                &Error::Model(format!("cannot start the intake thread: {e}")),
            );
            return;
        }
        supervisor::supervise(&cfg.trainer.external, &ext_dir, &prepared, shared);
    });
}

/// Records a failure for `Status` and the journal.
pub(crate) fn fail(shared: &Shared, e: &Error) {
    tracing::error!("external engine: {e}");
    shared.update(|p| {
        p.state = TrainerState::Failed;
        p.last_error = e.to_string();
    });
}
