//! `miner-committer`: the only process that writes to the chain. Offline, it writes the same
//! commitments to a local ledger. Wiring only; see the modules.

mod error;
mod interface;
mod jobs;
mod ledger;
mod worker;

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use taominer_core::bus::Part;
use taominer_core::runtime::{self, DaemonArgs, Watchdog};
use taominer_core::store::DirLock;

/// The taominer committer daemon (D-Bus name org.taominer.Committer1).
#[derive(Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    daemon: DaemonArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let daemon = Args::parse().daemon.start(Part::Committer);
    let _lock = DirLock::acquire(&daemon.state_dir)?;
    let shared = Arc::new(
        jobs::Shared::open(daemon.config.clone(), &daemon.state_dir)
            .context("cannot open the committer's state")?,
    );
    if !daemon.config.miner.offline {
        tracing::warn!("miner.offline = false, but chain writes are not built yet: Commit will answer NotImplemented");
    }
    let conn = runtime::serve(
        &daemon.bus,
        Part::Committer,
        interface::CommitterService {
            shared: shared.clone(),
        },
    )
    .await
    .with_context(|| {
        format!(
            "cannot serve {} on {}",
            Part::Committer.bus_name(),
            daemon.bus
        )
    })?;
    runtime::notify_ready(&shared.summary());
    tracing::info!(STATE_DIR = %daemon.state_dir.display(), "committer ready on {}", daemon.bus);

    if let Some(res) =
        runtime::until_shutdown(worker::run(shared, conn, Watchdog::from_env())).await
    {
        res?;
    }
    Ok(())
}
