//! `miner-committer`: the only process that writes to the chain. Offline, it writes the same
//! commitments to a local ledger. Wiring only; see the modules.

mod chain;
mod error;
mod interface;
mod jobs;
mod ledger;
mod worker;

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use taominer_core::bus::Part;
use taominer_core::config::{Config, ConfigError};
use taominer_core::runtime::{self, DaemonArgs, Watchdog};
use taominer_core::wallet::Hotkey;

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
        let hotkey = load_hotkey(&daemon.config);
        tracing::info!(HOTKEY = hotkey.ss58(), "hotkey loaded");
        Some(hotkey)
    };
    let shared = Arc::new(
        jobs::Shared::open(daemon.config.clone(), &daemon.state_dir, hotkey)
            .context("cannot open the committer's state")?,
    );
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

/// The hotkey for online mode; any problem is a configuration error (exit 78) that says what to
/// fix, including a keyfile that is not the hotkey `miner.hotkey_ss58` names.
fn load_hotkey(config: &Config) -> Hotkey {
    let Some(path) = config.miner.hotkey_path() else {
        runtime::exit_config(&ConfigError::new(
            "miner.hotkey_file",
            "(unset)",
            "online mode needs the hotkey: LoadCredential=hotkey:/path under systemd, or miner.hotkey_file",
        ));
    };
    let hotkey = Hotkey::load(&path).unwrap_or_else(|e| {
        runtime::exit_config(&ConfigError::new(
            "miner.hotkey_file",
            path.display(),
            e.to_string(),
        ))
    });
    if let Some(expected) = &config.miner.hotkey_ss58 {
        if expected != hotkey.ss58() {
            runtime::exit_config(&ConfigError::new(
                "miner.hotkey_ss58",
                expected,
                format!("the hotkey file {} is {}", path.display(), hotkey.ss58()),
            ));
        }
    }
    hotkey
}
