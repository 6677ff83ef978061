//! The predictor daemon's life: bind the axon, start the product (the image classifier's model,
//! or SoundsRight's feedback store and healthcheck API), serve D-Bus, then answer requests while
//! the product follows its model and the committer the validator set, until SIGTERM.
//!
//! With no `predictor.model_path` (and another profile than SoundsRight) it only serves its D-Bus
//! object and says what to set, like the trainer without data: an appliance that starts every
//! unit must not fail on an unused part.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use taominer_core::config::{PredictorConfig, Profile};
use taominer_core::daemon::runtime::{self, Daemon, Watchdog};
use taominer_core::wallet::Hotkey;
use tokio::task::JoinSet;
use zbus::object_server::SignalEmitter;

use crate::axon::{self, Axon};
use crate::committer;
use crate::gate::{Gate, Rules};
use crate::interface::{PredictorService, Shared};
use crate::product::image::ImageProduct;
use crate::product::soundsright::SoundsRightProduct;
use crate::product::Product;
use crate::serving::{Slot, Stats};

/// Runs the daemon until shutdown.
pub async fn run(daemon: Daemon) -> anyhow::Result<()> {
    let _lock = daemon.lock_state()?;
    let cfg = daemon.config.predictor.clone();
    if daemon.config.miner.profile != Profile::Soundsright && cfg.model_path.is_none() {
        return serve_idle(&daemon, &cfg).await;
    }
    // Answers are signed by our hotkey, and requests are checked as signed for it: serving needs
    // the key even offline.
    let hotkey = Hotkey::configured(&daemon.config).unwrap_or_else(|e| runtime::exit_config(&e));
    let gate = open_gate(&daemon, &cfg, &hotkey);
    let listener = axon::bind(&cfg.listen, "predictor.listen").await?;
    let bound = listener.local_addr()?;
    let stats = Arc::new(Stats::default());
    let mut tasks = JoinSet::new();

    // Before D-Bus answers, so that its `Status` is true from the start.
    let (product, shared) =
        start_product(&daemon, &cfg, &hotkey, bound, stats.clone(), &mut tasks).await?;
    let shared = Arc::new(shared);
    let conn = daemon
        .serve(
            PredictorService {
                shared: shared.clone(),
            },
            &shared.summary(),
        )
        .await?;
    tracing::info!(HOTKEY = hotkey.ss58(), "axon listening on {bound}");
    let emitter = SignalEmitter::new(&conn, taominer_core::bus::PREDICTOR_PATH)?.into_owned();

    let external = announced(&cfg, bound);
    let axon = Axon::new(
        hotkey,
        new_uuid(),
        gate.clone(),
        product.clone(),
        stats,
        &cfg,
        external,
    );
    tasks.spawn(axon::serve(listener, Arc::new(axon)));
    product.clone().follow(&conn, emitter, &mut tasks);
    follow_chain(&daemon, &cfg, &conn, gate, external, &mut tasks);

    runtime::until_shutdown(report_status(shared)).await;
    tasks.abort_all();
    let _ = tokio::task::spawn_blocking(move || product.stop()).await;
    drop(conn);
    Ok(())
}

/// Nothing to serve: the D-Bus object alone, saying what to set.
async fn serve_idle(daemon: &Daemon, cfg: &PredictorConfig) -> anyhow::Result<()> {
    let shared = Arc::new(Shared {
        product: None,
        loader: None,
        slot: Arc::new(Slot::default()),
        stats: Arc::new(Stats::default()),
        queue: None,
        listen: cfg.listen.clone(),
        soundsright: None,
    });
    let _conn = daemon
        .serve(
            PredictorService {
                shared: shared.clone(),
            },
            &shared.summary(),
        )
        .await?;
    runtime::until_shutdown(runtime::idle_loop(move || shared.summary())).await;
    Ok(())
}

/// Who may query: the metagraph's validators (read from the cache until the committer's first
/// refresh) and the allow-list. Offline there is no metagraph: the allow-list is the whole door.
fn open_gate(daemon: &Daemon, cfg: &PredictorConfig, hotkey: &Hotkey) -> Arc<Gate> {
    let miner = &daemon.config.miner;
    let rules = Rules {
        netuid: miner.netuid(),
        allow: cfg.allow.clone(),
        require_validator_permit: cfg.require_validator_permit,
        min_stake_tao: cfg.min_stake_tao,
        max_timeout_s: cfg.max_timeout_s,
    };
    let cache = (!miner.offline).then(|| daemon.state_dir.join("metagraph.json"));
    Arc::new(Gate::new(hotkey.ss58(), rules, cache.as_deref()))
}

/// The product the profile serves, and what D-Bus reports on. A new product is one more arm.
async fn start_product(
    daemon: &Daemon,
    cfg: &PredictorConfig,
    hotkey: &Hotkey,
    bound: SocketAddr,
    stats: Arc<Stats>,
    tasks: &mut JoinSet<()>,
) -> anyhow::Result<(Arc<dyn Product>, Shared)> {
    let listen = bound.to_string();
    Ok(match daemon.config.miner.profile {
        Profile::Soundsright => {
            let (product, shared) = SoundsRightProduct::start(
                daemon.config.soundsright.clone(),
                hotkey.ss58(),
                &daemon.state_dir,
                stats,
                listen,
                tasks,
            )
            .await?;
            (product, shared)
        }
        _ => {
            let (product, shared) = ImageProduct::start(cfg, stats, listen).await?;
            (product, shared)
        }
    })
}

/// The address announced on chain and in answers: `predictor.announce_ip`, on
/// `predictor.announce_port` or the port bound.
fn announced(cfg: &PredictorConfig, bound: SocketAddr) -> Option<SocketAddr> {
    let ip = cfg.announce_ip.as_ref()?.parse().ok()?;
    Some(SocketAddr::new(
        ip,
        cfg.announce_port.unwrap_or(bound.port()),
    ))
}

/// The committer's side, online only: the validator set refreshed into the gate, and our axon
/// announced (`ServeAxon`).
fn follow_chain(
    daemon: &Daemon,
    cfg: &PredictorConfig,
    conn: &zbus::Connection,
    gate: Arc<Gate>,
    external: Option<SocketAddr>,
    tasks: &mut JoinSet<()>,
) {
    if !daemon.config.miner.offline {
        tasks.spawn(committer::refresh_metagraph(
            conn.clone(),
            gate,
            Duration::from_secs(cfg.metagraph_refresh_s),
        ));
        if let Some(addr) = external {
            tasks.spawn(committer::announce(
                conn.clone(),
                addr.ip().to_string(),
                addr.port(),
            ));
        }
    } else if cfg.announce_ip.is_some() {
        tracing::warn!(
            "predictor.announce_ip is ignored offline: there is no chain to announce on"
        );
    }
}

/// The status line for systemd, and the watchdog's heartbeat, until shutdown.
async fn report_status(shared: Arc<Shared>) {
    let mut watchdog = Watchdog::from_env();
    loop {
        watchdog.tick();
        runtime::notify_status(&shared.summary());
        tokio::time::sleep(watchdog.period().min(Duration::from_secs(2))).await;
    }
}

/// A random UUID (v4), this axon's `uuid`.
fn new_uuid() -> String {
    let mut b = taominer_core::daemon::store::random_bytes::<16>();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}
