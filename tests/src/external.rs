//! Helpers of the external-engine tests (`trainer_external.rs` with the fake engine,
//! `trainer_external_fsdp.rs` with the reference recipe under torchrun): a trainer configured for
//! `trainer.engine = "external"` on the generated corpus, its status over `minerctl`, and the
//! process checks both files make. Kept here so the two files configure the daemon alike.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::{eventually, minerctl, Bus, Spawn};

/// A trainer with `trainer.engine = "external"` running `command`, on the fixtures of
/// [`crate::make_training_data`] in `data` (corpus, BPE tokenizer), a tiny model (hidden 64, two
/// layers), sequences of 64 scored 8 at a time, every improvement a candidate, checkpoints in
/// `<data>/ckpts` resumed with `--resume`, fast restarts; its log goes to `<data>/trainer.log`.
/// `extra` `--set`s come last (and win).
pub fn external_trainer<'a>(
    bus: &'a Bus,
    state: &'a Path,
    data: &Path,
    command: &[String],
    extra: &[&str],
) -> Spawn<'a> {
    let mut sets = vec![
        "trainer.engine=\"external\"".to_string(),
        format!(
            "trainer.data=[{:?},{:?}]",
            data.join("corpus.txt"),
            data.join("corpus.jsonl")
        ),
        format!("trainer.tokenizer={:?}", data.join("tokenizer.json")),
        "trainer.sequence_length=64".into(),
        "trainer.batch_size=4".into(),
        "trainer.eval_sequences=8".into(),
        "trainer.model.hidden_size=64".into(),
        "trainer.model.intermediate_size=128".into(),
        "trainer.model.num_hidden_layers=2".into(),
        // Every improvement is a candidate.
        "trainer.avg_loss_upload_threshold=100.0".into(),
        format!("trainer.external.command={command:?}"),
        format!(
            "trainer.external.checkpoint_dir={:?}",
            data.join("ckpts").display().to_string()
        ),
        "trainer.external.resume_flag=\"--resume\"".into(),
        "trainer.external.restart_initial_ms=200".into(),
        "trainer.external.restart_max_ms=1000".into(),
        "trainer.external.stop_grace_seconds=3".into(),
    ];
    sets.extend(extra.iter().map(|s| s.to_string()));
    let mut spawn = Spawn::new("trainer", bus, state).log_to(&data.join("trainer.log"));
    for s in sets {
        spawn = spawn.arg("--set").arg(&s);
    }
    spawn
}

/// `minerctl train status --json`, or `Null` while the trainer does not answer.
pub fn train_status(bus: &Bus) -> Value {
    let out = minerctl(bus, &["train", "status", "--json"]);
    if out.status.success() {
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    } else {
        Value::Null
    }
}

/// Waits until the trainer's state is `state`; fails with the last status and `log()`.
pub fn wait_train_state(
    bus: &Bus,
    state: &str,
    timeout: Duration,
    log: impl Fn() -> String,
) -> Value {
    let mut last = Value::Null;
    let ok = eventually(timeout, || {
        last = train_status(bus);
        last["state"] == state
    });
    assert!(ok, "trainer never reached {state}: {last}\n{}", log());
    last
}

/// Whether `pid` is a live process (not gone, not a zombie).
pub fn alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rfind(')')
                .map(|i| !s[i + 1..].trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// The live children of `pid` (from /proc: every process whose parent it is).
pub fn children(pid: u64) -> Vec<u64> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u64>().ok())
        .filter(|&p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = &s[s.rfind(')')? + 1..];
                    rest.split_whitespace().nth(1)?.parse::<u64>().ok()
                })
                == Some(pid)
        })
        .filter(|&p| alive(p))
        .collect()
}

/// A JSON file's content, or `Null` when it is missing or does not parse.
pub fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_else(|_| "null".into()))
        .unwrap_or(Value::Null)
}
