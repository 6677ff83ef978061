//! The D-Bus contract between the daemons and `minerctl` (design §3), defined once.
//!
//! Each daemon owns `org.taominer.<Part>1` and serves `/org/taominer/<Part>1` with the interface of
//! the same name. The proxies below are what every client (other daemons, `minerctl`, tests) uses;
//! the daemons implement the matching `#[interface]` in their own `interface.rs`, and the
//! round-trip tests in `tests/` keep the two in step.
//!
//! Errors cross the bus as `org.taominer.Error.*` names ([`BusError`]), so a client can tell "not
//! built yet" from "bad input" from "failed" without parsing messages.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use zbus::Type;

/// One of the four daemons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Part {
    Trainer,
    Predictor,
    Publisher,
    Committer,
}

impl Part {
    /// All daemons, in pipeline order.
    pub const ALL: [Part; 4] = [
        Part::Trainer,
        Part::Publisher,
        Part::Committer,
        Part::Predictor,
    ];

    /// Lower-case name: `publisher`.
    pub fn as_str(self) -> &'static str {
        match self {
            Part::Trainer => "trainer",
            Part::Predictor => "predictor",
            Part::Publisher => "publisher",
            Part::Committer => "committer",
        }
    }

    /// The well-known bus name, e.g. `org.taominer.Publisher1`.
    pub fn bus_name(self) -> &'static str {
        match self {
            Part::Trainer => TRAINER_NAME,
            Part::Predictor => PREDICTOR_NAME,
            Part::Publisher => PUBLISHER_NAME,
            Part::Committer => COMMITTER_NAME,
        }
    }

    /// The object path, e.g. `/org/taominer/Publisher1`.
    pub fn object_path(self) -> &'static str {
        match self {
            Part::Trainer => TRAINER_PATH,
            Part::Predictor => PREDICTOR_PATH,
            Part::Publisher => PUBLISHER_PATH,
            Part::Committer => COMMITTER_PATH,
        }
    }

    /// The binary and systemd unit name, e.g. `miner-publisher`.
    pub fn unit(self) -> &'static str {
        match self {
            Part::Trainer => "miner-trainer",
            Part::Predictor => "miner-predictor",
            Part::Publisher => "miner-publisher",
            Part::Committer => "miner-committer",
        }
    }
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

pub const TRAINER_NAME: &str = "org.taominer.Trainer1";
pub const TRAINER_PATH: &str = "/org/taominer/Trainer1";
pub const PREDICTOR_NAME: &str = "org.taominer.Predictor1";
pub const PREDICTOR_PATH: &str = "/org/taominer/Predictor1";
pub const PUBLISHER_NAME: &str = "org.taominer.Publisher1";
pub const PUBLISHER_PATH: &str = "/org/taominer/Publisher1";
pub const COMMITTER_NAME: &str = "org.taominer.Committer1";
pub const COMMITTER_PATH: &str = "/org/taominer/Committer1";

/// Which bus to connect to: `system`, `session`, or a D-Bus address such as
/// `unix:path=/run/taominer/bus`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusSpec {
    System,
    Session,
    Address(String),
}

impl FromStr for BusSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "system" => Ok(BusSpec::System),
            "session" => Ok(BusSpec::Session),
            a if a.contains(':') => Ok(BusSpec::Address(a.to_string())),
            other => Err(format!(
                "{other:?} is not a bus: use system, session or a D-Bus address like unix:path=/run/bus"
            )),
        }
    }
}

impl fmt::Display for BusSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BusSpec::System => f.write_str("the system bus"),
            BusSpec::Session => f.write_str("the session bus"),
            BusSpec::Address(a) => write!(f, "the bus at {a}"),
        }
    }
}

impl BusSpec {
    /// A connection builder for this bus.
    pub fn builder(&self) -> zbus::connection::Builder<'static> {
        match self {
            BusSpec::System => zbus::connection::Builder::system(),
            BusSpec::Session => zbus::connection::Builder::session(),
            BusSpec::Address(a) => zbus::connection::Builder::address(a.as_str()),
        }
    }

    /// Connects as a plain client (no well-known name).
    pub async fn connect(&self) -> zbus::Result<zbus::Connection> {
        self.builder().build().await
    }
}

/// Errors a daemon returns over D-Bus, named `org.taominer.Error.<Variant>`.
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.taominer.Error")]
pub enum BusError {
    /// A transport-level error.
    #[zbus(error)]
    ZBus(zbus::Error),
    /// The method belongs to a part that is not built yet; never a fake success.
    NotImplemented(String),
    /// The caller's input was refused; nothing was changed.
    InvalidInput(String),
    /// No such job or object.
    NotFound(String),
    /// The daemon could not do it (disk, state); the message says why.
    Failed(String),
}

/// A publish job as the publisher reports it (`Jobs()`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct PublishJobInfo {
    /// Job id, carried end to end (publish job → commitment).
    pub id: String,
    /// `received`, `staged`, `uploaded`, `hashed`, `handed-off`, `committed`, `rejected` or
    /// `failed`.
    pub state: String,
    /// The directory the job was published from.
    pub source: String,
    pub competition: String,
    pub repo: String,
    /// Hub revision (offline: git tree id of the staged snapshot); empty until staged.
    pub commit: String,
    pub model_hash: String,
    pub secure_hash: String,
    /// The exact string committed to the chain; empty until staged.
    pub commitment: String,
    /// Block of the commitment (offline: ledger sequence); 0 until committed.
    pub block: u64,
    /// Why the job failed or was rejected; `retrying: …` with the last transient error while it
    /// is retried; empty otherwise.
    pub error: String,
    /// Creation time, seconds since the epoch.
    pub created: u64,
    /// While `staged` and uploading: the bytes of the model's large (LFS) files the Hub holds so
    /// far in this attempt (sent, or already there), of `total_bytes`. Both 0 when no upload
    /// runs (not kept across a publisher restart; a retry counts from 0 again).
    pub uploaded_bytes: u64,
    pub total_bytes: u64,
}

/// One commitment as recorded by the committer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct CommitmentRecord {
    /// Block it was included in (offline: the ledger's own sequence number, from 1).
    pub block: u64,
    pub job_id: String,
    pub netuid: u16,
    pub hotkey: String,
    /// The committed string, exactly as written.
    pub commitment: String,
    /// The `Data` variant it is written as, e.g. `Raw106`.
    pub data_type: String,
    /// Time recorded, seconds since the epoch.
    pub time: u64,
}

/// One neuron of the subnet, as `Metagraph()` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Type)]
pub struct NeuronInfo {
    pub uid: u16,
    pub hotkey: String,
    pub coldkey: String,
    /// Total stake in the chain's smallest unit (rao).
    pub stake: u64,
    pub validator_permit: bool,
    /// Incentive, 0 to 1.
    pub incentive: f64,
    /// The announced axon, `ip:port` (`[ip]:port` for IPv6), empty if none.
    pub axon: String,
}

/// The answer to `Commit`: where the job stands now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct CommitState {
    /// `queued` or `committed`.
    pub state: String,
    /// Block of the commitment when committed, else 0.
    pub block: u64,
}

#[zbus::proxy(
    interface = "org.taominer.Publisher1",
    default_service = "org.taominer.Publisher1",
    default_path = "/org/taominer/Publisher1"
)]
pub trait Publisher {
    /// Accepts a model directory for publishing; returns the job id once the job is durable.
    /// `competition` empty means the configured default.
    async fn publish(&self, path: &str, competition: &str) -> zbus::Result<String>;
    /// Every job, oldest first.
    async fn jobs(&self) -> zbus::Result<Vec<PublishJobInfo>>;
    /// One line for `minerctl status`.
    async fn status(&self) -> zbus::Result<String>;
    /// Makes a Hub repository public.
    async fn make_public(&self, repo: &str) -> zbus::Result<()>;
    #[zbus(property)]
    fn state(&self) -> zbus::Result<String>;
    #[zbus(signal)]
    fn published(
        &self,
        job_id: &str,
        repo: &str,
        commit: &str,
        model_hash: &str,
        secure_hash: &str,
    ) -> zbus::Result<()>;
}

#[zbus::proxy(
    interface = "org.taominer.Committer1",
    default_service = "org.taominer.Committer1",
    default_path = "/org/taominer/Committer1"
)]
pub trait Committer {
    /// Queues `commitment` for job `job_id`. Idempotent: a known job id returns its state and
    /// never queues a second write.
    async fn commit(&self, job_id: &str, commitment: &str) -> zbus::Result<CommitState>;
    /// The commitments written, oldest first.
    async fn commitments(&self) -> zbus::Result<Vec<CommitmentRecord>>;
    /// The current commitment of a hotkey on this subnet (empty if none).
    async fn commitment(&self, hotkey: &str) -> zbus::Result<String>;
    /// The subnet's neurons (cached for a few blocks).
    async fn metagraph(&self) -> zbus::Result<Vec<NeuronInfo>>;
    /// Announces the axon's address on chain.
    async fn serve_axon(&self, ip: &str, port: u16) -> zbus::Result<()>;
    /// One line for `minerctl status`.
    async fn status(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn state(&self) -> zbus::Result<String>;
    #[zbus(signal)]
    fn committed(&self, job_id: &str, block: u64) -> zbus::Result<()>;
}

#[zbus::proxy(
    interface = "org.taominer.Trainer1",
    default_service = "org.taominer.Trainer1",
    default_path = "/org/taominer/Trainer1"
)]
pub trait Trainer {
    async fn start(&self) -> zbus::Result<()>;
    async fn pause(&self) -> zbus::Result<()>;
    /// (train, eval) loss histories: (step, loss) pairs, oldest first.
    #[allow(clippy::type_complexity)]
    async fn history(&self) -> zbus::Result<(Vec<(u64, f64)>, Vec<(u64, f64)>)>;
    /// The training speed: (step, tokens/s) pairs, oldest first, bounded.
    async fn throughput(&self) -> zbus::Result<Vec<(u64, f64)>>;
    async fn status(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn step(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn loss(&self) -> zbus::Result<f64>;
    #[zbus(property)]
    fn best_loss(&self) -> zbus::Result<f64>;
    #[zbus(property)]
    fn tokens_per_second(&self) -> zbus::Result<f64>;
    #[zbus(property)]
    fn epoch(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn eval_loss(&self) -> zbus::Result<f64>;
    /// Seconds left; -1 when the run has no end.
    #[zbus(property)]
    fn eta(&self) -> zbus::Result<f64>;
    #[zbus(property)]
    fn parameters(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn candidates(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn last_error(&self) -> zbus::Result<String>;
    #[zbus(signal)]
    fn candidate_ready(&self, path: &str, avg_loss: f64, competition: &str) -> zbus::Result<()>;
}

#[zbus::proxy(
    interface = "org.taominer.Predictor1",
    default_service = "org.taominer.Predictor1",
    default_path = "/org/taominer/Predictor1"
)]
pub trait Predictor {
    async fn reload(&self) -> zbus::Result<()>;
    async fn status(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn model_path(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn model_version(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn served(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn rejected(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn last_reload_error(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn queued(&self) -> zbus::Result<u64>;
    async fn feedback(&self) -> zbus::Result<String>;
    #[zbus(signal)]
    fn model_swapped(&self, path: &str) -> zbus::Result<()>;
    #[zbus(signal)]
    fn feedback_received(&self, competition: &str, validator: &str) -> zbus::Result<()>;
}

/// Whether an error from a call means "nobody owns that name" (the daemon is down).
pub fn is_service_unknown(err: &zbus::Error) -> bool {
    match err {
        zbus::Error::MethodError(name, _, _) => matches!(
            name.as_str(),
            "org.freedesktop.DBus.Error.ServiceUnknown"
                | "org.freedesktop.DBus.Error.NameHasNoOwner"
        ),
        zbus::Error::FDO(e) => matches!(
            **e,
            zbus::fdo::Error::ServiceUnknown(_) | zbus::fdo::Error::NameHasNoOwner(_)
        ),
        _ => false,
    }
}

/// The message of an `org.taominer.Error.*` (or any method error), without the D-Bus name.
pub fn error_message(err: &zbus::Error) -> String {
    match err {
        zbus::Error::MethodError(_, Some(msg), _) => msg.clone(),
        other => other.to_string(),
    }
}

/// The D-Bus error name of a method error, if it is one.
pub fn error_name(err: &zbus::Error) -> Option<String> {
    match err {
        zbus::Error::MethodError(name, _, _) => Some(name.to_string()),
        _ => None,
    }
}
