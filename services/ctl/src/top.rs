//! `minerctl top`: the whole appliance on one screen, refreshed.
//!
//! What a miner checks on a box left running: is it training and how fast, is a model on its
//! way to the chain, what was committed last and when, and is the axon answering. Plain text
//! and ANSI clear-screen only, so it works in any terminal and over SSH; `--once` prints one
//! frame without escapes (scripts, tests, a bug report).

use std::fmt::Write as _;
use std::time::Duration;

use crate::snapshot::Snapshot;

/// `12m 03s`, `2h 05m`, `-` when unknown.
fn duration(secs: f64) -> String {
    if !(secs.is_finite() && secs >= 0.0) {
        return "-".into();
    }
    let s = secs.round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
    }
}

fn loss(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.4}")
    } else {
        "-".into()
    }
}

/// One frame of the view.
pub fn render(s: &Snapshot, now: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "taominer  {now} UTC");
    let _ = writeln!(out);
    const DOWN: &str = "down";
    match &s.trainer {
        Some(t) => {
            let _ = writeln!(
                out,
                "trainer    {:<10} step {} (epoch {})  loss {}  eval {}  best {}",
                t.state,
                t.step,
                t.epoch,
                loss(t.loss),
                loss(t.eval_loss),
                loss(t.best_loss)
            );
            let _ = writeln!(
                out,
                "                      {:.0} tokens/s  ETA {}  candidates {}",
                t.tokens_per_second,
                duration(t.eta_seconds),
                t.candidates
            );
            if !t.last_error.is_empty() {
                let _ = writeln!(out, "                      ! {}", t.last_error);
            }
        }
        None => {
            let _ = writeln!(out, "trainer    {DOWN}");
        }
    }
    match &s.publisher {
        Some(p) => {
            let counts: Vec<String> = p.jobs.iter().map(|(s, n)| format!("{n} {s}")).collect();
            let _ = writeln!(
                out,
                "publisher  {:<10} jobs in flight {}  ({})",
                p.state,
                p.in_flight,
                if counts.is_empty() {
                    "no jobs".to_string()
                } else {
                    counts.join(", ")
                }
            );
            if let Some(j) = &p.last {
                let _ = writeln!(
                    out,
                    "                      last {} {} {}{}",
                    j.id,
                    j.state,
                    j.repo,
                    if j.commit.is_empty() {
                        String::new()
                    } else {
                        format!("@{}", &j.commit[..j.commit.len().min(12)])
                    }
                );
            }
        }
        None => {
            let _ = writeln!(out, "publisher  {DOWN}");
        }
    }
    match &s.committer {
        Some(c) => {
            let last = match &c.last {
                Some(r) => format!(
                    "last commitment at block {} (job {}): {}",
                    r.block,
                    r.job_id,
                    &r.commitment[..r.commitment.len().min(48)]
                ),
                None => "no commitment yet".into(),
            };
            let _ = writeln!(out, "committer  {:<10} {last}", c.state);
        }
        None => {
            let _ = writeln!(out, "committer  {DOWN}");
        }
    }
    match &s.predictor {
        Some(p) => {
            let _ = writeln!(
                out,
                "predictor  {:<10} served {}  rejected {}  queued {}",
                p.state, p.served, p.rejected, p.queued
            );
            let _ = writeln!(out, "                      {}", p.status);
        }
        None => {
            let _ = writeln!(out, "predictor  {DOWN}");
        }
    }
    out
}

/// Prints frames every `every` until Ctrl-C (or one frame with `once`).
pub async fn run(conn: &zbus::Connection, every: Duration, once: bool) {
    if once {
        print!("{}", render(&Snapshot::read(conn).await, &now()));
        return;
    }
    // Hide the cursor while drawing; show it again on the way out.
    print!("\x1b[?25l");
    loop {
        let frame = render(&Snapshot::read(conn).await, &now());
        print!(
            "\x1b[2J\x1b[H{frame}\n(Ctrl-C to quit; every {} s)",
            every.as_secs_f64()
        );
        let _ = std::io::Write::flush(&mut std::io::stdout());
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    println!("\x1b[?25h");
}

fn now() -> String {
    let c = taominer_core::store::Civil::now();
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{Committer, Trainer};

    #[test]
    fn a_frame_shows_every_daemon_and_says_which_are_down() {
        let s = Snapshot {
            trainer: Some(Trainer {
                state: taominer_core::bus::TrainerState::Training,
                step: 1200,
                epoch: 1,
                loss: 3.45211,
                eval_loss: f64::NAN,
                best_loss: 3.5,
                tokens_per_second: 1234.4,
                eta_seconds: 723.0,
                candidates: 2,
                last_error: String::new(),
            }),
            committer: Some(Committer {
                state: taominer_core::bus::WorkState::Idle,
                commitments: 1,
                last: Some(taominer_core::bus::CommitmentRecord {
                    block: 4242,
                    job_id: "J1".into(),
                    netuid: 9,
                    hotkey: "5H".into(),
                    commitment: "ns:name:abc:hash:2".into(),
                    data_type: "Raw18".into(),
                    time: 0,
                }),
            }),
            ..Default::default()
        };
        let f = render(&s, "2026-11-28 22:00:00");
        assert!(
            f.contains("step 1200 (epoch 1)  loss 3.4521  eval -  best 3.5000"),
            "{f}"
        );
        assert!(
            f.contains("1234 tokens/s  ETA 12m 03s  candidates 2"),
            "{f}"
        );
        assert!(f.contains("last commitment at block 4242 (job J1)"), "{f}");
        assert!(
            f.contains("publisher  down") && f.contains("predictor  down"),
            "{f}"
        );
        assert_eq!(duration(7500.0), "2h 05m");
        assert_eq!(duration(-1.0), "-");
    }
}
