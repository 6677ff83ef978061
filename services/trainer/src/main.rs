//! `miner-trainer`: trains candidate models and announces them to the publisher. Training lands with
//! its own issue; today the daemon serves its D-Bus interface and says so. Wiring only.

mod interface;

use clap::Parser;
use taominer_core::bus::Part;
use taominer_core::runtime::{self, DaemonArgs};

/// The taominer trainer daemon (D-Bus name org.taominer.Trainer1).
#[derive(Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    daemon: DaemonArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let daemon = Args::parse().daemon.start(Part::Trainer);
    let _lock = daemon.lock_state()?;
    let _conn = daemon
        .serve(interface::TrainerService, interface::STATUS)
        .await?;
    runtime::until_shutdown(runtime::idle_loop(|| interface::STATUS.to_string())).await;
    Ok(())
}
