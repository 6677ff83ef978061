//! What makes a process a well-behaved systemd daemon, shared by all four.
//!
//! * Logging goes to journald with structured fields when stderr is the journal
//!   (`JOURNAL_STREAM`), else to human-readable stderr.
//! * `sd_notify`: `READY=1` only once the bus name is owned (so `systemctl start` returns when the
//!   daemon can really be called), `STATUS=` lines, `WATCHDOG=1` from the working loop, and
//!   `STOPPING=1` on SIGTERM/SIGINT.
//! * Configuration and state-directory problems exit 78 (EX_CONFIG) with one line.
//!
//! A daemon's `main` is then: [`DaemonArgs::start`] → open its state → [`serve`] → its loop, which
//! calls [`Watchdog::tick`] each turn and ends on [`shutdown_signal`].

use std::path::PathBuf;
use std::time::{Duration, Instant};

use sd_notify::NotifyState;
use tracing_subscriber::prelude::*;
use tracing_subscriber::EnvFilter;

use crate::bus::{BusSpec, Part};
use crate::config::{self, Config, Sources, EX_CONFIG};

/// Command-line options every daemon takes.
#[derive(Debug, Clone, clap::Args)]
pub struct DaemonArgs {
    /// The TOML configuration file (e.g. /etc/taominer/miner.toml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Bus to serve on: system, session, or a D-Bus address (unix:path=…).
    #[arg(long, value_name = "BUS", default_value = "system")]
    pub bus: BusSpec,

    /// State directory; defaults to $STATE_DIRECTORY, which systemd sets from StateDirectory=.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Override one configuration key, e.g. --set miner.netuid=9 (repeatable; beats file and env).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

/// What a daemon starts with once its configuration is known to be good.
#[derive(Debug, Clone)]
pub struct Daemon {
    pub part: Part,
    pub config: Config,
    pub bus: BusSpec,
    pub state_dir: PathBuf,
}

impl Daemon {
    /// Takes the exclusive lock on the state directory (held until the returned guard drops).
    pub fn lock_state(&self) -> crate::Result<crate::daemon::store::DirLock> {
        crate::daemon::store::DirLock::acquire(&self.state_dir)
    }

    /// Serves `iface`, owns the part's bus name, then sends `READY=1` with `status`.
    pub async fn serve<I: zbus::object_server::Interface>(
        &self,
        iface: I,
        status: &str,
    ) -> crate::Result<zbus::Connection> {
        let conn =
            serve(&self.bus, self.part, iface)
                .await
                .map_err(|source| crate::Error::Serve {
                    name: self.part.bus_name(),
                    bus: self.bus.to_string(),
                    source,
                })?;
        notify_ready(status);
        tracing::info!(STATE_DIR = %self.state_dir.display(), "{} ready on {}", self.part, self.bus);
        Ok(conn)
    }
}

impl DaemonArgs {
    /// Sets up logging, loads the configuration and finds the state directory. On a configuration
    /// error prints one line and exits 78, which is what systemd and users expect of a daemon.
    pub fn start(self, part: Part) -> Daemon {
        init_logging(part.unit());
        let sources = Sources {
            file: self.config.clone(),
            overrides: self.set.clone(),
            env: true,
        };
        let loaded = Config::load(&sources).and_then(|c| {
            Ok((
                c,
                config::state_dir(self.state_dir.as_deref(), part.as_str())?,
            ))
        });
        match loaded {
            Ok((config, state_dir)) => Daemon {
                part,
                config,
                bus: self.bus,
                state_dir,
            },
            Err(e) => exit_config(&e),
        }
    }
}

/// Prints a configuration error as one line and exits 78.
pub fn exit_config(err: &dyn std::fmt::Display) -> ! {
    // The log may go to the journal; the one line on stderr is what `systemctl status` shows.
    tracing::error!("{err}");
    eprintln!("{}: {err}", program_name());
    std::process::exit(EX_CONFIG)
}

fn program_name() -> String {
    std::env::args()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "taominer".into())
}

/// Installs the tracing subscriber: journald when stderr is the journal, else fmt to stderr.
/// `RUST_LOG` filters (default `info`).
pub fn init_logging(identifier: &str) {
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        match tracing_journald::layer() {
            Ok(layer) => {
                // Fields under their own names (`JOB_ID`, `REPO`, `BLOCK`), not tracing-journald's
                // default `F_JOB_ID`: `journalctl -u miner-publisher JOB_ID=…` finds a job. (PID 1's
                // own messages about the unit use JOB_ID for systemd job numbers; ours are ids
                // like 20261123T142501123Z-3f9a1c02 and never collide.)
                let layer = layer
                    .with_syslog_identifier(identifier.to_string())
                    .with_field_prefix(None);
                let _ = tracing_subscriber::registry()
                    .with(filter())
                    .with(layer)
                    .try_init();
                return;
            }
            Err(e) => eprintln!("{identifier}: journald unavailable ({e}); logging to stderr"),
        }
    }
    let _ = tracing_subscriber::registry()
        .with(filter())
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_target(false),
        )
        .try_init();
}

/// Connects to the bus, serves `iface` at the part's path and owns the part's name.
///
/// The name is requested without replacement or queueing, so a second instance fails here
/// instead of silently waiting in line.
pub async fn serve<I: zbus::object_server::Interface>(
    bus: &BusSpec,
    part: Part,
    iface: I,
) -> zbus::Result<zbus::Connection> {
    bus.builder()
        .serve_at(part.object_path(), iface)
        .name(part.bus_name())
        .allow_name_replacements(false)
        .replace_existing_names(false)
        .build()
        .await
}

/// The last `STATUS=` line sent, so that an unchanged status is not sent again.
static LAST_STATUS: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

/// `READY=1` with a first status line.
pub fn notify_ready(status: &str) {
    *LAST_STATUS.lock().unwrap_or_else(|p| p.into_inner()) = status.to_string();
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// `STATUS=<line>`, when it differs from the last one. Working loops call this every turn;
/// sending only changes keeps the notification socket quiet (a datagram socket whose reader
/// falls behind blocks the sender, and a daemon must never stall on its own status line).
pub fn notify_status(status: &str) {
    {
        let mut last = LAST_STATUS.lock().unwrap_or_else(|p| p.into_inner());
        if *last == status {
            return;
        }
        *last = status.to_string();
    }
    notify(&[NotifyState::Status(status)]);
}

/// `STOPPING=1`.
pub fn notify_stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// Sends one notification datagram without ever blocking. `sd_notify::notify` blocks when the
/// receiver's queue is full (ten datagrams by default on Linux), which a reader that falls behind
/// (a test harness, a stuck manager) would turn into a hung daemon; a dropped STATUS= line is the
/// lesser harm, and systemd itself always drains its socket.
fn notify(states: &[NotifyState<'_>]) {
    use std::fmt::Write as _;
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let mut msg = String::new();
    for s in states {
        let _ = writeln!(msg, "{s}");
    }
    if let Err(e) = send_nonblocking(&path, msg.as_bytes()) {
        tracing::warn!("sd_notify failed: {e}");
    }
}

fn send_nonblocking(path: &std::ffi::OsStr, msg: &[u8]) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let sock = UnixDatagram::unbound()?;
    sock.set_nonblocking(true)?;
    let bytes = path.as_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name)?
        }
        None => SocketAddr::from_pathname(std::path::Path::new(path))?,
    };
    match sock.send_to_addr(msg, &addr) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Err(std::io::Error::other(
            "the notify socket is full; message dropped",
        )),
        Err(e) => Err(e),
    }
}

/// Pets the systemd watchdog from a working loop.
///
/// The loop must wake at least every [`Watchdog::period`] and call [`Watchdog::tick`]; a loop
/// that hangs stops the pings and systemd restarts the daemon. With no `WATCHDOG_USEC` (not under
/// systemd, or `WatchdogSec=` unset) ticking does nothing.
#[derive(Debug)]
pub struct Watchdog {
    interval: Option<Duration>,
    last: Option<Instant>,
}

impl Watchdog {
    /// Reads `WATCHDOG_USEC`/`WATCHDOG_PID` from the environment.
    pub fn from_env() -> Watchdog {
        Watchdog {
            interval: sd_notify::watchdog_enabled(),
            last: None,
        }
    }

    /// How often the loop must wake: half the watchdog interval, or a relaxed default.
    pub fn period(&self) -> Duration {
        self.interval
            .map(|i| i / 2)
            .unwrap_or(Duration::from_secs(5))
            .max(Duration::from_millis(10))
    }

    /// Sends `WATCHDOG=1` if half the interval has passed since the last one.
    pub fn tick(&mut self) {
        let Some(interval) = self.interval else {
            return;
        };
        let due = self.last.is_none_or(|t| t.elapsed() >= interval / 2);
        if due {
            notify(&[NotifyState::Watchdog]);
            self.last = Some(Instant::now());
        }
    }
}

/// Completes on SIGTERM or SIGINT and says which.
pub async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot install SIGTERM handler: {e}");
            return std::future::pending().await;
        }
    };
    let mut int = match signal(SignalKind::interrupt()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot install SIGINT handler: {e}");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

/// Runs a daemon's working loop until it returns (`Some`) or SIGTERM/SIGINT arrives (`None`,
/// after `STOPPING=1`). Dropping the loop mid-step is safe: every step is crash-consistent.
pub async fn until_shutdown<F: std::future::Future>(work: F) -> Option<F::Output> {
    tokio::select! {
        out = work => Some(out),
        sig = shutdown_signal() => {
            notify_stopping();
            tracing::info!("{sig}: stopping");
            None
        }
    }
}

/// The working loop of a daemon that has nothing to do yet: pets the watchdog and keeps
/// `STATUS=` current, until shutdown.
pub async fn idle_loop(status: impl Fn() -> String) {
    let mut watchdog = Watchdog::from_env();
    loop {
        watchdog.tick();
        notify_status(&status());
        tokio::time::sleep(watchdog.period()).await;
    }
}
