//! The reference engine `recipes/fsdp/train.py` on the CPU (gloo), as `miner-trainer` with
//! `trainer.engine = "external"` runs it: `torchrun --nproc-per-node 2` on a tiny LLaMA (hidden
//! 64, 2 layers, vocabulary 256) over a packed token file in the daemon's format. It proves what
//! the daemon relies on: checkpoints appear complete (marker last) and hold the weights the run
//! trained, a killed rank resumes from the newest complete checkpoint exactly as an uninterrupted
//! run, a checkpoint killed before its marker is never resumed from, one rank computes what two
//! do, bad inputs fail at once with the reason, and SIGTERM saves the current step. Prints the 1-rank and 2-rank tokens/s
//! (BENCHMARKS.md, issue 20's benchmark; `--nocapture`).

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use taominer_tests::{repo_root, venv_python};

const SEQ_LEN: usize = 32;
const SEQUENCES: usize = 64;
const STEPS: u64 = 12;
const EVERY: u64 = 4;
/// Sequences per rank per step; two ranks make a global batch of 4.
const BATCH: usize = 2;
const SEED: u64 = 0;
/// A stuck collective must fail the test, not hang CI.
const LAUNCH_LIMIT: Duration = Duration::from_secs(300);

/// The inputs the daemon hands an engine: packed tokens (learnable arithmetic runs mod 256),
/// their meta file, a LlamaForCausalLM config and a tokenizer file to copy.
struct Inputs {
    dir: tempfile::TempDir,
}

impl Inputs {
    fn new() -> Inputs {
        Inputs::with(SEQUENCES, 256, |s, j| {
            let start = (s as u64).wrapping_mul(0x9e37_79b9) % 256;
            let stride = 1 + (s as u64 % 3);
            ((start + stride * j as u64) % 256) as u32
        })
    }

    /// `sequences` rows of `token(row, position)`, and a meta file claiming `meta_vocab`.
    fn with(sequences: usize, meta_vocab: usize, token: impl Fn(usize, usize) -> u32) -> Inputs {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = Vec::with_capacity(sequences * SEQ_LEN * 4);
        for s in 0..sequences {
            for j in 0..SEQ_LEN {
                bytes.extend_from_slice(&token(s, j).to_le_bytes());
            }
        }
        std::fs::write(dir.path().join("train.bin"), bytes).unwrap();
        let meta = serde_json::json!({"sequence_length": SEQ_LEN, "sequences": sequences,
            "vocab_size": meta_vocab, "eos_id": 0, "tokenizer": "tokenizer.json", "seed": SEED});
        std::fs::write(dir.path().join("train.json"), meta.to_string()).unwrap();
        let config = serde_json::json!({"architectures": ["LlamaForCausalLM"],
            "model_type": "llama", "vocab_size": 256, "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
            "tie_word_embeddings": false, "bos_token_id": 1, "eos_token_id": 0});
        std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
        // The engine only copies it into each checkpoint; its content is not read.
        std::fs::write(
            dir.path().join("tokenizer.json"),
            r#"{"version":"1.0","model":{"type":"WordLevel","vocab":{"<unk>":0},"unk_token":"<unk>"}}"#,
        )
        .unwrap();
        Inputs { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn ckpt(&self) -> PathBuf {
        self.path("checkpoints")
    }

    /// The recipe with the daemon's environment (contract) and the test's hyper-parameters.
    fn command(&self, ranks: Option<usize>, batch: usize, metrics: &str) -> Command {
        let recipe = repo_root().join("recipes/fsdp/train.py");
        let mut cmd = match ranks {
            Some(n) => {
                let mut c = Command::new(repo_root().join(".venv/bin/torchrun"));
                c.args(["--standalone", "--nproc-per-node", &n.to_string()])
                    .arg(&recipe);
                c
            }
            None => {
                let mut c = Command::new(venv_python());
                c.arg(&recipe);
                c
            }
        };
        cmd.env("TAOMINER_TRAIN_TOKENS", self.path("train.bin"))
            .env("TAOMINER_TRAIN_META", self.path("train.json"))
            .env("TAOMINER_MODEL_CONFIG", self.path("config.json"))
            .env("TAOMINER_TOKENIZER", self.path("tokenizer.json"))
            .env("TAOMINER_CHECKPOINT_DIR", self.ckpt())
            .env("TAOMINER_METRICS_FILE", self.path(metrics))
            .env("OMP_NUM_THREADS", "1")
            .env_remove("MINERTEST_CRASH_AT")
            .args(["--device", "cpu", "--max-steps", &STEPS.to_string()])
            .args([
                "--checkpoint-every",
                &EVERY.to_string(),
                "--keep-checkpoints",
                "2",
            ])
            .args(["--batch-size", &batch.to_string(), "--lr", "3e-3"])
            .args(["--warmup-steps", "2"]);
        cmd
    }

    fn metrics(&self, name: &str) -> Vec<Value> {
        std::fs::read_to_string(self.path(name))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Names of the checkpoint directory's entries that hold the marker (complete), and of all.
    fn listing(&self) -> (Vec<String>, Vec<String>) {
        let mut all: Vec<String> = std::fs::read_dir(self.ckpt())
            .map(|r| {
                r.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        all.sort();
        let complete = all
            .iter()
            .filter(|n| self.ckpt().join(n).join("COMPLETE").is_file())
            .cloned()
            .collect();
        (complete, all)
    }
}

/// Runs `cmd` in its own process group with a deadline (the whole group is killed past it).
fn launch(cmd: &mut Command) -> Output {
    let child = cmd
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the venv's torchrun / python (scripts/setup)");
    let pid = child.id() as i32;
    let (done, wait) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if wait.recv_timeout(LAUNCH_LIMIT).is_ok() {
            return false;
        }
        // SAFETY: the group is the one spawned above; it is killed, nothing else is touched.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        true
    });
    let out = child.wait_with_output().unwrap();
    let _ = done.send(());
    // SAFETY: ends ranks torchrun left behind in the group (a killed job), if any.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
    assert!(
        !watchdog.join().unwrap(),
        "the engine ran past {LAUNCH_LIMIT:?}: {}",
        text(&out)
    );
    out
}

fn text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn losses(lines: &[Value]) -> Vec<(u64, f64)> {
    lines
        .iter()
        .map(|l| (l["step"].as_u64().unwrap(), l["loss"].as_f64().unwrap()))
        .collect()
}

fn median_tokens_per_second(lines: &[Value]) -> f64 {
    // Step 1 includes the first all-gathers and allocations: left out.
    let mut v: Vec<f64> = lines
        .iter()
        .skip(1)
        .map(|l| l["tokens_per_second"].as_f64().unwrap())
        .collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The uninterrupted 2-rank run the other tests compare against (run once per test binary).
fn reference() -> &'static (Inputs, Vec<Value>, f64) {
    static REF: OnceLock<(Inputs, Vec<Value>, f64)> = OnceLock::new();
    REF.get_or_init(|| {
        let inputs = Inputs::new();
        let started = Instant::now();
        let out = launch(&mut inputs.command(Some(2), BATCH, "metrics.jsonl"));
        assert!(out.status.success(), "{}", text(&out));
        let secs = started.elapsed().as_secs_f64();
        let metrics = inputs.metrics("metrics.jsonl");
        (inputs, metrics, secs)
    })
}

fn load_weights(path: &Path) -> HashMap<String, candle_core::Tensor> {
    candle_core::safetensors::load(path, &candle_core::Device::Cpu).unwrap()
}

/// Two ranks train 12 steps: one metrics line per step, the loss falls, the complete
/// checkpoints are the newest two (step 4 pruned) with the marker, config, weights, tokenizer,
/// engine state and group-readable files; and `LlamaForCausalLM.from_pretrained(step-8)` on step
/// 9's global batch gives the loss the recipe reported for step 9 within 1e-5 (both f32; only the
/// batch shape of the reductions differs), so the saved files are the weights the run trained.
#[test]
fn two_ranks_write_complete_checkpoints_that_transformers_scores_alike() {
    let (inputs, metrics, secs) = reference();
    let l = losses(metrics);
    assert_eq!(
        l.iter().map(|x| x.0).collect::<Vec<_>>(),
        (1..=STEPS).collect::<Vec<_>>()
    );
    let first = (l[0].1 + l[1].1 + l[2].1) / 3.0;
    let last = (l[9].1 + l[10].1 + l[11].1) / 3.0;
    assert!(last < first - 0.2, "the loss did not fall: {l:?}");
    let (complete, all) = inputs.listing();
    assert_eq!(complete, ["step-00000008", "step-00000012"], "{all:?}");
    assert_eq!(all, complete, "nothing else is left behind");
    for c in &complete {
        let d = inputs.ckpt().join(c);
        for f in [
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "engine/state.json",
        ] {
            assert!(d.join(f).is_file(), "{c}/{f}");
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.join("model.safetensors"))
            .unwrap()
            .permissions()
            .mode();
        assert!(
            mode & 0o040 != 0,
            "the publisher reads through the group: {mode:o}"
        );
    }
    let out = Command::new(venv_python())
        .arg(repo_root().join("tests/recipe/check_checkpoint.py"))
        .arg(inputs.ckpt().join("step-00000008"))
        .arg(inputs.path("train.bin"))
        .arg(inputs.path("train.json"))
        .args([SEED.to_string(), (2 * BATCH).to_string(), "9".into()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ours = v["loss"].as_f64().unwrap();
    let reported = l[8].1;
    assert!(
        ((ours - reported) / reported).abs() < 1e-5,
        "transformers {ours} vs the recipe's step 9 {reported}"
    );
    println!("2 ranks: {STEPS} steps in {secs:.1} s (with start-up)");
}

/// `kill -9` of rank 1 after step 6 ends the torchrun job with only step 4 complete; a relaunch
/// with `--resume step-00000004` killed (rank 0) after renaming step 8 but before its marker
/// leaves `step-00000008` without `COMPLETE`; a relaunch with `--resume latest` ignores it,
/// resumes at step 5 and from there reports the uninterrupted run's losses within 1e-6 and ends
/// at its weights within 1e-6 × max|w| (observed: bit-identical), so the model, the AdamW
/// moments, the schedule and the data position were all restored.
#[test]
fn a_killed_rank_resumes_from_the_newest_complete_checkpoint_as_if_uninterrupted() {
    let (reference, ref_metrics, _) = reference();
    let inputs = Inputs::new();
    let out = launch(
        inputs
            .command(Some(2), BATCH, "m1.jsonl")
            .env("MINERTEST_CRASH_AT", "rank1:after-step:6"),
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert_eq!(inputs.listing().0, ["step-00000004"]);

    let resume = inputs.ckpt().join("step-00000004");
    let out = launch(
        inputs
            .command(Some(2), BATCH, "m2.jsonl")
            .arg("--resume")
            .arg(&resume)
            .env("MINERTEST_CRASH_AT", "rank0:before-marker:8"),
    );
    assert!(!out.status.success(), "{}", text(&out));
    let (complete, all) = inputs.listing();
    assert_eq!(complete, ["step-00000004"]);
    assert!(
        all.contains(&"step-00000008".to_string()),
        "renamed before the marker: {all:?}"
    );

    let out = launch(
        inputs
            .command(Some(2), BATCH, "m3.jsonl")
            .args(["--resume", "latest"]),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("resumed from") && text(&out).contains("step-00000004 at step 4"),
        "{}",
        text(&out)
    );
    let after = losses(&inputs.metrics("m3.jsonl"));
    let expected = &losses(ref_metrics)[4..];
    assert_eq!(
        after.iter().map(|x| x.0).collect::<Vec<_>>(),
        expected.iter().map(|x| x.0).collect::<Vec<_>>()
    );
    for ((step, a), (_, b)) in after.iter().zip(expected) {
        assert!(((a - b) / b).abs() < 1e-6, "step {step}: {a} vs {b}");
    }
    assert_eq!(inputs.listing().0, ["step-00000008", "step-00000012"]);
    let ours = load_weights(&inputs.ckpt().join("step-00000012/model.safetensors"));
    let theirs = load_weights(&reference.ckpt().join("step-00000012/model.safetensors"));
    assert_eq!(ours.len(), theirs.len());
    for (name, a) in &ours {
        let b = &theirs[name];
        let diff: f32 = (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar()
            .unwrap();
        let scale: f32 = b
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!(diff <= 1e-6 * scale, "{name}: {diff} (max |w| {scale})");
    }
}

/// Without torchrun (world size 1, the same FSDP code path over a one-process group), with the
/// same global batch (4 sequences) and with activation checkpointing on, the run reports the
/// 2-rank losses (checkpointing off) within 1e-4: sharding, gradient averaging and recomputing
/// activations change nothing but float order. Prints tokens/s of 1 rank vs 2.
#[test]
fn one_rank_without_torchrun_computes_what_two_ranks_do() {
    let (_, ref_metrics, _) = reference();
    let inputs = Inputs::new();
    let out = launch(
        inputs
            .command(None, 2 * BATCH, "m.jsonl")
            .args(["--checkpoint-activations", "on"]),
    );
    assert!(
        text(&out).contains("activation checkpointing on"),
        "{}",
        text(&out)
    );
    assert!(out.status.success(), "{}", text(&out));
    let one = inputs.metrics("m.jsonl");
    for ((step, a), (_, b)) in losses(&one).iter().zip(losses(ref_metrics)) {
        assert!(((a - b) / b).abs() < 1e-4, "step {step}: {a} vs {b}");
    }
    assert_eq!(one.len(), ref_metrics.len());
    println!(
        "recipe tokens/s (median of steps 2..{STEPS}, {} tokens a step, 1 thread a rank): \
         1 rank (activation checkpointing on) {:.0}, 2 ranks {:.0}",
        4 * SEQ_LEN,
        median_tokens_per_second(&one),
        median_tokens_per_second(ref_metrics)
    );
}

/// Bad inputs fail at once with exit 2 and a line naming the problem, and write no checkpoint:
/// a missing token file, a token file shorter than its meta file says, a tokenizer vocabulary
/// larger than the model's, a token id past the vocabulary, a `--resume` of a directory without
/// the marker.
#[test]
fn bad_inputs_fail_at_once_with_the_reason() {
    let ok = Inputs::new();
    let missing = Inputs::new();
    std::fs::remove_file(missing.path("train.bin")).unwrap();
    let short = Inputs::new();
    std::fs::write(short.path("train.bin"), [0u8; 4 * SEQ_LEN * 3]).unwrap();
    let vocab = Inputs::with(SEQUENCES, 512, |_, j| j as u32);
    let id = Inputs::with(SEQUENCES, 256, |_, j| if j == 5 { 300 } else { 1 });
    let unfinished = ok.path("half");
    std::fs::create_dir_all(unfinished.join("engine")).unwrap();
    std::fs::write(unfinished.join("engine/state.json"), "{}").unwrap();
    let cases: [(&Inputs, &[&str], &str); 5] = [
        (&missing, &[], "train.bin does not exist"),
        (&short, &[], "but the meta file says 64 sequences"),
        (
            &vocab,
            &[],
            "vocab_size 512 (train meta) exceeds the model's vocab_size 256",
        ),
        (&id, &[], "token id 300 >= vocab_size 256"),
        (
            &ok,
            &["--resume", unfinished.to_str().unwrap()],
            "not a complete checkpoint",
        ),
    ];
    for (inputs, extra, want) in cases {
        let out = launch(inputs.command(None, 4, "m.jsonl").args(extra));
        let t = text(&out);
        assert_eq!(out.status.code(), Some(2), "{want}: {t}");
        assert!(t.contains(want), "want {want:?} in: {t}");
        let (complete, _) = inputs.listing();
        assert!(complete.is_empty(), "{want}: {complete:?}");
    }
}

/// SIGTERM to the engine's process group (what the daemon sends on `Pause` and on stop) while it
/// trains: the ranks agree to stop at the end of the current step, write it as a complete
/// checkpoint (the step of the last metrics line) and exit, so a pause loses no step.
#[test]
fn sigterm_saves_the_current_step_and_stops() {
    let inputs = Inputs::new();
    let mut cmd = inputs.command(Some(2), BATCH, "m.jsonl");
    cmd.args(["--max-steps", "1000000", "--checkpoint-every", "1000000"]);
    let mut child = cmd
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let deadline = Instant::now() + LAUNCH_LIMIT;
    while inputs.metrics("m.jsonl").len() < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: the group spawned above (torchrun and its ranks).
    unsafe { libc::kill(-pid, libc::SIGTERM) };
    let stopped = taominer_tests::eventually(Duration::from_secs(120), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    // SAFETY: as above; whatever is left after the bound is killed.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
    let _ = child.wait();
    assert!(stopped, "the engine did not stop within 120 s of SIGTERM");
    let last = losses(&inputs.metrics("m.jsonl")).last().unwrap().0;
    assert!(last >= 3);
    let (complete, all) = inputs.listing();
    assert_eq!(complete, [format!("step-{last:08}")], "{all:?}");
    let state: Value = serde_json::from_str(
        &std::fs::read_to_string(inputs.ckpt().join(&complete[0]).join("engine/state.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(state["position"]["step"].as_u64(), Some(last));
}
