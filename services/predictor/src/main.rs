//! `miner-predictor`: serves an ONNX model on a Bittensor axon. Serving lands with its own issue;
//! today the daemon serves its D-Bus interface and says so. Wiring only.

mod interface;

use clap::Parser;
use taominer_core::bus::Part;
use taominer_core::runtime::{self, DaemonArgs};

/// The taominer predictor daemon (D-Bus name org.taominer.Predictor1).
#[derive(Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    daemon: DaemonArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let daemon = Args::parse().daemon.start(Part::Predictor);
    let _lock = daemon.lock_state()?;
    let _conn = daemon
        .serve(interface::PredictorService, interface::STATUS)
        .await?;
    runtime::until_shutdown(runtime::idle_loop(|| interface::STATUS.to_string())).await;
    Ok(())
}
