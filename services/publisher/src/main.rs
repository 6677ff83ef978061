//! `miner-publisher`: accepts model directories, stages and hashes them exactly as validators
//! will, and hands their commitments to the committer. Wiring only; see the modules.

mod error;
mod interface;
mod jobs;
mod pipeline;
mod staging;

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use taominer_core::bus::Part;
use taominer_core::runtime::{self, DaemonArgs, Watchdog};

/// The taominer publisher daemon (D-Bus name org.taominer.Publisher1).
#[derive(Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    daemon: DaemonArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let daemon = Args::parse().daemon.start(Part::Publisher);
    let _lock = daemon.lock_state()?;
    let shared = Arc::new(
        jobs::Shared::open(daemon.config.clone(), daemon.state_dir.clone())
            .context("cannot open the publisher's state")?,
    );
    let service = interface::PublisherService {
        shared: shared.clone(),
    };
    let conn = daemon.serve(service, &shared.summary()).await?;

    if let Some(res) =
        runtime::until_shutdown(pipeline::run(shared, conn, Watchdog::from_env())).await
    {
        res?;
    }
    Ok(())
}
