//! The trainer with `trainer.engine = "external"` against a real engine process: the
//! `miner-trainer` binary on a private dbus-daemon supervises `tests/trainer/fake_engine.py`
//! (real, tiny training with transformers in the test venv, following the daemon–engine contract
//! of docs/trainer.md and misbehaving on command), with the real publisher and committer
//! (offline) taking the candidates. Reference losses come from transformers
//! (`tests/trainer/external_check.py`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use taominer_tests::*;

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        make_training_data(dir.path());
        std::fs::create_dir(dir.path().join("once")).unwrap();
        Fixture { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A trainer running the fake engine with `engine_args`, and `extra` `--set`s.
    fn trainer<'a>(
        &self,
        bus: &'a Bus,
        state: &'a Path,
        engine_args: &[&str],
        extra: &[&str],
    ) -> Spawn<'a> {
        let mut command = vec![
            venv_python().display().to_string(),
            repo_root()
                .join("tests/trainer/fake_engine.py")
                .display()
                .to_string(),
            "--log".into(),
            self.path("engine.log").display().to_string(),
            "--once-dir".into(),
            self.path("once").display().to_string(),
        ];
        command.extend(engine_args.iter().map(|s| s.to_string()));
        external_trainer(bus, state, self.dir.path(), &command, extra)
    }

    /// The engine's event log (fake_engine.py --log).
    fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(self.path("engine.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn starts(&self) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["event"] == "start")
            .collect()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("trainer.log")).unwrap_or_default()
    }
}

fn status(bus: &Bus) -> Value {
    train_status(bus)
}

fn wait_state(bus: &Bus, fx: &Fixture, state: &str, timeout: Duration) -> Value {
    wait_train_state(bus, state, timeout, || fx.log())
}

/// Proves the whole external flow: each complete checkpoint of the engine is scored once with a
/// loss equal to transformers' on the same held-out sequences (1e-4 relative); a checkpoint of an
/// architecture candle cannot score is refused with a clear reason while the engine keeps
/// training; a rank killed with SIGKILL is restarted with `--resume` and the newest complete
/// checkpoint; a checkpoint whose engine died before its marker is never scored in that state;
/// `kill -9` of the daemon takes the engine with it (its pid gone within seconds) and the
/// restarted daemon resumes the run; each candidate is staged without `engine/` and the marker,
/// reaches the real publisher and committer exactly once, and its staged copy is removed once
/// the publisher has its own; `minerctl plot loss` and `top` show the run.
#[test]
fn checkpoints_are_scored_as_transformers_and_candidates_flow_once_through_crashes() {
    let fx = Fixture::new();
    let bus = Bus::start();
    let mut publisher = Spawn::new("publisher", &bus, &fx.path("publisher"))
        .log_to(&fx.path("publisher.log"))
        .start();
    publisher.assert_ready();
    let mut committer = Spawn::new("committer", &bus, &fx.path("committer")).start();
    committer.assert_ready();
    let state = fx.path("state");
    let engine = [
        "--steps",
        "40",
        "--every",
        "10",
        "--step-sleep",
        "0.25",
        "--arch-at",
        "10",
        "--kill-at",
        "20",
        "--half-at",
        "30",
    ];
    let mut d = fx.trainer(&bus, &state, &engine, &[]).start();
    d.assert_ready();

    // Third start: after the SIGKILLed rank and after the half-written checkpoint.
    assert!(
        eventually(Duration::from_secs(240), || fx.starts().len() >= 3),
        "{:?}\n{}",
        fx.events(),
        fx.log()
    );
    let third = fx.starts()[2]["pid"].as_u64().unwrap();
    // kill -9 of the daemon while the engine runs: the engine must not be orphaned.
    d.kill9();
    assert!(
        eventually(Duration::from_secs(5), || !alive(third)),
        "engine {third} outlived the SIGKILLed daemon"
    );
    let mut d = fx.trainer(&bus, &state, &engine, &[]).start();
    d.assert_ready();
    wait_state(&bus, &fx, "finished", Duration::from_secs(240));

    // Restarts resumed from the newest complete checkpoint, never from the half-written one.
    let starts = fx.starts();
    let resumes: Vec<Value> = starts.iter().map(|s| s["resume"].clone()).collect();
    assert_eq!(resumes[0], Value::Null);
    let ckpt = |step: u64| fx.path("ckpts").join(format!("step-{step:08}"));
    let s20 = ckpt(20).display().to_string();
    assert_eq!(resumes[1], s20.as_str(), "after the kill at 20: {starts:?}");
    assert_eq!(
        resumes[2],
        s20.as_str(),
        "after the half checkpoint 30: {starts:?}"
    );
    assert!(
        starts.len() >= 4,
        "the restarted daemon restarted the engine: {starts:?}"
    );

    // Every checkpoint scored or refused once; the half one only once complete.
    let log = fx.log();
    for step in [20, 30, 40] {
        let n = log
            .matches(&format!("checkpoint step-{step:08}: eval loss"))
            .count();
        assert_eq!(n, 1, "step {step} scored {n} times\n{log}");
    }
    let intake = read_json(&state.join("external/intake.json"));
    let records = intake["checkpoints"].as_object().unwrap();
    assert_eq!(records["step-00000010"]["outcome"], "refused", "{intake}");
    let reason = records["step-00000010"]["reason"].as_str().unwrap();
    assert!(reason.contains("not supported"), "{reason}");
    assert!(reason.contains("GPT2LMHeadModel"), "{reason}");

    // Scores equal transformers' loss on the held-out sequences.
    let cache = std::fs::read_dir(state.join("tokens"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "tokens"))
        .expect("the token cache");
    let dirs: Vec<String> = [20, 30, 40]
        .iter()
        .map(|s| ckpt(*s).display().to_string())
        .collect();
    let out = run_ok(
        Command::new(venv_python())
            .arg(repo_root().join("tests/trainer/external_check.py"))
            .arg(&cache)
            .args(["64", "8"])
            .args(&dirs),
        "external_check.py",
    );
    let reference: Value = serde_json::from_slice(&out).unwrap();
    for (step, dir) in [20, 30, 40].iter().zip(&dirs) {
        let ours = records[&format!("step-{step:08}")]["loss"]
            .as_f64()
            .unwrap();
        let theirs = reference[dir].as_f64().unwrap();
        let rel = ((ours - theirs) / theirs).abs();
        assert!(rel < 1e-4, "step {step}: ours {ours} transformers {theirs}");
        println!("step {step}: miner-trainer {ours:.6}, transformers {theirs:.6}");
    }

    // Candidates: staged model files only, each handed to the publisher exactly once, committed.
    let index = read_json(&state.join("run.json"));
    let candidates = index["candidates"].as_array().cloned().unwrap();
    assert!(!candidates.is_empty(), "{index}");
    for c in &candidates {
        let path = Path::new(c["path"].as_str().unwrap());
        assert!(path.starts_with(state.join("external/candidates")), "{c}");
    }
    let mut jobs = Value::Null;
    let ok = eventually(Duration::from_secs(120), || {
        jobs = json(&minerctl(&bus, &["jobs", "--json"]));
        let list = jobs.as_array().cloned().unwrap_or_default();
        list.len() >= candidates.len() && list.iter().all(|j| j["state"] == "committed")
    });
    assert!(ok, "jobs: {jobs}");
    let sources: Vec<&str> = jobs
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["source"].as_str().unwrap())
        .collect();
    assert_eq!(sources.len(), candidates.len(), "{sources:?}");
    for c in &candidates {
        let n = sources.iter().filter(|s| **s == c["path"]).count();
        assert_eq!(n, 1, "{} handed off {n} times", c["path"]);
    }
    // What the publisher staged: the model files only, not the marker or engine/ beside them.
    assert!(ckpt(40).join("COMPLETE").is_file() && ckpt(40).join("engine").is_dir());
    let plog = std::fs::read_to_string(fx.path("publisher.log")).unwrap();
    let staged: Vec<&str> = plog
        .lines()
        .filter_map(|l| l.split("pre-flight passed: ").nth(1))
        .collect();
    assert_eq!(staged.len(), candidates.len(), "{plog}");
    for s in &staged {
        // config.json, generation_config.json, model.safetensors, tokenizer.json
        assert!(s.starts_with("4 files"), "{s}");
    }
    // Once the publisher has its copy, the staged candidates are removed.
    assert!(
        eventually(Duration::from_secs(20), || candidates
            .iter()
            .all(|c| !Path::new(c["path"].as_str().unwrap()).exists())),
        "staged candidates kept after their jobs were staged"
    );
    let st = status(&bus);
    assert_eq!(st["step"], 40, "{st}");
    // The live views read the external run as they read the built-in one.
    let png = fx.path("loss.png");
    let out = minerctl(&bus, &["plot", "loss", "--out", png.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains(" 3 evaluation points"), "{said}");
    assert!(!said.contains(", 0 tokens/s points"), "{said}");
    let top = String::from_utf8_lossy(&minerctl(&bus, &["top", "--once"]).stdout).into_owned();
    assert!(top.contains("trainer    finished   step 40"), "{top}");
    assert_eq!(st["candidates"].as_u64(), Some(candidates.len() as u64));
    d.terminate();
    publisher.terminate();
    committer.terminate();
}

/// Proves: `Pause` stops the engine with SIGTERM to its group and, when it ignores SIGTERM,
/// SIGKILL after `stop_grace_seconds`; `Start` restarts it from the newest complete checkpoint
/// (here complete by settled sizes: no marker configured); stopping the daemon stops the engine.
#[test]
fn pause_kills_an_engine_that_ignores_sigterm_and_start_resumes_it() {
    let fx = Fixture::new();
    let bus = Bus::start();
    let state = fx.path("state");
    let engine = [
        "--steps",
        "100000",
        "--every",
        "5",
        "--step-sleep",
        "0.1",
        "--ignore-sigterm",
    ];
    let sets = [
        "trainer.external.complete_marker=\"\"",
        "trainer.external.settle_seconds=1",
        "trainer.external.stop_grace_seconds=2",
    ];
    let mut d = fx.trainer(&bus, &state, &engine, &sets).start();
    d.assert_ready();
    // A checkpoint complete by settling is scored.
    assert!(
        eventually(Duration::from_secs(180), || status(&bus)["eval_loss"]
            .as_f64()
            .is_some_and(f64::is_finite)),
        "{}",
        fx.log()
    );
    let st = status(&bus);
    assert!(
        st["step"].as_u64().unwrap() > 0,
        "step from the metrics file: {st}"
    );
    let pid = fx.starts()[0]["pid"].as_u64().unwrap();
    let paused_at = Instant::now();
    let out = minerctl(&bus, &["train", "pause"]);
    assert!(out.status.success(), "{out:?}");
    wait_state(&bus, &fx, "paused", Duration::from_secs(20));
    assert!(!alive(pid), "the engine survived the pause");
    assert!(
        paused_at.elapsed() >= Duration::from_secs(2),
        "SIGKILL came before the grace"
    );
    assert!(
        fx.events().iter().any(|e| e["event"] == "sigterm-ignored"),
        "{:?}",
        fx.events()
    );
    let out = minerctl(&bus, &["train", "start"]);
    assert!(out.status.success(), "{out:?}");
    assert!(eventually(Duration::from_secs(20), || fx.starts().len() == 2));
    let resume = fx.starts()[1]["resume"].clone();
    assert!(
        resume.as_str().is_some_and(|r| r.contains("/ckpts/step-")),
        "{resume}"
    );
    let second = fx.starts()[1]["pid"].as_u64().unwrap();
    assert!(d.terminate().is_some(), "the daemon stops within its grace");
    assert!(!alive(second), "the engine outlived the daemon's stop");
}

/// Proves the failures are clear and bounded: a command that exits at once is restarted
/// `max_restarts` times and then the run is `failed` with its exit status and last output; a
/// checkpoint_dir that cannot be created fails the run naming the key; `engine = "external"`
/// without a command exits 78 naming `trainer.external.command`.
#[test]
fn failing_engines_and_bad_settings_get_clear_errors() {
    let fx = Fixture::new();
    let bus = Bus::start();
    let state = fx.path("state");
    let mut d = fx
        .trainer(
            &bus,
            &state,
            &["--exit-now", "3"],
            &["trainer.external.max_restarts=2"],
        )
        .start();
    d.assert_ready();
    let st = wait_state(&bus, &fx, "failed", Duration::from_secs(60));
    let err = st["last_error"].as_str().unwrap();
    assert!(
        err.contains("exit status 3") && err.contains("3 times"),
        "{err}"
    );
    assert!(
        err.contains("exiting with 3 as told"),
        "the engine's output: {err}"
    );
    assert_eq!(fx.starts().len(), 3);
    d.terminate();

    let state2 = fx.path("state2");
    let mut d = fx
        .trainer(
            &bus,
            &state2,
            &[],
            &["trainer.external.checkpoint_dir=\"/nonexistent/taominer/ckpts\""],
        )
        .start();
    d.assert_ready();
    let st = wait_state(&bus, &fx, "failed", Duration::from_secs(60));
    let err = st["last_error"].as_str().unwrap();
    assert!(err.contains("checkpoint_dir cannot be created"), "{err}");
    d.terminate();

    let mut d = fx
        .trainer(
            &bus,
            &fx.path("state3"),
            &[],
            &["trainer.external.command=[]"],
        )
        .start();
    let exit = d.wait_exit(Duration::from_secs(20)).expect("exits");
    assert_eq!(exit.code(), Some(78));
    assert!(
        fx.log().contains("trainer.external.command"),
        "{}",
        fx.log()
    );
}

/// Proves exactly once at the worst moments: the daemon SIGKILLed right after a candidate is
/// recorded (before it is announced or the record marked decided), and again right after a score
/// is recorded (before the rule is applied); each restart resumes the engine from its newest
/// complete checkpoint, and in the end every candidate has exactly one publish job.
#[test]
fn crashes_at_the_intake_s_crash_points_hand_off_each_candidate_once() {
    let fx = Fixture::new();
    let bus = Bus::start();
    let mut publisher = Spawn::new("publisher", &bus, &fx.path("publisher")).start();
    publisher.assert_ready();
    let state = fx.path("state");
    let engine = ["--steps", "30", "--every", "10", "--step-sleep", "0.1"];
    for point in [
        "trainer.external-candidate-recorded",
        "trainer.external-scored",
    ] {
        let mut d = fx
            .trainer(&bus, &state, &engine, &[])
            .env("MINERTEST_CRASH_AT", point)
            .start();
        d.assert_ready();
        assert!(
            d.wait_exit(Duration::from_secs(180)).is_some(),
            "no crash at {point}\n{}",
            fx.log()
        );
        let pid = fx.starts().last().unwrap()["pid"].as_u64().unwrap();
        assert!(
            eventually(Duration::from_secs(5), || !alive(pid)),
            "the engine outlived the daemon"
        );
    }
    let mut d = fx.trainer(&bus, &state, &engine, &[]).start();
    d.assert_ready();
    wait_state(&bus, &fx, "finished", Duration::from_secs(180));
    let starts = fx.starts();
    assert!(starts.len() >= 3, "{starts:?}");
    assert!(
        starts[1..].iter().all(|s| s["resume"].is_string()),
        "{starts:?}"
    );

    let index = read_json(&state.join("run.json"));
    let candidates = index["candidates"].as_array().cloned().unwrap();
    assert!(candidates.len() >= 2, "{index}");
    let intake = read_json(&state.join("external/intake.json"));
    for (name, r) in intake["checkpoints"].as_object().unwrap() {
        assert_eq!(r["decided"], true, "{name}: {r}");
    }
    let mut jobs = Value::Null;
    assert!(eventually(Duration::from_secs(30), || {
        jobs = json(&minerctl(&bus, &["jobs", "--json"]));
        jobs.as_array().map_or(0, Vec::len) >= candidates.len()
    }));
    std::thread::sleep(Duration::from_secs(1));
    let jobs = json(&minerctl(&bus, &["jobs", "--json"]));
    let sources: Vec<&str> = jobs
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["source"].as_str().unwrap())
        .collect();
    assert_eq!(sources.len(), candidates.len(), "{sources:?}");
    for c in &candidates {
        assert_eq!(
            sources.iter().filter(|s| **s == c["path"]).count(),
            1,
            "{c}"
        );
    }
    d.terminate();
    publisher.terminate();
}
