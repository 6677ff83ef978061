//! `minerctl`: the command line for a running taominer appliance. Wiring only; each subcommand
//! lives in [`commands`]; the live views in [`top`], [`metrics`] and [`plot`], reading
//! [`snapshot`].

mod commands;
mod metrics;
mod plot;
mod progress;
mod snapshot;
mod top;

use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = commands::Cli::parse();
    if let Err(e) = commands::run(cli).await {
        eprintln!("minerctl: {e}");
        std::process::exit(e.exit_code());
    }
}
