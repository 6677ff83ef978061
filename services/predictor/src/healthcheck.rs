//! SoundsRight's healthcheck API: upstream miners serve it (FastAPI, port 6000) and operators'
//! dashboards read it, so we answer the same routes with the same shape,
//! `{"data": …, "timestamp": str(datetime.now())}`.
//!
//! The miner-side figures are ours (requests answered and refused, events, the model served);
//! the validator-only routes answer `data: null` as an upstream miner's do, except
//! `next_competition`, which we can compute from the subnet's fixed schedule.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Body;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{json, Value};
use taominer_core::daemon::store::Civil;
use tokio::net::TcpListener;

use crate::limits;
use crate::serving::Stats;
use crate::soundsright::{Level, SoundsRight};

/// Competitions start every `PERIOD` from `EPOCH` (upstream `neuron.py`: 2025-07-07 09:00 UTC,
/// `period_days = 3`).
const EPOCH: u64 = 1_751_878_800;
const PERIOD: u64 = 3 * 86_400;

/// Every route upstream registers.
pub const ROUTES: [&str; 9] = [
    "/healthcheck/metrics",
    "/healthcheck/events",
    "/healthcheck/current_models",
    "/healthcheck/best_models",
    "/healthcheck/competitions",
    "/healthcheck/competition_scores",
    "/healthcheck/scores",
    "/healthcheck/next_competition",
    "/healthcheck/seed",
];

/// What the API reports on.
pub struct Health {
    pub miner: Arc<SoundsRight>,
    pub stats: Arc<Stats>,
}

/// Connections the API holds at once (it answers dashboards, not the internet at large).
const MAX_CONNECTIONS: usize = 256;

/// Serves the API until the task is dropped. Unauthenticated like upstream's, so bounded like
/// the axon: connections in all and per address, the header deadline, the write-stall deadline
/// and a lifetime; request bodies are never read.
pub async fn serve(listener: TcpListener, health: Arc<Health>) {
    let connections = limits::Connections::new(
        MAX_CONNECTIONS.min(limits::connection_cap()),
        limits::CONNECTIONS_PER_ADDRESS,
    );
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("healthcheck accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(guard) = connections.enter(peer.ip()) else {
            continue;
        };
        let health = health.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let health = health.clone();
                async move {
                    let mut response = handle(&health, &req);
                    // The body (if any) is not read: the connection cannot carry another request.
                    if !req.body().is_end_stream() {
                        response
                            .headers_mut()
                            .insert(CONNECTION, HeaderValue::from_static("close"));
                    }
                    Ok::<_, Infallible>(response)
                }
            });
            let io = TokioIo::new(limits::StallGuardedIo::new(stream, limits::WRITE_STALL));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits::HEADER_TIMEOUT)
                .max_buf_size(limits::MAX_HEADER_BYTES.max(8192))
                .serve_connection(io, service);
            if let Ok(Err(e)) = tokio::time::timeout(limits::CONNECTION_LIFETIME, conn).await {
                tracing::debug!("healthcheck connection from {peer}: {e}");
            }
            drop(guard);
        });
    }
}

fn handle(health: &Health, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().trim_end_matches('/');
    if !ROUTES.contains(&path) {
        return respond(StatusCode::NOT_FOUND, json!({"detail": "Not Found"}));
    }
    if req.method() != Method::GET {
        return respond(
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"detail": "Method Not Allowed"}),
        );
    }
    let data = data_for(health, path);
    respond(
        StatusCode::OK,
        json!({"data": data, "timestamp": Civil::now().python_str()}),
    )
}

/// The `data` of one route.
pub fn data_for(health: &Health, path: &str) -> Value {
    let miner = &health.miner;
    match path {
        "/healthcheck/metrics" => metrics(health),
        "/healthcheck/events" => miner.events(),
        "/healthcheck/current_models" => {
            let models = miner.current_models();
            if models.as_object().is_some_and(|m| m.is_empty()) {
                Value::Null
            } else {
                models
            }
        }
        "/healthcheck/competitions" => match miner.competition() {
            Some(c) => json!([c]),
            None => Value::Null,
        },
        "/healthcheck/next_competition" => {
            json!(next_competition(taominer_core::daemon::store::unix_now()))
        }
        _ => Value::Null,
    }
}

/// Upstream's metrics dictionary, key for key (its typo included, so dashboards keep working),
/// with the figures a miner has.
fn metrics(health: &Health) -> Value {
    let miner = &health.miner;
    let served = health.stats.served.load(Ordering::Relaxed);
    let rejected = health.stats.rejected.load(Ordering::Relaxed);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let up = (now - miner.started).max(1e-9);
    json!({
        "start_time": miner.started,
        "neuron_running": true,
        "iterations": served + rejected,
        "datasets_generatred": 0,
        "competitions_judged": 0,
        "log_entries.success": miner.event_count(Level::Success),
        "log_entries.warning": miner.event_count(Level::Warning),
        "log_entries.error": miner.event_count(Level::Error),
        "axons.total_filtered_axons": 0,
        "axons.total_queried_axons": 0,
        "axons.queries_per_second": 0.0,
        "responses.total_valid_responses": served,
        "responses.total_invalid_responses": rejected,
        "responses.valid_responses_per_second": served as f64 / up,
        "responses.invalid_responses_per_second": rejected as f64 / up,
        "weights.targets": 0,
        "weights.last_set_timestamp": null,
        "weights.last_committed_timestamp": null,
        "weights.last_revealed_timestamp": null,
        "weights.total_count_set": 0,
        "weights.total_count_committed": 0,
        "weights.total_count_revealed": 0,
        "weights.set_per_second": 0.0,
        "weights.committed_per_second": 0.0,
        "weights.revealed_per_second": 0.0,
    })
}

/// The next competition start after `now` (Unix seconds), as upstream prints it:
/// `%Y-%m-%d %H:%M:%S GMT`.
pub fn next_competition(now: u64) -> String {
    let next = if now < EPOCH {
        EPOCH
    } else {
        EPOCH + ((now - EPOCH) / PERIOD + 1) * PERIOD
    };
    let c = Civil::utc(Duration::from_secs(next));
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} GMT",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

fn respond(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn competitions_start_every_three_days_from_the_subnets_epoch() {
        assert_eq!(next_competition(0), "2025-07-07 09:00:00 GMT");
        assert_eq!(next_competition(EPOCH), "2025-07-10 09:00:00 GMT");
        // 2026-11-28 21:54:52 UTC
        assert_eq!(next_competition(1_795_902_892), "2026-11-29 09:00:00 GMT");
    }
}
