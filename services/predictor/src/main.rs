//! `miner-predictor`: serves an ONNX model on a Bittensor axon. Wiring only; see the library.

use clap::{Parser, Subcommand};
use taominer_core::bus::Part;
use taominer_core::config::{Config, Sources};
use taominer_core::daemon::runtime::{self, DaemonArgs};
use taominer_predictor::cli::{self, PredictArgs};

/// The taominer predictor daemon (D-Bus name org.taominer.Predictor1): serves the model in
/// predictor.model_path on a Bittensor axon to the subnet's validators.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    daemon: DaemonArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run a model on image files as the axon would, print one JSON line each, and exit.
    Predict(PredictArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.command {
        Some(Command::Predict(p)) => {
            let sources = Sources {
                file: args.daemon.config.clone(),
                overrides: args.daemon.set.clone(),
                env: true,
            };
            let config = Config::load(&sources).unwrap_or_else(|e| runtime::exit_config(&e));
            if let Err(e) = cli::predict(&p, &config.predictor) {
                eprintln!("miner-predictor predict: {e}");
                std::process::exit(1);
            }
            Ok(())
        }
        None => taominer_predictor::daemon::run(args.daemon.start(Part::Predictor)).await,
    }
}
