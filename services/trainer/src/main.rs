//! `miner-trainer`: trains candidate models and announces them to the publisher. Training lands with
//! its own issue; today the daemon serves its D-Bus interface and says so. Wiring only.

mod interface;

use anyhow::Context;
use clap::Parser;
use taominer_core::bus::Part;
use taominer_core::runtime::{self, DaemonArgs};
use taominer_core::store::DirLock;

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
    let _lock = DirLock::acquire(&daemon.state_dir)?;
    let _conn = runtime::serve(&daemon.bus, Part::Trainer, interface::TrainerService)
        .await
        .with_context(|| {
            format!(
                "cannot serve {} on {}",
                Part::Trainer.bus_name(),
                daemon.bus
            )
        })?;
    runtime::notify_ready(interface::STATUS);
    tracing::info!("trainer ready on {}", daemon.bus);
    runtime::until_shutdown(runtime::idle_loop(|| interface::STATUS.to_string())).await;
    Ok(())
}
