//! `miner-trainer`: trains a LLaMA model on local text, checkpoints it in Hugging Face's format,
//! and hands checkpoints that beat the upload threshold to the publisher. Wiring only: the loop is
//! in `train.rs`, the D-Bus object in `interface.rs`, the hand-off in `handoff.rs`.

use taominer_trainer::{handoff, interface, remote, train};

use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use taominer_core::bus::Part;
use taominer_core::runtime::{self, DaemonArgs};

/// The taominer trainer daemon (D-Bus name org.taominer.Trainer1).
///
/// The run is configured in [trainer] (see miner.toml.example); the flags below are upstream
/// miners' names for the common settings and override the file.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    daemon: DaemonArgs,

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

    /// cpu, cuda or cuda:N (trainer.device).
    #[arg(long, value_name = "DEVICE")]
    device: Option<String>,
}

impl Args {
    /// The flags, as the `--set` overrides they stand for.
    fn overrides(&self) -> Vec<String> {
        let mut set = Vec::new();
        if let Some(d) = &self.load_model_dir {
            set.push("trainer.start=model-dir".to_string());
            set.push(format!(
                "trainer.load_model_dir={}",
                toml_string(&d.to_string_lossy())
            ));
        }
        if let Some(n) = self.load_uid {
            set.push("trainer.start=uid".to_string());
            set.push(format!("trainer.load_uid={n}"));
        }
        if self.load_best {
            set.push("trainer.start=best".to_string());
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    let flags = args.overrides();
    args.daemon.set.extend(flags);
    let daemon = args.daemon.start(Part::Trainer);
    taominer_trainer::alloc::tune_for_training();
    let _lock = daemon.lock_state()?;
    let t = &daemon.config.trainer;
    let start = match t.start.as_str() {
        "model-dir" => train::Start::ModelDir(t.load_model_dir.clone().unwrap_or_default()),
        "uid" => train::Start::Uid(t.load_uid.unwrap_or_default()),
        "best" => train::Start::Best,
        _ => train::Start::Scratch,
    };

    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let shared = Arc::new(train::Shared::new(t.autostart, tx));
    let service = interface::TrainerService {
        shared: shared.clone(),
    };
    let conn = daemon.serve(service, &shared.progress().line()).await?;

    let loop_shared = shared.clone();
    let (config, state_dir) = (daemon.config.clone(), daemon.state_dir.clone());
    // Online, the loop reads other miners' models (start from a UID, gate on the best) through
    // the committer and the Hub; it blocks on this runtime for those calls.
    let remote = if config.miner.offline {
        None
    } else {
        Some(remote::Remote::new(conn.clone(), &config, &state_dir)?)
    };
    let handle = tokio::runtime::Handle::current();
    let thread = std::thread::Builder::new()
        .name("train".into())
        .spawn(move || train::run_thread(config, state_dir, start, remote, handle, &loop_shared))?;

    let worker = handoff::run(shared.clone(), conn, daemon.state_dir.clone(), rx);
    let outcome = runtime::until_shutdown(worker).await;
    // Stop after the current step; the loop writes a checkpoint of where it got to.
    shared.set_control(train::Control::Stop);
    let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    if let Some(Err(e)) = outcome {
        return Err(e.into());
    }
    Ok(())
}
