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
use taominer_core::store::DirLock;

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
    let _lock = DirLock::acquire(&daemon.state_dir)?;
    let shared = Arc::new(
        jobs::Shared::open(daemon.config.clone(), daemon.state_dir.clone())
            .context("cannot open the publisher's state")?,
    );
    let conn = runtime::serve(
        &daemon.bus,
        Part::Publisher,
        interface::PublisherService {
            shared: shared.clone(),
        },
    )
    .await
    .with_context(|| {
        format!(
            "cannot serve {} on {}",
            Part::Publisher.bus_name(),
            daemon.bus
        )
    })?;
    runtime::notify_ready(&shared.summary());
    tracing::info!(STATE_DIR = %daemon.state_dir.display(), "publisher ready on {}", daemon.bus);

    if let Some(res) =
        runtime::until_shutdown(pipeline::run(shared, conn, Watchdog::from_env())).await
    {
        res?;
    }
    Ok(())
}
