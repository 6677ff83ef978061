//! `minerctl metrics`: the figures of `minerctl top` in Prometheus' text exposition format.
//!
//! Off unless run: printed once for node_exporter's textfile collector, or served on
//! `--listen ADDR` at `/metrics` for a Prometheus scrape (each scrape reads the daemons anew).
//! The daemons themselves open no extra port for this.

use std::fmt::Write as _;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::snapshot::Snapshot;

fn gauge(out: &mut String, name: &str, help: &str, samples: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP taominer_{name} {help}");
    let _ = writeln!(out, "# TYPE taominer_{name} gauge");
    for (labels, v) in samples {
        // Prometheus' text format spells NaN as NaN.
        let value = if v.is_nan() {
            "NaN".to_string()
        } else {
            format!("{v}")
        };
        let _ = writeln!(out, "taominer_{name}{labels} {value}");
    }
}

fn counter(out: &mut String, name: &str, help: &str, samples: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP taominer_{name} {help}");
    let _ = writeln!(out, "# TYPE taominer_{name} counter");
    for (labels, v) in samples {
        let _ = writeln!(out, "taominer_{name}{labels} {v}");
    }
}

/// A label value, escaped as the format requires.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The exposition of one snapshot.
pub fn exposition(s: &Snapshot) -> String {
    let mut out = String::new();
    let up = |d: &str, is: bool| (format!("{{daemon=\"{d}\"}}"), f64::from(u8::from(is)));
    gauge(
        &mut out,
        "up",
        "1 when the daemon answers on D-Bus.",
        &[
            up("trainer", s.trainer.is_some()),
            up("publisher", s.publisher.is_some()),
            up("committer", s.committer.is_some()),
            up("predictor", s.predictor.is_some()),
        ],
    );
    let none = String::new;
    if let Some(t) = &s.trainer {
        let st = format!("{{state=\"{}\"}}", label(t.state.as_str()));
        gauge(
            &mut out,
            "trainer_state",
            "The training run's state (label).",
            &[(st, 1.0)],
        );
        gauge(
            &mut out,
            "trainer_step",
            "Optimizer steps taken.",
            &[(none(), t.step as f64)],
        );
        gauge(
            &mut out,
            "trainer_epoch",
            "Current epoch.",
            &[(none(), t.epoch as f64)],
        );
        gauge(
            &mut out,
            "trainer_loss",
            "Training loss of the last step.",
            &[(none(), t.loss)],
        );
        gauge(
            &mut out,
            "trainer_eval_loss",
            "Last evaluation loss.",
            &[(none(), t.eval_loss)],
        );
        gauge(
            &mut out,
            "trainer_best_loss",
            "Best evaluation loss of the run.",
            &[(none(), t.best_loss)],
        );
        gauge(
            &mut out,
            "trainer_tokens_per_second",
            "Training throughput.",
            &[(none(), t.tokens_per_second)],
        );
        gauge(
            &mut out,
            "trainer_eta_seconds",
            "Seconds until the run ends; -1 when it has no end.",
            &[(none(), t.eta_seconds)],
        );
        counter(
            &mut out,
            "trainer_candidates_total",
            "Candidates handed to the publisher.",
            &[(none(), t.candidates as f64)],
        );
    }
    if let Some(p) = &s.publisher {
        let by_state: Vec<(String, f64)> = p
            .jobs
            .iter()
            .map(|(st, n)| (format!("{{state=\"{}\"}}", label(st.as_str())), *n as f64))
            .collect();
        gauge(
            &mut out,
            "publisher_jobs",
            "Publish jobs by state.",
            &by_state,
        );
        gauge(
            &mut out,
            "publisher_jobs_in_flight",
            "Publish jobs that still owe work.",
            &[(none(), p.in_flight as f64)],
        );
    }
    if let Some(c) = &s.committer {
        counter(
            &mut out,
            "committer_commitments_total",
            "Commitments written (online: on chain; offline: the ledger).",
            &[(none(), c.commitments as f64)],
        );
        if let Some(r) = &c.last {
            gauge(
                &mut out,
                "committer_last_commitment_block",
                "Block of the last commitment written.",
                &[(none(), r.block as f64)],
            );
        }
    }
    if let Some(p) = &s.predictor {
        counter(
            &mut out,
            "predictor_requests_total",
            "Axon answers: served (200) and rejected (any other status).",
            &[
                ("{outcome=\"served\"}".into(), p.served as f64),
                ("{outcome=\"rejected\"}".into(), p.rejected as f64),
            ],
        );
        gauge(
            &mut out,
            "predictor_queued",
            "Requests waiting for the model.",
            &[(none(), p.queued as f64)],
        );
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
            let (status, body) = if head.starts_with("GET ") && path == "/metrics" {
                ("200 OK", exposition(&Snapshot::read(&conn).await))
            } else {
                ("404 Not Found", "only GET /metrics\n".to_string())
            };
            let reply = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(reply.as_bytes()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::Predictor;

    #[test]
    fn exposition_follows_the_text_format() {
        let s = Snapshot {
            predictor: Some(Predictor {
                state: taominer_core::bus::PredictorState::Serving,
                status: String::new(),
                served: 10,
                rejected: 2,
                queued: 0,
            }),
            ..Default::default()
        };
        let text = exposition(&s);
        assert!(
            text.contains("taominer_up{daemon=\"trainer\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("taominer_up{daemon=\"predictor\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE taominer_predictor_requests_total counter\n"));
        assert!(text.contains("taominer_predictor_requests_total{outcome=\"served\"} 10\n"));
        // Every sample line is `name{labels} value`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').unwrap();
            assert!(name.starts_with("taominer_"), "{line}");
            assert!(value.parse::<f64>().is_ok() || value == "NaN", "{line}");
        }
        assert_eq!(label("a\"b"), "a\\\"b");
    }
}
