//! Fault injection: `kill -9` of the publisher and of the committer at every point where a
//! hand-off could be lost or doubled, before and after each acknowledges, and at random moments.
//! After restarts, the ledger must hold each accepted job exactly once.
//!
//! The named points (`MINERTEST_CRASH_AT`, see `taominer_core::daemon::fault`) make the daemon SIGKILL
//! itself at that exact instant; the random test kills from outside while work is in flight.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use taominer_tests::*;

const FAST_RETRY: [&str; 4] = ["--set", "retry.initial_ms=50", "--set", "retry.max_ms=500"];

fn publisher<'a>(bus: &'a Bus, state: &'a Path) -> Spawn<'a> {
    let mut s = Spawn::new("publisher", bus, state);
    for a in FAST_RETRY {
        s = s.arg(a);
    }
    s
}

/// Job ids in the ledger, with how often each appears.
fn ledger_counts(bus: &Bus) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for e in json(&minerctl(bus, &["commitments", "--json"]))
        .as_array()
        .unwrap()
    {
        *counts
            .entry(e["job_id"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    counts
}

fn publisher_jobs(bus: &Bus) -> Vec<serde_json::Value> {
    let out = minerctl(bus, &["jobs", "--json"]);
    if !out.status.success() {
        return Vec::new();
    }
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

/// Waits until every publisher job is committed and checks the ledger against them.
fn assert_each_job_committed_once(bus: &Bus, expected_jobs: usize, context: &str) {
    let done = eventually(Duration::from_secs(60), || {
        let jobs = publisher_jobs(bus);
        jobs.len() == expected_jobs && jobs.iter().all(|j| j["state"] == "committed")
    });
    let jobs = publisher_jobs(bus);
    assert!(done, "{context}: jobs not all committed: {jobs:#?}");
    let counts = ledger_counts(bus);
    assert_eq!(counts.len(), expected_jobs, "{context}: {counts:?}");
    for j in &jobs {
        let id = j["id"].as_str().unwrap();
        assert_eq!(
            counts.get(id),
            Some(&1),
            "{context}: job {id} in ledger {counts:?}"
        );
    }
    let ledger = json(&minerctl(bus, &["commitments", "--json"]));
    for (j, e) in jobs.iter().zip(ledger.as_array().unwrap()) {
        assert_eq!(j["commitment"], e["commitment"], "{context}");
        assert_eq!(j["block"], e["block"], "{context}");
    }
}

#[test]
fn named_crash_points_lose_nothing_and_double_nothing() {
    let points = [
        ("publisher", "publisher.job-persisted"),
        ("publisher", "publisher.stage-copied"),
        ("publisher", "publisher.stage-renamed"),
        ("publisher", "publisher.handoff-acked"),
        ("committer", "committer.job-persisted"),
        ("committer", "committer.ledger-written"),
        ("committer", "committer.job-committed"),
    ];
    for (victim, point) in points {
        let bus = Bus::start();
        let state = tempfile::tempdir().unwrap();
        let (pub_dir, com_dir) = (
            state.path().join("publisher"),
            state.path().join("committer"),
        );
        let mut p = publisher(&bus, &pub_dir);
        let mut c = Spawn::new("committer", &bus, &com_dir);
        if victim == "publisher" {
            p = p.env("MINERTEST_CRASH_AT", point);
        } else {
            c = c.env("MINERTEST_CRASH_AT", point);
        }
        let mut p = p.start();
        let mut c = c.start();
        p.assert_ready();
        c.assert_ready();

        let model = state.path().join("model");
        make_model(&model, 7);
        // Whether minerctl hears back depends on the point; what matters is what is on disk.
        let out = minerctl(&bus, &["publish", model.to_str().unwrap()]);
        let acked = out.status.success();

        let crashed = if victim == "publisher" {
            &mut p
        } else {
            &mut c
        };
        let st = crashed.wait_exit(Duration::from_secs(30));
        assert!(st.is_some(), "{point}: the crash point was never reached");
        let mut restarted = if victim == "publisher" {
            publisher(&bus, &pub_dir).start()
        } else {
            Spawn::new("committer", &bus, &com_dir).start()
        };
        restarted.assert_ready();

        // publisher.job-persisted dies before answering; every later point answers first.
        assert_eq!(
            acked,
            point != "publisher.job-persisted",
            "{point}: {out:?}"
        );
        assert_each_job_committed_once(&bus, 1, point);
        drop(restarted);
        drop(p);
        drop(c);
    }
}

#[test]
fn random_kills_while_publishing_lose_nothing_and_double_nothing() {
    let bus = Bus::start();
    let state = tempfile::tempdir().unwrap();
    let (pub_dir, com_dir) = (
        state.path().join("publisher"),
        state.path().join("committer"),
    );
    let mut p = publisher(&bus, &pub_dir).start();
    let mut c = Spawn::new("committer", &bus, &com_dir).start();
    p.assert_ready();
    c.assert_ready();
    let mut accepted = 0;
    for round in 0..6u64 {
        let model = state.path().join(format!("model{round}"));
        make_model(&model, 100 + round);
        if minerctl(&bus, &["publish", model.to_str().unwrap()])
            .status
            .success()
        {
            accepted += 1;
        }
        // Kill one or both at a moment that varies from round to round.
        std::thread::sleep(Duration::from_millis(3 * round * round));
        if round % 2 == 0 {
            p.kill9();
            p = publisher(&bus, &pub_dir).start();
            p.assert_ready();
        }
        if round % 3 != 1 {
            c.kill9();
            c = Spawn::new("committer", &bus, &com_dir).start();
            c.assert_ready();
        }
    }
    // Every publish that was acknowledged is a job; none was refused here.
    assert_eq!(accepted, 6);
    assert_each_job_committed_once(&bus, 6, "random kills");
}
