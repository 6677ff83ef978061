//! `fuzz-driver`: the stable fuzzing run of CI (`scripts/fuzz`). Each target runs in its own
//! child process, so a crash that kills the process (an abort, a stack overflow) is reported for
//! that target, then replayed with `--trace` to leave its input on disk.

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use taominer_fuzz::{driver, seeds, targets};

#[derive(Parser)]
#[command(
    about = "Replay each fuzz target's seed corpus, then mutate it for a bounded time",
    args_override_self = true
)]
struct Args {
    /// Targets to run (default: all).
    targets: Vec<String>,
    /// Seconds of mutation per target, after the corpus replay.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// The mutation seed (a crash found with it replays with it).
    #[arg(long, default_value_t = 0x7a0_2026)]
    seed: u64,
    /// Stop each target after this many executions.
    #[arg(long)]
    max_execs: Option<u64>,
    /// Seed corpora, one directory per target.
    #[arg(long, default_value = "fuzz/corpus")]
    corpus: PathBuf,
    /// Where crashing inputs are saved, one directory per target.
    #[arg(long, default_value = "fuzz/artifacts")]
    artifacts: PathBuf,
    /// Write each input to <artifacts>/<target>/last-input before running it.
    #[arg(long)]
    trace: bool,
    /// Run the targets in this process (no isolation; used for each child).
    #[arg(long)]
    in_process: bool,
    /// List the targets and exit.
    #[arg(long)]
    list: bool,
    /// Write the generated seed corpora under this directory and exit.
    #[arg(long)]
    write_seeds: Option<PathBuf>,
}

/// The line a child prints for its parent.
const REPORT: &str = "fuzz-report";

fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    if args.list {
        for (name, _) in targets::TARGETS {
            println!("{name}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(dir) = &args.write_seeds {
        let root = std::env::current_dir()?;
        for (target, name, bytes) in seeds::seeds(&root)? {
            let d = dir.join(target);
            std::fs::create_dir_all(&d)?;
            std::fs::write(d.join(&name), bytes)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let names: Vec<String> = if args.targets.is_empty() {
        targets::TARGETS
            .iter()
            .map(|(n, _)| n.to_string())
            .collect()
    } else {
        args.targets.clone()
    };
    for n in &names {
        if targets::by_name(n).is_none() {
            bail!("unknown target {n:?} (--list shows them)");
        }
    }
    let opts = driver::Options {
        time: Duration::from_secs_f64(args.seconds.max(0.0)),
        seed: args.seed,
        max_execs: args.max_execs,
        corpus: args.corpus.clone(),
        artifacts: args.artifacts.clone(),
        trace: args.trace,
    };
    if args.in_process {
        driver::quiet_panics();
        // A thread of its own, so that the targets' scratch directory (thread-local) is removed
        // when it ends; the main thread's stack size, so that deep inputs overflow no sooner.
        let worker = std::thread::Builder::new()
            .stack_size(8 << 20)
            .spawn(move || run_in_process(&names, &opts))?;
        worker
            .join()
            .map_err(|_| anyhow::anyhow!("the fuzzing thread panicked"))??;
        return Ok(ExitCode::SUCCESS);
    }

    let exe = std::env::current_exe()?;
    let mut failed = false;
    println!(
        "{:<20} {:>6} {:>9} {:>9} {:>9} {:>6} {:>7}",
        "target", "seeds", "execs", "execs/s", "accepted", "pool", "crashes"
    );
    for n in &names {
        let child = |trace: bool| {
            let mut c = Command::new(&exe);
            c.arg("--in-process")
                .arg(n)
                // Tracing writes every input first: give the replay time to reach the same one.
                .args([
                    "--seconds",
                    &(args.seconds * if trace { 10.0 } else { 1.0 }).to_string(),
                ])
                .args(["--seed", &args.seed.to_string()])
                .arg("--corpus")
                .arg(&args.corpus)
                .arg("--artifacts")
                .arg(&args.artifacts);
            if let Some(m) = args.max_execs {
                c.args(["--max-execs", &m.to_string()]);
            }
            if trace {
                c.arg("--trace");
            }
            c.output()
        };
        let out = child(args.trace)?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        let line = stdout.lines().find(|l| l.starts_with(REPORT));
        match (out.status.success(), line) {
            (true, Some(line)) => {
                let f: Vec<&str> = line.split_whitespace().collect();
                let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
                let crashes = num(7) as u64;
                failed |= crashes > 0;
                println!(
                    "{:<20} {:>6} {:>9} {:>9.0} {:>9} {:>6} {:>7}",
                    n,
                    num(2),
                    num(3),
                    num(3) / num(6).max(1e-9),
                    num(4),
                    num(5),
                    crashes
                );
            }
            _ => {
                failed = true;
                println!("{n:<20} died: {} (replaying with --trace)", out.status);
                // The mutation sequence is deterministic: the replay dies on the same input.
                let again = child(true)?;
                let last = args.artifacts.join(n).join("last-input");
                println!(
                    "{n:<20} replay: {}; the input it died on is {}",
                    again.status,
                    last.display()
                );
            }
        }
    }
    if failed {
        println!(
            "FAIL: crashes above (inputs under {})",
            args.artifacts.display()
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs each target in this process and prints its report line for the parent.
fn run_in_process(names: &[String], opts: &driver::Options) -> anyhow::Result<()> {
    for n in names {
        let target = targets::by_name(n).context("target")?;
        let r = driver::run(n, target, opts)?;
        println!(
            "{REPORT} {n} {} {} {} {} {:.1} {}",
            r.seeds,
            r.execs,
            r.accepted,
            r.pool,
            r.seconds,
            r.crashes.len()
        );
        for (path, message) in &r.crashes {
            eprintln!("CRASH {n}: {}\n{message}", path.display());
        }
    }
    Ok(())
}
