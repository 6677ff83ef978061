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
    let _lock = daemon.lock_state()?;
    let shared = Arc::new(
        jobs::Shared::open(daemon.config.clone(), &daemon.state_dir)
            .context("cannot open the committer's state")?,
    );
    if !daemon.config.miner.offline {
        tracing::warn!("miner.offline = false, but chain writes are not built yet: Commit will answer NotImplemented");
    }
    let service = interface::CommitterService {
        shared: shared.clone(),
    };
    let conn = daemon.serve(service, &shared.summary()).await?;

    if let Some(res) =
        runtime::until_shutdown(worker::run(shared, conn, Watchdog::from_env())).await
    {
        res?;
    }
    Ok(())
}
