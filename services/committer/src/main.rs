//! `miner-committer`: the only process that writes to the chain. Offline, it writes the same
//! commitments to a local ledger. Wiring only; see the modules.

mod chain;
mod error;
mod interface;
mod jobs;
mod ledger;
mod sink;
mod worker;

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use taominer_core::bus::Part;
use taominer_core::daemon::runtime::{self, DaemonArgs, Watchdog};
use taominer_core::wallet::Hotkey;

/// sysexits' EX_DATAERR: the ledger is damaged (see `ledger`).
const EX_DATAERR: i32 = 65;

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
    let hotkey = if daemon.config.miner.offline {
        None
    } else {
        let hotkey =
            Hotkey::configured(&daemon.config).unwrap_or_else(|e| runtime::exit_config(&e));
        tracing::info!(HOTKEY = hotkey.ss58(), "hotkey loaded");
        Some(hotkey)
    };
    let shared = match jobs::Shared::open(daemon.config.clone(), &daemon.state_dir, hotkey) {
        Ok(shared) => Arc::new(shared),
        // Damaged state will not mend itself: exit 65, which the unit does not restart.
        Err(e @ error::Error::LedgerCorrupt(_)) => {
            tracing::error!("{e}");
            eprintln!("miner-committer: {e}");
            std::process::exit(EX_DATAERR);
        }
        Err(e) => return Err(e).context("cannot open the committer's state"),
    };
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
