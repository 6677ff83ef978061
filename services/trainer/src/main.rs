//! `miner-trainer`: trains a LLaMA model on local text, checkpoints it in Hugging Face's format,
//! and hands checkpoints that beat the upload threshold to the publisher; `miner-trainer plan`
//! prints a run's memory plan. Wiring only: the loop is in `train.rs` (or, with
//! `trainer.engine = "external"`, the supervised engine in `external/`), the D-Bus object in
//! `interface.rs`, the hand-off in `handoff.rs`, the plan in `plan.rs`.

use taominer_trainer::{external, handoff, interface, plan, progress, remote, train};

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use taominer_core::bus::Part;
use taominer_core::config::{Config, Engine, Sources, StartFrom};
use taominer_core::daemon::runtime::{self, DaemonArgs};

/// The taominer trainer daemon (D-Bus name org.taominer.Trainer1).
///
/// The run is configured in [trainer] (see miner.toml.example); the flags below are upstream
/// miners' names for the common settings and override the file. With no subcommand it runs the
/// daemon; `miner-trainer plan` prints the run's memory plan instead.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,

    #[command(flatten)]
    daemon: DaemonArgs,

    #[command(flatten)]
    flags: Flags,
}

#[derive(Subcommand)]
enum Command {
    /// Print the run's memory plan: what it needs at its peak, and whether that fits.
    ///
    /// The bytes of the weights, their f32 master copy, gradients, AdamW moments, activations, the
    /// largest layer's and the loss's working sets and the peak, against the device's free memory
    /// (CPU: MemAvailable or the cgroup's limit), and which settings to turn when it does not fit.
    /// The model is the one the daemon would train: the latest checkpoint in the state directory
    /// (a restart resumes it), else [trainer.model] (start = "scratch") or the config.json of
    /// --load-model-dir. The daemon runs the same plan before it allocates a model and refuses a
    /// run that does not fit.
    Plan(PlanArgs),
}

#[derive(clap::Args)]
struct PlanArgs {
    /// The TOML configuration file (e.g. /etc/taominer/miner.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Override one configuration key, e.g. --set trainer.batch_size=2 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,

    /// The trainer's state directory (default $STATE_DIRECTORY): its latest checkpoint is the
    /// model a restart resumes, its token cache the data it holds. Only read.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,

    #[command(flatten)]
    flags: Flags,

    /// Print JSON instead of the table.
    #[arg(long)]
    json: bool,

    /// Compare with this much memory instead of the device's free memory: a number of GiB, or
    /// with a unit (80GB, 79.6GiB, 512MiB).
    #[arg(long, value_name = "SIZE")]
    capacity: Option<String>,

    /// Also run N optimiser steps of the model on random tokens, on the CPU, in this process
    /// (the loop's own step code), and print the predicted and the measured peak resident memory.
    #[arg(long, value_name = "N")]
    measure: Option<usize>,
}

/// Upstream miners' flags.
#[derive(clap::Args)]
struct Flags {
    /// Start from this Hugging Face model directory (config.json + safetensors) instead of
    /// from scratch (trainer.start = "model-dir").
    #[arg(long, value_name = "DIR")]
    load_model_dir: Option<PathBuf>,

    /// Start from the model UID N committed (trainer.start = "uid"; online).
    #[arg(long, value_name = "N")]
    load_uid: Option<u16>,

    /// Start from the competition's best model (trainer.start = "best"; online).
    #[arg(long)]
    load_best: bool,

    /// Offline mode: no wallet, no chain, no Hub (miner.offline = true).
    #[arg(long)]
    offline: bool,

    /// cpu, cuda or cuda:N (trainer.device; checked with the configuration: a bad one exits 78).
    #[arg(long, value_name = "DEVICE")]
    device: Option<String>,
}

impl Flags {
    /// The flags, as the `--set` overrides they stand for.
    fn overrides(&self) -> Vec<String> {
        let mut set = Vec::new();
        if let Some(d) = &self.load_model_dir {
            set.push(format!("trainer.start={}", StartFrom::ModelDir));
            set.push(format!(
                "trainer.load_model_dir={}",
                toml_string(&d.to_string_lossy())
            ));
        }
        if let Some(n) = self.load_uid {
            set.push(format!("trainer.start={}", StartFrom::Uid));
            set.push(format!("trainer.load_uid={n}"));
        }
        if self.load_best {
            set.push(format!("trainer.start={}", StartFrom::Best));
        }
        if self.offline {
            set.push("miner.offline=true".to_string());
        }
        if let Some(d) = &self.device {
            set.push(format!("trainer.device={}", toml_string(d)));
        }
        set
    }
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// `miner-trainer plan`.
fn plan_command(daemon: DaemonArgs, flags: &Flags, args: PlanArgs) -> anyhow::Result<()> {
    runtime::init_logging(Part::Trainer.unit());
    // As the daemon: the allocator settings change what a step leaves resident (--measure).
    taominer_trainer::alloc::tune_for_training();
    let mut overrides = daemon.set;
    overrides.extend(flags.overrides());
    overrides.extend(args.set);
    overrides.extend(args.flags.overrides());
    let sources = Sources {
        file: args.config.or(daemon.config),
        overrides,
        env: true,
    };
    let config = Config::load(&sources).unwrap_or_else(|e| runtime::exit_config(&e));
    let t = &config.trainer;
    let state_dir = args
        .state_dir
        .or(daemon.state_dir)
        .or_else(|| std::env::var_os("STATE_DIRECTORY").map(PathBuf::from))
        .filter(|d| d.is_dir());
    let (model, from) = plan::configured_model(t, state_dir.as_deref())?;
    let cuda = t.device.is_cuda();
    let data = state_dir.as_deref().map(plan::data_bytes).unwrap_or(0);
    let setup = plan::Setup::new(t, &model, cuda, data);
    let p = plan::plan(&setup);
    let capacity = match &args.capacity {
        Some(s) => Some(plan::Capacity {
            bytes: plan::parse_size(s).ok_or_else(|| {
                anyhow::anyhow!("--capacity {s:?}: a size such as 80GB, 79.6GiB or 512MiB")
            })?,
            source: format!("--capacity {s}"),
        }),
        // The device as the daemon opens it (CUDA needs a build with the feature).
        None => match train::device_for(t.device) {
            Ok(device) => plan::capacity(&device, 0),
            Err(e) => {
                tracing::warn!("no capacity to compare with: {e}");
                None
            }
        },
    };
    let measured = match args.measure {
        Some(_) if cuda => anyhow::bail!("--measure runs on the CPU: add --device cpu"),
        Some(steps) => Some((steps, plan::measure(t, &model, steps)?)),
        None => None,
    };
    print!(
        "{}",
        plan::report(&setup, &p, &from, capacity.as_ref(), measured, args.json)?
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if let Some(Command::Plan(plan_args)) = args.command {
        return plan_command(args.daemon, &args.flags, plan_args);
    }
    let flags = args.flags.overrides();
    args.daemon.set.extend(flags);
    let daemon = args.daemon.start(Part::Trainer);
    taominer_trainer::alloc::tune_for_training();
    let _lock = daemon.lock_state()?;
    let t = &daemon.config.trainer;
    // Config::load checked it; a second look cannot differ, but a bad start is never guessed.
    let start = t
        .resolve_start()
        .unwrap_or_else(|e| runtime::exit_config(&e));
    // Online, a configured token that cannot be read stops the daemon here (exit 78).
    let token = if daemon.config.miner.offline {
        None
    } else {
        remote::read_token(&daemon.config.hub).unwrap_or_else(|e| runtime::exit_config(&e))
    };

    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let shared = Arc::new(progress::Shared::new(t.autostart, tx));
    let service = interface::TrainerService {
        shared: shared.clone(),
        engine: t.engine,
    };
    let conn = daemon.serve(service, &shared.progress().line()).await?;

    let loop_shared = shared.clone();
    let (config, state_dir) = (daemon.config.clone(), daemon.state_dir.clone());
    // Online, the loop reads other miners' models (start from a UID, gate on the best) through
    // the committer and the Hub; it blocks on this runtime for those calls.
    let remote = if config.miner.offline {
        None
    } else {
        Some(remote::Remote::new(
            conn.clone(),
            &config,
            &state_dir,
            token,
        )?)
    };
    let handle = tokio::runtime::Handle::current();
    let thread = match config.trainer.engine {
        Engine::Candle => std::thread::Builder::new()
            .name("train".into())
            .spawn(move || {
                train::run_thread(config, state_dir, start, remote, handle, &loop_shared)
            })?,
        Engine::External => std::thread::Builder::new()
            .name("engine".into())
            .spawn(move || {
                external::run_thread(config, state_dir, start, remote, handle, &loop_shared)
            })?,
    };

    let worker = handoff::run(shared.clone(), conn, daemon.state_dir.clone(), rx);
    let outcome = runtime::until_shutdown(worker).await;
    // Stop after the current step; the loop writes a checkpoint of where it got to.
    shared.set_control(progress::Control::Stop);
    let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    if let Some(Err(e)) = outcome {
        return Err(e.into());
    }
    Ok(())
}
