//! What the predictor asks of the committer, the only process that talks to the chain: the
//! subnet's neurons (who may query us) and announcing our axon (`ServeAxon`).
//!
//! Both retry forever with capped backoff: the committer may start after us or restart, and the
//! gate keeps using the last metagraph (cached on disk) meanwhile.

use std::sync::Arc;
use std::time::Duration;

use taominer_core::bus::CommitterProxy;
use taominer_core::daemon::backoff::Backoff;

use crate::gate::Gate;

/// Asking the committer again: from 1 s, doubling, up to a minute (a local peer: exact, no
/// jitter).
fn committer_backoff() -> Backoff {
    Backoff::new(Duration::from_secs(1), Duration::from_secs(60))
}

/// Refreshes the gate's validator set every `every`, until dropped.
pub async fn refresh_metagraph(conn: zbus::Connection, gate: Arc<Gate>, every: Duration) {
    let mut backoff = committer_backoff();
    let mut failing = false;
    loop {
        let outcome = match CommitterProxy::new(&conn).await {
            Ok(p) => p.metagraph().await,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(neurons) => {
                if failing {
                    tracing::info!("metagraph from the committer again");
                }
                failing = false;
                backoff.reset();
                tracing::debug!("metagraph: {} neurons", neurons.len());
                gate.update(&neurons);
                tokio::time::sleep(every).await;
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(
                        "cannot read the metagraph from the committer ({}); {}",
                        taominer_core::bus::error_message(&e),
                        if gate.has_metagraph() {
                            "keeping the last one"
                        } else {
                            "only predictor.allow hotkeys are served until it answers"
                        }
                    );
                }
                failing = true;
                backoff.sleep().await;
            }
        }
    }
}

/// Asks the committer to announce `ip:port` on chain, retrying until it has.
pub async fn announce(conn: zbus::Connection, ip: String, port: u16) {
    let mut backoff = committer_backoff();
    loop {
        let outcome = match CommitterProxy::new(&conn).await {
            Ok(p) => p.serve_axon(&ip, port).await,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => {
                tracing::info!("axon announced on chain at {ip}:{port}");
                return;
            }
            Err(e) => {
                tracing::warn!(
                    "cannot announce the axon yet: {}",
                    taominer_core::bus::error_message(&e)
                );
                backoff.sleep().await;
            }
        }
    }
}
