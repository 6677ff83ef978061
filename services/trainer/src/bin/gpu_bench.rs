//! `miner-gpu-bench`: the trainer's measurements for `scripts/gpu-check`, in-process (the GPU
//! machine has no D-Bus, so the daemon cannot run there). Wiring only: the measurements are in
//! `gpu_check.rs`. Each subcommand prints one JSON object.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use taominer_core::config::{Config, Sources};
use taominer_trainer::gpu_check;

/// The GPU check's trainer measurements (gradients, a training run, throughput vs the plan).
///
/// The run is configured as the daemon's ([trainer] keys, with --config and --set); the model
/// is [trainer.model] from scratch.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Command,
    /// The TOML configuration file.
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Override one configuration key, e.g. --set trainer.device=\"cuda\" (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE", global = true)]
    set: Vec<String>,
}

#[derive(Subcommand)]
enum Command {
    /// One micro-batch's loss and every parameter's gradient; writes OUT/model, OUT/ids.json and
    /// OUT/ours.safetensors.
    Grads {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// The real training loop until trainer.max_steps, with its checkpoints in STATE_DIR.
    Train {
        #[arg(long, value_name = "DIR")]
        state_dir: PathBuf,
    },
    /// Tokens/s of optimiser steps on random ids, and the peak memory against the plan.
    Throughput {
        /// Measured steps.
        #[arg(long, default_value_t = 4)]
        steps: usize,
        /// Steps run first and not timed (kernel loading, the allocator's pool).
        #[arg(long, default_value_t = 1)]
        warmup: usize,
    },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    taominer_trainer::alloc::tune_for_training();
    let sources = Sources {
        file: args.config,
        overrides: args.set,
        env: false,
    };
    let config = Config::load(&sources)?;
    let out = match args.command {
        Command::Grads { out } => serde_json::to_value(gpu_check::grads(&config, &out)?)?,
        Command::Train { state_dir } => {
            serde_json::to_value(gpu_check::train(&config, &state_dir)?)?
        }
        Command::Throughput { steps, warmup } => {
            serde_json::to_value(gpu_check::throughput(&config, warmup, steps)?)?
        }
    };
    println!("{out}");
    Ok(())
}
