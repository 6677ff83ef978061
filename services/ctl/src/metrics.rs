//! `minerctl metrics`: the figures of `minerctl top` in the OpenMetrics text format, which
//! Prometheus scrapes (and node_exporter's textfile collector reads: same sample lines).
//!
//! Off unless run: printed once for node_exporter's textfile collector, or served on
//! `--listen ADDR` at `/metrics` for a Prometheus scrape (each scrape reads the daemons anew).
//! The daemons themselves open no extra port for this. The format (escaping, NaN, `_total`,
//! `# EOF`) is `prometheus-client`'s; only the names, labels and the tiny HTTP answer are ours
//! (one GET a scrape does not justify an HTTP server crate).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::snapshot::Snapshot;

/// What a scrape is answered with: the library writes the OpenMetrics text format (a counter's
/// `# TYPE` names the family without `_total`, the samples keep it; `# EOF` closes it).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Labels of one sample, in the order they are written.
type Labels = Vec<(&'static str, String)>;

/// A family of integer gauges by one label (`daemon`, `state`).
fn by_label(key: &'static str, samples: &[(&str, i64)]) -> Family<Labels, Gauge> {
    let family = Family::<Labels, Gauge>::default();
    for (value, n) in samples {
        family
            .get_or_create(&vec![(key, value.to_string())])
            .set(*n);
    }
    family
}

/// D-Bus hands us counts as `u64`; the library's integer gauge is `i64` (never reached here).
fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The exposition of one snapshot. Names, labels and values are the user-facing contract
/// (dashboards and alerts query them): `taominer_` + the names below; help texts get their final
/// full stop from the library.
pub fn exposition(s: &Snapshot) -> String {
    let mut r = Registry::with_prefix("taominer");
    r.register(
        "up",
        "1 when the daemon answers on D-Bus",
        by_label(
            "daemon",
            &[
                ("trainer", i64::from(s.trainer.is_some())),
                ("publisher", i64::from(s.publisher.is_some())),
                ("committer", i64::from(s.committer.is_some())),
                ("predictor", i64::from(s.predictor.is_some())),
            ],
        ),
    );
    if let Some(t) = &s.trainer {
        r.register(
            "trainer_state",
            "The training run's state (label)",
            by_label("state", &[(t.state.as_str(), 1)]),
        );
        r.register(
            "trainer_step",
            "Optimizer steps taken",
            ConstGauge::new(int(t.step)),
        );
        r.register(
            "trainer_epoch",
            "Current epoch",
            ConstGauge::new(int(t.epoch)),
        );
        for (name, help, v) in [
            ("trainer_loss", "Training loss of the last step", t.loss),
            ("trainer_eval_loss", "Last evaluation loss", t.eval_loss),
            (
                "trainer_best_loss",
                "Best evaluation loss of the run",
                t.best_loss,
            ),
            (
                "trainer_tokens_per_second",
                "Training throughput",
                t.tokens_per_second,
            ),
            (
                "trainer_eta_seconds",
                "Seconds until the run ends; -1 when it has no end",
                t.eta_seconds,
            ),
        ] {
            r.register(name, help, ConstGauge::new(v));
        }
        // A counter's samples carry `_total`: the library appends it to the family's name.
        r.register(
            "trainer_candidates",
            "Candidates handed to the publisher",
            ConstCounter::new(t.candidates),
        );
    }
    if let Some(p) = &s.publisher {
        let states: Vec<(&str, i64)> = p
            .jobs
            .iter()
            .map(|(st, n)| (st.as_str(), int(*n)))
            .collect();
        r.register(
            "publisher_jobs",
            "Publish jobs by state",
            by_label("state", &states),
        );
        r.register(
            "publisher_jobs_in_flight",
            "Publish jobs that still owe work",
            ConstGauge::new(int(p.in_flight)),
        );
    }
    if let Some(c) = &s.committer {
        r.register(
            "committer_commitments",
            "Commitments written (online: on chain; offline: the ledger)",
            ConstCounter::new(c.commitments),
        );
        if let Some(last) = &c.last {
            r.register(
                "committer_last_commitment_block",
                "Block of the last commitment written",
                ConstGauge::new(int(last.block)),
            );
        }
    }
    if let Some(p) = &s.predictor {
        let requests = Family::<Labels, Counter>::default();
        for (outcome, n) in [("served", p.served), ("rejected", p.rejected)] {
            requests
                .get_or_create(&vec![("outcome", outcome.to_string())])
                .inc_by(n);
        }
        r.register(
            "predictor_requests",
            "Axon answers: served (200) and rejected (any other status)",
            requests,
        );
        r.register(
            "predictor_queued",
            "Requests waiting for the model",
            ConstGauge::new(int(p.queued)),
        );
    }
    let mut out = String::new();
    // Writing into a String cannot fail; an error here would be the library's own bug.
    if let Err(e) = encode(&mut out, &r) {
        tracing::error!("encoding the metrics failed: {e}");
    }
    out
}

/// Serves `/metrics` on `listen` until Ctrl-C.
pub async fn serve(conn: zbus::Connection, listen: &str) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    eprintln!(
        "minerctl: serving Prometheus metrics on http://{}/metrics",
        listener.local_addr()?
    );
    loop {
        let (mut stream, _) = tokio::select! {
            c = listener.accept() => c?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let conn = conn.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let n = match tokio::time::timeout(
                std::time::Duration::from_secs(5),
                stream.read(&mut buf),
            )
            .await
            {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let head = String::from_utf8_lossy(&buf[..n]);
            let path = head.split_whitespace().nth(1).unwrap_or("");
            let (status, content_type, body) = if head.starts_with("GET ") && path == "/metrics" {
                (
                    "200 OK",
                    CONTENT_TYPE,
                    exposition(&Snapshot::read(&conn).await),
                )
            } else {
                (
                    "404 Not Found",
                    "text/plain; charset=utf-8",
                    "only GET /metrics\n".to_string(),
                )
            };
            let reply = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(reply.as_bytes()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{Predictor, Publisher, Trainer};
    use taominer_core::bus::{JobState, TrainerState, WorkState};

    /// The samples of an exposition as `(name{labels}, value)`, checking each line's shape.
    fn samples(text: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for line in text.lines() {
            if let Some(meta) = line.strip_prefix("# ") {
                let kind = meta.split_whitespace().next().unwrap_or("");
                assert!(["HELP", "TYPE", "EOF"].contains(&kind), "{line}");
                continue;
            }
            let (name, value) = line.rsplit_once(' ').expect("`name value`");
            assert!(name.starts_with("taominer_"), "{line}");
            assert!(value.parse::<f64>().is_ok(), "{line}");
            out.push((name.to_string(), value.to_string()));
        }
        out
    }

    #[test]
    fn the_exposition_keeps_the_metric_names_labels_and_values() {
        let s = Snapshot {
            trainer: Some(Trainer {
                state: TrainerState::Training,
                step: 200,
                epoch: 1,
                loss: 3.25,
                eval_loss: f64::NAN,
                best_loss: 3.5,
                tokens_per_second: 1234.5,
                eta_seconds: -1.0,
                candidates: 3,
                last_error: String::new(),
                ..Default::default()
            }),
            publisher: Some(Publisher {
                state: WorkState::Idle,
                jobs: vec![(JobState::Committed, 2), (JobState::Staged, 1)],
                in_flight: 1,
                last: None,
            }),
            predictor: Some(Predictor {
                state: taominer_core::bus::PredictorState::Serving,
                served: 10,
                rejected: 2,
                ..Default::default()
            }),
            ..Default::default()
        };
        let text = exposition(&s);
        assert!(text.ends_with("# EOF\n"), "{text}");
        let got = samples(&text);
        let value = |name: &str| {
            got.iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
                .unwrap_or_else(|| panic!("{name} missing from\n{text}"))
        };
        assert_eq!(value("taominer_up{daemon=\"trainer\"}"), "1");
        assert_eq!(value("taominer_up{daemon=\"committer\"}"), "0");
        assert_eq!(value("taominer_trainer_state{state=\"training\"}"), "1");
        assert_eq!(value("taominer_trainer_step"), "200");
        assert_eq!(value("taominer_trainer_loss"), "3.25");
        assert_eq!(value("taominer_trainer_eval_loss"), "NaN");
        assert_eq!(value("taominer_trainer_best_loss"), "3.5");
        assert_eq!(value("taominer_trainer_eta_seconds"), "-1.0");
        assert_eq!(value("taominer_trainer_candidates_total"), "3");
        assert_eq!(value("taominer_publisher_jobs{state=\"staged\"}"), "1");
        assert_eq!(value("taominer_publisher_jobs_in_flight"), "1");
        assert_eq!(
            value("taominer_predictor_requests_total{outcome=\"served\"}"),
            "10"
        );
        assert_eq!(
            value("taominer_predictor_requests_total{outcome=\"rejected\"}"),
            "2"
        );
        assert!(text.contains("# TYPE taominer_predictor_requests counter\n"));
        assert!(text.contains("# TYPE taominer_trainer_step gauge\n"));
        assert!(text.contains("# HELP taominer_up 1 when the daemon answers on D-Bus.\n"));
        // A daemon that is down has only its `up` sample: no stale figures.
        assert!(!text.contains("taominer_committer_commitments"), "{text}");
    }
}
