//! The predictor daemon's life: bind the axon, load the model (or, for SoundsRight, open the
//! feedback store and the healthcheck API), serve D-Bus, then answer requests while watching the
//! model file and the validator set, until SIGTERM.
//!
//! With no `predictor.model_path` (and another profile than SoundsRight) it only serves its D-Bus
//! object and says what to set, like the trainer without data: an appliance that starts every
//! unit must not fail on an unused part.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use taominer_core::config::Profile;
use taominer_core::runtime::{self, Daemon, Watchdog};
use taominer_core::wallet::Hotkey;
use zbus::object_server::SignalEmitter;

use crate::axon::{self, Axon, Synapses};
use crate::committer;
use crate::gate::{Gate, Rules};
use crate::healthcheck::{self, Health};
use crate::interface::{PredictorService, Shared};
use crate::model::{self, LoadOptions};
use crate::queue::{self, Queue};
use crate::serving::{self, Loader, Slot, Stats};
use crate::soundsright::SoundsRight;

/// Runs the daemon until shutdown.
pub async fn run(daemon: Daemon) -> anyhow::Result<()> {
    let _lock = daemon.lock_state()?;
    let cfg = daemon.config.predictor.clone();
    let soundsright = daemon.config.miner.profile == Profile::Soundsright;
    if !soundsright && cfg.model_path.is_none() {
        let shared = Arc::new(Shared {
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
        return Ok(());
    }

    // Answers are signed by our hotkey, and requests are checked as signed for it: serving needs
    // the key even offline.
    let hotkey = Hotkey::configured(&daemon.config).unwrap_or_else(|e| runtime::exit_config(&e));
    let miner = &daemon.config.miner;
    let rules = Rules {
        netuid: miner.netuid(),
        allow: cfg.allow.clone(),
        require_validator_permit: cfg.require_validator_permit,
        min_stake_tao: cfg.min_stake_tao,
        max_timeout_s: cfg.max_timeout_s,
    };
    // Offline there is no metagraph: the allow-list is the whole door.
    let cache = (!miner.offline).then(|| daemon.state_dir.join("metagraph.json"));
    let gate = Arc::new(Gate::new(hotkey.ss58(), rules, cache.as_deref()));

    let listener = bind(&cfg.listen, "predictor.listen").await?;
    let bound = listener.local_addr()?;
    let stats = Arc::new(Stats::default());
    let mut tasks = tokio::task::JoinSet::new();

    // The subnet's side: an ONNX model (loaded before D-Bus answers, so `Status` is true from
    // the start), or SoundsRight's model ids and feedback store.
    let (synapses, shared, image) = if soundsright {
        let (arrived, feedback) =
            tokio::sync::mpsc::channel(crate::soundsright::FEEDBACK_SIGNALS_QUEUED);
        let sr = Arc::new(
            SoundsRight::open(
                daemon.config.soundsright.clone(),
                hotkey.ss58().to_string(),
                &daemon.state_dir,
                arrived,
            )
            .context("cannot open the feedback store")?,
        );
        if let Some(listen) = &daemon.config.soundsright.healthcheck_listen {
            let health = Arc::new(Health {
                miner: sr.clone(),
                stats: stats.clone(),
            });
            let listener = bind(listen, "soundsright.healthcheck_listen").await?;
            tracing::info!("healthcheck API on {}", listener.local_addr()?);
            tasks.spawn(healthcheck::serve(listener, health));
        }
        let shared = Shared {
            loader: None,
            slot: Arc::new(Slot::default()),
            stats: stats.clone(),
            queue: None,
            listen: bound.to_string(),
            soundsright: Some(sr.clone()),
        };
        (
            Synapses::SoundsRight(sr.clone()),
            shared,
            Err((sr, feedback)),
        )
    } else {
        let model_path = cfg.model_path.clone().unwrap_or_default();
        let slot = Arc::new(Slot::default());
        let library = model::runtime_library(&cfg);
        let loader = Arc::new(Loader::new(
            library,
            model_path,
            LoadOptions::from_config(&cfg),
            slot.clone(),
            stats.clone(),
        ));
        {
            let l = loader.clone();
            // A refused first model is not fatal: the axon answers 503 and the watcher takes
            // the next good file.
            let _ = tokio::task::spawn_blocking(move || l.reload()).await;
        }
        let queue = Queue::new(cfg.queue_capacity);
        let worker = {
            let (q, s) = (queue.clone(), slot.clone());
            std::thread::Builder::new()
                .name("inference".into())
                .spawn(move || queue::run_worker(q, s))?
        };
        let shared = Shared {
            loader: Some(loader.clone()),
            slot: slot.clone(),
            stats: stats.clone(),
            queue: Some(queue.clone()),
            listen: bound.to_string(),
            soundsright: None,
        };
        (
            Synapses::Image { queue, slot },
            shared,
            Ok((loader, worker)),
        )
    };
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

    let external = cfg.announce_ip.as_ref().and_then(|ip| {
        let ip = ip.parse().ok()?;
        Some(SocketAddr::new(
            ip,
            cfg.announce_port.unwrap_or(bound.port()),
        ))
    });
    let queue = match &synapses {
        Synapses::Image { queue, .. } => Some(queue.clone()),
        Synapses::SoundsRight(_) => None,
    };
    let axon = Arc::new(Axon::new(
        hotkey,
        new_uuid(),
        gate.clone(),
        synapses,
        stats,
        &cfg,
        external,
    ));
    tasks.spawn(axon::serve(listener, axon));
    let worker = match image {
        Ok((loader, worker)) => {
            let path = loader.path.display().to_string();
            tasks.spawn(serving::watch(
                loader,
                Duration::from_millis(cfg.watch_interval_ms),
                move |_version| {
                    let (emitter, path) = (emitter.clone(), path.clone());
                    async move {
                        if let Err(e) = PredictorService::model_swapped(&emitter, &path).await {
                            tracing::warn!("cannot emit ModelSwapped: {e}");
                        }
                    }
                },
            ));
            Some(worker)
        }
        Err((sr, mut feedback)) => {
            tasks.spawn(crate::soundsright::follow_live_model(conn.clone(), sr));
            tasks.spawn(async move {
                while let Some((competition, validator)) = feedback.recv().await {
                    if let Err(e) =
                        PredictorService::feedback_received(&emitter, &competition, &validator)
                            .await
                    {
                        tracing::warn!("cannot emit FeedbackReceived: {e}");
                    }
                }
            });
            None
        }
    };
    if !miner.offline {
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

    let status = shared.clone();
    runtime::until_shutdown(async move {
        let mut watchdog = Watchdog::from_env();
        loop {
            watchdog.tick();
            runtime::notify_status(&status.summary());
            tokio::time::sleep(watchdog.period().min(Duration::from_secs(2))).await;
        }
    })
    .await;
    tasks.abort_all();
    if let Some(queue) = queue {
        queue.close();
    }
    if let Some(worker) = worker {
        let _ = tokio::task::spawn_blocking(move || worker.join()).await;
    }
    drop(conn);
    Ok(())
}

/// Binds a listening socket; the error names the config key.
async fn bind(listen: &str, key: &str) -> anyhow::Result<tokio::net::TcpListener> {
    let addr: SocketAddr = listen
        .parse()
        .with_context(|| format!("{key} = {listen:?}"))?;
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} ({key})"))
}

/// A random UUID (v4), this axon's `uuid`.
fn new_uuid() -> String {
    let mut b = taominer_core::store::random_bytes::<16>();
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
