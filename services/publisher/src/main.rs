//! `miner-publisher`: accepts model directories, stages and hashes them exactly as validators
//! will, and hands their commitments to the committer. Wiring only; see the modules.

mod access;
mod error;
mod interface;
mod jobs;
mod online;
mod pipeline;
mod ports;
mod staging;
mod transfer;

use std::sync::Arc;

// The Hub client lives in the library (the trainer uses it too); `crate::hub` and
// `crate::retry` name it here as before.
use taominer_publisher::{hub, retry};

use anyhow::Context;
use clap::Parser;
use taominer_core::bus::Part;
use taominer_core::config::{Config, ConfigError};
use taominer_core::daemon::runtime::{self, DaemonArgs, Watchdog};

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
    let hub = if daemon.config.miner.offline {
        None
    } else {
        Some(Box::new(connect_hub(&daemon.config)?) as Box<dyn ports::HubClient>)
    };
    let shared = Arc::new(
        jobs::Shared::open(daemon.config.clone(), daemon.state_dir.clone(), hub)
            .context("cannot open the publisher's state")?,
    );
    shared
        .declare_configured_model()
        .context("cannot record the configured model's job")?;
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

/// The Hub client for online mode. A missing or unreadable token is a configuration error
/// (exit 78) naming where it was looked for, never what it holds.
fn connect_hub(config: &Config) -> anyhow::Result<hub::Hub> {
    let Some(path) = config.hub.token_path() else {
        runtime::exit_config(&ConfigError::new(
            "hub.token_file",
            "(unset)",
            "online mode needs a Hugging Face token: LoadCredential=hf-token:/path under systemd, or hub.token_file",
        ));
    };
    let token = hub::Token::load(&path).unwrap_or_else(|e| {
        runtime::exit_config(&ConfigError::new("hub.token_file", path.display(), e))
    });
    Ok(hub::Hub::new(config.hub.endpoint(), Some(token))?)
}
