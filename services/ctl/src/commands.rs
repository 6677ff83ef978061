//! The subcommands of `minerctl`, each a short function over the D-Bus proxies of
//! `taominer_core::bus`. Errors say what to do next ("publisher is not running: systemctl start
//! miner-publisher"), because the person reading them is at a terminal.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use taominer_core::bus::{
    self, BusSpec, CommitterProxy, ErrorKind, JobState, Part, PredictorProxy, PublisherProxy,
    TrainerProxy,
};
use taominer_core::config::{Config, Profile, Sources};
use taominer_core::formats::{hash, ss58};
use taominer_core::wallet::{self, Hotkey};

/// Control and inspect the taominer daemons.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// Bus the daemons are on: system, session, or a D-Bus address (unix:path=…).
    #[arg(long, global = true, value_name = "BUS", default_value = "system")]
    bus: BusSpec,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One line per daemon: up/down, state, last job.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// The predictor's axon: reload the model, or its status.
    Predictor {
        #[command(subcommand)]
        action: PredictorAction,
    },
    /// The whole appliance on one screen, refreshed: each daemon's state, training step, loss,
    /// tokens/s, ETA, jobs in flight, the last commitment and its block, requests served.
    Top {
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        /// Print one frame and exit.
        #[arg(long)]
        once: bool,
    },
    /// Plot the trainer's loss history.
    Plot {
        #[command(subcommand)]
        what: PlotWhat,
    },
    /// The figures of `top` in Prometheus' text format: printed once, or served on --listen.
    Metrics {
        /// Serve GET /metrics on this address (e.g. 127.0.0.1:9101) until Ctrl-C.
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
    },
    /// SoundsRight validators' feedback (benchmark results), newest first.
    Feedback {
        /// Show at most this many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Hand a model directory to the publisher; prints the job id.
    Publish {
        /// The model directory (config.json, *.safetensors, tokenizer files, ...).
        dir: PathBuf,
        /// Competition id; the configured default when omitted.
        #[arg(long)]
        competition: Option<String>,
        /// Idempotence key: publishing again with the same key prints the job the first call
        /// made instead of queueing another (for scripts that retry). Without it every call
        /// queues a new job, as a person typing the command expects.
        #[arg(long, conflicts_with = "dry_run")]
        key: Option<String>,
        /// Wait until the job is committed (or failed), up to this many seconds.
        #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "300")]
        wait: Option<u64>,
        /// Run only the competition pre-flight and the local hash, here, and print what would be
        /// uploaded; no daemon is needed and nothing is sent anywhere.
        #[arg(long)]
        dry_run: bool,
        /// Configuration for --dry-run (default: /etc/taominer/miner.toml when it exists).
        #[arg(long, value_name = "FILE", requires = "dry_run")]
        config: Option<PathBuf>,
        /// Override a configuration key for --dry-run, as the daemons' --set.
        #[arg(long = "set", value_name = "KEY=VALUE", requires = "dry_run")]
        set: Vec<String>,
    },
    /// The publisher's jobs.
    Jobs {
        #[arg(long)]
        json: bool,
    },
    /// A hotkey's current commitment on the configured subnet, as the chain holds it (offline:
    /// the local ledger), whoever wrote it.
    Commitment {
        /// The hotkey's SS58 address.
        #[arg(required_unless_present = "uid")]
        hotkey: Option<String>,
        /// The miner's uid on the subnet instead of its hotkey (looked up in the metagraph).
        #[arg(long, conflicts_with = "hotkey")]
        uid: Option<u16>,
        #[arg(long)]
        json: bool,
    },
    /// The subnet's neurons as the chain reports them (uid, hotkey, stake, permit, incentive, axon).
    Metagraph {
        #[arg(long)]
        json: bool,
    },
    /// The commitments written (offline: the local ledger).
    Commitments {
        #[arg(long)]
        json: bool,
    },
    /// Check a hotkey keyfile as the daemons will load it and print its address (no daemon needed).
    Hotkey {
        /// The keyfile (e.g. ~/.bittensor/wallets/NAME/hotkeys/HOTKEY).
        file: PathBuf,
        /// Also sign this text with the hotkey and print the signature (0x-hex, sr25519).
        #[arg(long, value_name = "TEXT")]
        sign: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Control and watch the training run.
    Train {
        #[command(subcommand)]
        action: TrainAction,
    },
    /// Compute the model hash and secure hash of a directory as validators do (no daemon needed).
    Hash {
        dir: PathBuf,
        /// The hotkey SS58 address the secure hash is bound to.
        #[arg(long)]
        hotkey: String,
        #[arg(long, default_value = "pretraining")]
        profile: Profile,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum PredictorAction {
    /// Load the model file now; says why a bad one was refused (the old one keeps serving).
    Reload,
    /// The serving model, its version, counters and the last reload error.
    Status {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum PlotWhat {
    /// Training and evaluation loss by step, as a PNG.
    Loss {
        #[arg(long, value_name = "FILE", default_value = "loss.png")]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum TrainAction {
    /// Start (or resume) training.
    Start,
    /// Pause after the current step; a checkpoint keeps the progress.
    Pause,
    /// Step, losses, speed, ETA and candidates.
    Status {
        #[arg(long)]
        json: bool,
    },
}

/// What went wrong, with the exit status it maps to (sysexits.h, so scripts can tell a request
/// to fix from a daemon to start from a fault to report).
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// The command line or a local file is wrong (bad hotkey, not a directory): 64.
    #[error("{0}")]
    Usage(String),
    /// The daemon refused the request, or the model or key given is not acceptable: 65.
    #[error("{0}")]
    Refused(String),
    /// A daemon is not running, the bus is unreachable, or the daemon cannot serve it now: 69.
    #[error("{0}")]
    Unavailable(String),
    /// A daemon (or minerctl itself) failed doing it; its journal says more: 70.
    #[error("{0}")]
    Internal(String),
    /// The configuration given to a local command is not valid: 78, as the daemons exit.
    #[error("{0}")]
    Config(String),
    /// The wait for a job ran out: 75, try again later.
    #[error("{0}")]
    TimedOut(String),
}

impl CtlError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CtlError::Usage(_) => 64,       // EX_USAGE
            CtlError::Refused(_) => 65,     // EX_DATAERR
            CtlError::Unavailable(_) => 69, // EX_UNAVAILABLE
            CtlError::Internal(_) => 70,    // EX_SOFTWARE
            CtlError::TimedOut(_) => 75,    // EX_TEMPFAIL
            CtlError::Config(_) => 78,      // EX_CONFIG
        }
    }
}

/// A local command's failure in the shared library: a model or value that breaks a rule is
/// refused (65), a path that cannot be read is a usage error (64).
impl From<taominer_core::Error> for CtlError {
    fn from(e: taominer_core::Error) -> CtlError {
        use taominer_core::Error as E;
        match e {
            E::Config(c) => CtlError::Config(c.to_string()),
            E::Model(_) | E::Format(_) | E::Exposed(_) => CtlError::Refused(e.to_string()),
            E::Io { .. } => CtlError::Usage(e.to_string()),
            other => CtlError::Internal(other.to_string()),
        }
    }
}

type Result<T> = std::result::Result<T, CtlError>;

pub async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Hash {
            dir,
            hotkey,
            profile,
            json,
        } => hash_dir(&dir, &hotkey, profile, json),
        Command::Hotkey { file, sign, json } => hotkey(&file, sign.as_deref(), json),
        Command::Status { json } => status(&cli.bus, json).await,
        Command::Publish {
            dir,
            competition,
            dry_run: true,
            config,
            set,
            ..
        } => dry_run(&dir, competition, config, set),
        Command::Publish {
            dir,
            competition,
            key,
            wait,
            ..
        } => publish(&cli.bus, &dir, competition, key, wait).await,
        Command::Jobs { json } => jobs(&cli.bus, json).await,
        Command::Commitments { json } => commitments(&cli.bus, json).await,
        Command::Commitment { hotkey, uid, json } => {
            commitment(&cli.bus, hotkey.as_deref(), uid, json).await
        }
        Command::Metagraph { json } => metagraph(&cli.bus, json).await,
        Command::Train { action } => train(&cli.bus, action).await,
        Command::Predictor { action } => predictor(&cli.bus, action).await,
        Command::Feedback { limit, json } => feedback(&cli.bus, limit, json).await,
        Command::Top { interval, once } => {
            let conn = connect(&cli.bus).await?;
            let every = std::time::Duration::from_secs_f64(interval.clamp(0.1, 3600.0));
            crate::top::run(&conn, every, once)
                .await
                .map_err(|e| CtlError::Internal(format!("drawing the view: {e}")))
        }
        Command::Plot {
            what: PlotWhat::Loss { out },
        } => plot_loss(&cli.bus, &out).await,
        Command::Metrics { listen } => {
            let conn = connect(&cli.bus).await?;
            match listen {
                Some(addr) => crate::metrics::serve(conn, &addr)
                    .await
                    .map_err(|e| CtlError::Usage(format!("--listen {addr}: {e}"))),
                None => {
                    print!(
                        "{}",
                        crate::metrics::exposition(&crate::snapshot::Snapshot::read(&conn).await)
                    );
                    Ok(())
                }
            }
        }
    }
}

async fn connect(bus: &BusSpec) -> Result<zbus::Connection> {
    bus.connect().await.map_err(|e| {
        CtlError::Unavailable(format!(
            "cannot reach {bus}: {e} (is dbus running? pass --bus to choose another)"
        ))
    })
}

/// Maps a call error to a message that names the daemon and the fix.
fn call_error(part: Part, e: zbus::Error) -> CtlError {
    if bus::is_service_unknown(&e) {
        return CtlError::Unavailable(format!(
            "{part} is not running: systemctl start {}",
            part.unit()
        ));
    }
    let message = format!("{part}: {}", bus::error_message(&e));
    match bus::error_kind(&e) {
        ErrorKind::Refused => CtlError::Refused(message),
        ErrorKind::Unavailable => CtlError::Unavailable(message),
        ErrorKind::Internal => CtlError::Internal(message),
    }
}

fn hash_dir(dir: &std::path::Path, hotkey: &str, profile: Profile, json: bool) -> Result<()> {
    ss58::decode(hotkey).map_err(|e| CtlError::Usage(format!("--hotkey: {e}")))?;
    if !dir.is_dir() {
        return Err(CtlError::Usage(format!(
            "{}: not a directory",
            dir.display()
        )));
    }
    let done = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let bar = crate::progress::wanted().then(|| {
        let total = hash::walk(dir, &|_| false)
            .map(|entries| {
                entries
                    .iter()
                    .filter_map(|e| std::fs::metadata(&e.path).ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        crate::progress::Bar::start("hashing", total, done.clone(), crate::progress::target())
    });
    let model_hash = profile
        .rules()
        .model_hash(dir, &done)
        .map_err(CtlError::from)?;
    drop(bar);
    let secure = profile.rules().secure_hash(&model_hash, hotkey);
    if json {
        let v = serde_json::json!({ "model_hash": model_hash, "secure_hash": secure });
        println!("{v}");
    } else {
        println!("model_hash  {model_hash}");
        println!(
            "secure_hash {}",
            secure
                .as_deref()
                .unwrap_or("(none: this profile commits a hash of the ids)")
        );
    }
    Ok(())
}

#[derive(serde::Serialize)]
struct DaemonStatus {
    daemon: &'static str,
    up: bool,
    state: String,
    status: String,
}

async fn status(bus: &BusSpec, json: bool) -> Result<()> {
    let conn = connect(bus).await?;
    let mut rows = Vec::new();
    for part in Part::ALL {
        let res: zbus::Result<(String, String)> = async {
            Ok(match part {
                Part::Trainer => {
                    let s = TrainerProxy::new(&conn).await?.status().await?;
                    (s.line, s.state.to_string())
                }
                Part::Predictor => {
                    let s = PredictorProxy::new(&conn).await?.status().await?;
                    (s.line, s.state.to_string())
                }
                Part::Publisher => {
                    let p = PublisherProxy::new(&conn).await?;
                    (p.status().await?, p.state().await?.to_string())
                }
                Part::Committer => {
                    let p = CommitterProxy::new(&conn).await?;
                    (p.status().await?, p.state().await?.to_string())
                }
            })
        }
        .await;
        rows.push(match res {
            Ok((status, state)) => DaemonStatus {
                daemon: part.as_str(),
                up: true,
                state,
                status,
            },
            Err(e) if bus::is_service_unknown(&e) => DaemonStatus {
                daemon: part.as_str(),
                up: false,
                state: "down".into(),
                status: format!("not running: systemctl start {}", part.unit()),
            },
            Err(e) => DaemonStatus {
                daemon: part.as_str(),
                up: false,
                state: "error".into(),
                status: bus::error_message(&e),
            },
        });
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
    } else {
        for r in rows {
            let up = if r.up { "up" } else { "down" };
            println!("{:<10} {:<5} {:<8} {}", r.daemon, up, r.state, r.status);
        }
    }
    Ok(())
}

async fn publish(
    bus: &BusSpec,
    dir: &std::path::Path,
    competition: Option<String>,
    key: Option<String>,
    wait: Option<u64>,
) -> Result<()> {
    // The publisher does not share our working directory: send an absolute path.
    let abs =
        std::path::absolute(dir).map_err(|e| CtlError::Usage(format!("{}: {e}", dir.display())))?;
    let conn = connect(bus).await?;
    let publisher = PublisherProxy::new(&conn)
        .await
        .map_err(|e| call_error(Part::Publisher, e))?;
    let path = abs
        .to_str()
        .ok_or_else(|| CtlError::Usage(format!("{}: path is not UTF-8", abs.display())))?;
    let id = publisher
        .publish(
            path,
            competition.as_deref().unwrap_or(""),
            key.as_deref().unwrap_or(""),
        )
        .await
        .map_err(|e| call_error(Part::Publisher, e))?;
    println!("{id}");
    let Some(secs) = wait else {
        return Ok(());
    };
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    let show = crate::progress::wanted();
    let mut last_state = None;
    // The upload's bytes while the job is `staged` and the publisher is sending it.
    let mut upload: Option<indicatif::ProgressBar> = None;
    loop {
        let jobs = publisher
            .jobs()
            .await
            .map_err(|e| call_error(Part::Publisher, e))?;
        if let Some(job) = jobs.iter().find(|j| j.id == id) {
            if show && job.state == JobState::Staged && job.total_bytes > 0 {
                let bar = upload.get_or_insert_with(|| {
                    crate::progress::bytes("uploading", job.total_bytes, crate::progress::target())
                });
                if job.uploaded_bytes < bar.position() {
                    // A retry sends everything again: start the bar (and its rate) over.
                    bar.reset();
                }
                bar.set_length(job.total_bytes);
                bar.set_position(job.uploaded_bytes);
            } else if let Some(bar) = upload.take() {
                bar.finish_and_clear();
            }
            // Each step as it happens: received → staged → uploaded → hashed → handed-off.
            if show && Some(job.state) != last_state {
                let line = format!(
                    "  {:>6.1}s  {}{}",
                    started.elapsed().as_secs_f64(),
                    job.state,
                    if job.error.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", job.error)
                    }
                );
                match &upload {
                    Some(bar) => bar.println(line),
                    None => eprintln!("{line}"),
                }
                last_state = Some(job.state);
            }
            if job.state == JobState::Committed {
                eprintln!("committed at block {}: {}", job.block, job.commitment);
                return Ok(());
            }
            if job.state.is_refused() {
                return Err(CtlError::Refused(format!(
                    "job {id} {}: {}",
                    job.state, job.error
                )));
            }
        }
        if Instant::now() >= deadline {
            return Err(CtlError::TimedOut(format!(
                "job {id} not committed after {secs}s; see `minerctl jobs` and `minerctl status`"
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn hotkey(file: &std::path::Path, sign: Option<&str>, json: bool) -> Result<()> {
    let (key, source) =
        Hotkey::load_with_source(file).map_err(|e| CtlError::Refused(e.to_string()))?;
    if let Some(warning) = wallet::permissions_warning(file) {
        eprintln!("minerctl: warning: {warning}");
    }
    let source = match source {
        wallet::Source::Phrase => "secretPhrase",
        wallet::Source::Seed => "secretSeed",
        wallet::Source::PrivateKey => "privateKey",
    };
    let signature = sign.map(|text| format!("0x{}", hex::encode(key.sign(text.as_bytes()))));
    if json {
        let v = serde_json::json!({
            "ss58_address": key.ss58(),
            "public_key": format!("0x{}", hex::encode(key.public_key())),
            "secret_from": source,
            "signature": signature,
        });
        println!("{v}");
    } else {
        println!("ss58_address {}", key.ss58());
        println!("public_key   0x{}", hex::encode(key.public_key()));
        println!("secret from  {source}");
        if let Some(sig) = signature {
            println!("signature    {sig}");
        }
    }
    Ok(())
}

/// The default configuration file the daemons are given under systemd.
const SYSTEM_CONFIG: &str = "/etc/taominer/miner.toml";

/// `publish --dry-run`: the pre-flight and the local hash, as the publisher would compute them.
fn dry_run(
    dir: &std::path::Path,
    competition: Option<String>,
    config: Option<PathBuf>,
    set: Vec<String>,
) -> Result<()> {
    let file = config.or_else(|| {
        let p = PathBuf::from(SYSTEM_CONFIG);
        p.is_file().then_some(p)
    });
    let config = Config::load(&Sources {
        file,
        overrides: set,
        env: true,
    })
    .map_err(|e| CtlError::Config(e.to_string()))?;
    let miner = &config.miner;
    if !dir.is_dir() {
        return Err(CtlError::Usage(format!(
            "{}: not a directory",
            dir.display()
        )));
    }
    let competition = competition
        .or_else(|| miner.competition())
        .ok_or_else(|| CtlError::Usage("no competition: pass --competition".into()))?;
    miner
        .profile
        .rules()
        .check_competition(&competition, &miner.allowed_competitions())
        .map_err(|e| CtlError::Refused(e.to_string()))?;
    let repo = config
        .publisher
        .repo(miner)
        .ok_or_else(|| CtlError::Config("publisher.repo is not set".into()))?;
    let limits = config.publisher.limits_for(miner.profile, &competition);
    let report = miner
        .profile
        .rules()
        .preflight(dir, &repo, &competition, limits.as_ref())
        .map_err(|e| CtlError::Refused(e.to_string()))?;
    print!("{report}");
    println!("files to upload:");
    for e in hash::walk(dir, &|_| false).map_err(CtlError::from)? {
        let len = std::fs::metadata(&e.path).map(|m| m.len()).unwrap_or(0);
        println!("  {len:>14}  {}", e.rel);
    }
    let model_hash = miner
        .profile
        .rules()
        .model_hash(dir, &std::sync::atomic::AtomicU64::new(0))
        .map_err(CtlError::from)?;
    println!("local model hash  {model_hash}");
    if let Some(h) = miner.hotkey() {
        if let Some(secure) = miner.profile.rules().secure_hash(&model_hash, h) {
            println!("local secure hash {secure} (hotkey {h})");
        }
    }
    println!(
        "(validators hash the files they download at the Hub commit; the publisher recomputes it there)"
    );
    if limits.is_none() && miner.profile.is_llm() {
        println!(
            "note: competition {competition} has no known limits; only the structure was checked"
        );
    }
    Ok(())
}

async fn jobs(bus: &BusSpec, json: bool) -> Result<()> {
    let conn = connect(bus).await?;
    let publisher = PublisherProxy::new(&conn)
        .await
        .map_err(|e| call_error(Part::Publisher, e))?;
    let jobs = publisher
        .jobs()
        .await
        .map_err(|e| call_error(Part::Publisher, e))?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&jobs).unwrap_or_default()
        );
        return Ok(());
    }
    for j in jobs {
        let detail = if !j.error.is_empty() {
            j.error.clone()
        } else if j.block > 0 {
            format!("block {} {}", j.block, j.commitment)
        } else {
            j.commitment.clone()
        };
        println!("{}  {:<10}  {}  {}", j.id, j.state, j.source, detail);
    }
    Ok(())
}

async fn commitment(
    bus: &BusSpec,
    hotkey: Option<&str>,
    uid: Option<u16>,
    json: bool,
) -> Result<()> {
    let conn = connect(bus).await?;
    let committer = CommitterProxy::new(&conn)
        .await
        .map_err(|e| call_error(Part::Committer, e))?;
    let hotkey = match (hotkey, uid) {
        (Some(h), _) => {
            ss58::decode(h).map_err(|e| CtlError::Usage(format!("HOTKEY: {e}")))?;
            h.to_string()
        }
        (None, Some(uid)) => committer
            .metagraph()
            .await
            .map_err(|e| call_error(Part::Committer, e))?
            .into_iter()
            .find(|n| n.uid == uid)
            .map(|n| n.hotkey)
            .ok_or_else(|| CtlError::Refused(format!("no uid {uid} on this subnet")))?,
        (None, None) => return Err(CtlError::Usage("give a HOTKEY or --uid N".into())),
    };
    let hotkey = hotkey.as_str();
    let value = committer
        .commitment(hotkey)
        .await
        .map_err(|e| call_error(Part::Committer, e))?;
    if json {
        println!(
            "{}",
            serde_json::json!({ "hotkey": hotkey, "commitment": value })
        );
    } else if value.is_empty() {
        println!("(no commitment)");
    } else {
        println!("{value}");
    }
    Ok(())
}

async fn metagraph(bus: &BusSpec, json: bool) -> Result<()> {
    let conn = connect(bus).await?;
    let committer = CommitterProxy::new(&conn)
        .await
        .map_err(|e| call_error(Part::Committer, e))?;
    let neurons = committer
        .metagraph()
        .await
        .map_err(|e| call_error(Part::Committer, e))?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&neurons).unwrap_or_default()
        );
        return Ok(());
    }
    println!(
        "{:>5}  {:<48}  {:>20}  {:<6}  {:>9}  axon",
        "uid", "hotkey", "stake (rao)", "permit", "incentive"
    );
    for n in neurons {
        println!(
            "{:>5}  {:<48}  {:>20}  {:<6}  {:>9.6}  {}",
            n.uid,
            n.hotkey,
            n.stake,
            if n.validator_permit { "yes" } else { "no" },
            n.incentive,
            n.axon
        );
    }
    Ok(())
}

async fn commitments(bus: &BusSpec, json: bool) -> Result<()> {
    let conn = connect(bus).await?;
    let committer = CommitterProxy::new(&conn)
        .await
        .map_err(|e| call_error(Part::Committer, e))?;
    let list = committer
        .commitments()
        .await
        .map_err(|e| call_error(Part::Committer, e))?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&list).unwrap_or_default()
        );
        return Ok(());
    }
    for c in list {
        println!(
            "{:>6}  {}  netuid {}  {}  {}",
            c.block, c.job_id, c.netuid, c.hotkey, c.commitment
        );
    }
    Ok(())
}

async fn train(bus: &BusSpec, action: TrainAction) -> Result<()> {
    let conn = connect(bus).await?;
    let err = |e| call_error(Part::Trainer, e);
    let trainer = TrainerProxy::builder(&conn)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .map_err(err)?;
    match action {
        TrainAction::Start => {
            trainer.start().await.map_err(err)?;
            println!("training started");
        }
        TrainAction::Pause => {
            trainer.pause().await.map_err(err)?;
            println!("pausing after the current step");
        }
        TrainAction::Status { json } => {
            let s = trainer.status().await.map_err(err)?;
            if json {
                // JSON has no NaN: a loss not measured yet is null.
                let mut v = serde_json::to_value(&s).unwrap_or_default();
                if let Some(obj) = v.as_object_mut() {
                    for (k, x) in [
                        ("loss", s.loss),
                        ("eval_loss", s.eval_loss),
                        ("best_loss", s.best_loss),
                    ] {
                        if !x.is_finite() {
                            obj.insert(k.into(), serde_json::Value::Null);
                        }
                    }
                }
                println!("{v}");
            } else {
                let f = |x: f64| {
                    if x.is_finite() {
                        format!("{x:.4}")
                    } else {
                        "-".into()
                    }
                };
                println!("state       {}", s.state);
                println!("step        {} (epoch {})", s.step, s.epoch);
                println!(
                    "loss        {} (eval {}, best {})",
                    f(s.loss),
                    f(s.eval_loss),
                    f(s.best_loss)
                );
                println!("speed       {:.0} tokens/s", s.tokens_per_second);
                if s.eta_seconds >= 0.0 {
                    println!("eta         {:.0} s", s.eta_seconds);
                } else {
                    println!("eta         - (no end set: trainer.max_steps / trainer.num_epochs)");
                }
                println!("parameters  {}", s.parameters);
                println!("candidates  {}", s.candidates);
                if !s.last_error.is_empty() {
                    println!("error       {}", s.last_error);
                }
            }
        }
    }
    Ok(())
}

async fn plot_loss(bus: &BusSpec, out: &std::path::Path) -> Result<()> {
    let conn = connect(bus).await?;
    let err = |e| call_error(Part::Trainer, e);
    let t = TrainerProxy::new(&conn).await.map_err(err)?;
    let (train, eval) = t.history().await.map_err(err)?;
    // The loss is what was asked for: a trainer that cannot give its speed (one older than
    // `Throughput`, or a bus policy that predates it) still gets its loss plotted, and is told.
    let speed = match t.throughput().await {
        Ok(speed) => speed,
        Err(e) if bus::is_service_unknown(&e) => return Err(err(e)),
        Err(e) => {
            eprintln!("minerctl: no tokens/s panel: {}", bus::error_message(&e));
            Vec::new()
        }
    };
    let points = |v: &[(u64, f64)]| -> Vec<crate::plot::Point> {
        v.iter()
            .map(|&(step, loss)| crate::plot::Point { step, loss })
            .collect()
    };
    crate::plot::write_png(out, &points(&train), &points(&eval), &speed)
        .map_err(CtlError::Usage)?;
    println!(
        "{}: {} training and {} evaluation points, {} tokens/s points",
        out.display(),
        train.len(),
        eval.len(),
        speed.len()
    );
    Ok(())
}

async fn feedback(bus: &BusSpec, limit: usize, json: bool) -> Result<()> {
    let conn = connect(bus).await?;
    let err = |e| call_error(Part::Predictor, e);
    let p = PredictorProxy::new(&conn).await.map_err(err)?;
    let text = p.feedback().await.map_err(err)?;
    let all: Vec<serde_json::Value> = serde_json::from_str(&text)
        .map_err(|e| CtlError::Internal(format!("the predictor's feedback is not JSON: {e}")))?;
    let shown: Vec<&serde_json::Value> = all.iter().take(limit).collect();
    if json {
        println!(
            "{}",
            serde_json::Value::Array(shown.into_iter().cloned().collect())
        );
        return Ok(());
    }
    if shown.is_empty() {
        println!("no feedback yet: validators send it after each competition's benchmarks");
        return Ok(());
    }
    println!(
        "{:<20} {:<14} {:<24} {:<44} BEST",
        "RECEIVED (UTC)", "VALIDATOR", "COMPETITION", "OUR RESULTS"
    );
    for f in shown {
        let received = f["received"].as_u64().unwrap_or(0);
        let c = taominer_core::daemon::store::Civil::utc(std::time::Duration::from_secs(received));
        let when = format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            c.year, c.month, c.day, c.hour, c.minute, c.second
        );
        let competition = f["competition"].as_str().unwrap_or("-");
        let best = match &f["best_models"] {
            serde_json::Value::Object(m) => m
                .get(competition)
                .map(|v| clip(&v.to_string(), 40))
                .unwrap_or_else(|| format!("{} competitions", m.len())),
            serde_json::Value::Null => "-".into(),
            other => clip(&other.to_string(), 40),
        };
        println!(
            "{when:<20} {:<14} {competition:<24} {:<44} {best}",
            clip(f["validator"].as_str().unwrap_or("-"), 14),
            clip(&metrics_summary(&f["data"]), 44),
        );
    }
    if all.len() > limit {
        println!("({} more; --limit N or --json)", all.len() - limit);
    }
    Ok(())
}

/// `PESQ 2.31, ESTOI 0.82`: each metric's average (or value) from a feedback's results, which
/// validators nest as `{data: {METRIC: {average, …}}}`.
fn metrics_summary(data: &serde_json::Value) -> String {
    let metrics = match data.get("data") {
        Some(inner @ serde_json::Value::Object(_)) => inner,
        _ => data,
    };
    let Some(map) = metrics.as_object() else {
        return if data.is_null() {
            "(none: the model was not benchmarked)".into()
        } else {
            data.to_string()
        };
    };
    let mut parts = Vec::new();
    for (k, v) in map {
        let value = v.get("average").unwrap_or(v);
        match value.as_f64() {
            Some(x) => parts.push(format!("{k} {x:.3}")),
            None if !v.is_object() && !v.is_array() => parts.push(format!("{k} {v}")),
            None => {}
        }
    }
    if parts.is_empty() {
        data.to_string()
    } else {
        parts.join(", ")
    }
}

/// At most `n` characters, with `…` when cut.
fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

async fn predictor(bus: &BusSpec, action: PredictorAction) -> Result<()> {
    let conn = connect(bus).await?;
    let err = |e| call_error(Part::Predictor, e);
    let p = PredictorProxy::builder(&conn)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .map_err(err)?;
    match action {
        PredictorAction::Reload => {
            p.reload().await.map_err(err)?;
            let s = p.status().await.map_err(err)?;
            println!("serving {} (version {})", s.model_path, s.model_version);
        }
        PredictorAction::Status { json } => {
            let s = p.status().await.map_err(err)?;
            if json {
                let v = serde_json::json!({
                    "state": s.state,
                    "model_path": s.model_path,
                    "model_version": s.model_version,
                    "served": s.served,
                    "rejected": s.rejected,
                    "turned_away": s.turned_away,
                    "queued": s.queued,
                    "last_reload_error": s.last_reload_error,
                });
                println!("{v}");
            } else {
                println!("{}", s.line);
                println!("{:<18}{}", "model_version", s.model_version);
                println!("{:<18}{}", "served", s.served);
                println!("{:<18}{}", "rejected", s.rejected);
                println!("{:<18}{}", "turned_away", s.turned_away);
                println!("{:<18}{}", "queued", s.queued);
                if !s.last_reload_error.is_empty() {
                    println!("last_reload_error {}", s.last_reload_error);
                }
            }
        }
    }
    Ok(())
}
