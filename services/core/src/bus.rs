//! The D-Bus contract between the daemons and `minerctl` (docs/architecture.md §3), defined once.
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

/// Declares a state enum that travels on the bus (and in JSON) as its lower-case name, so the
/// D-Bus contract stays readable in `busctl` while every Rust side matches on variants. One
/// declaration gives the wire name, `Display`, `FromStr` (naming the allowed values) and `ALL`;
/// the variant marked `#[default]` is what a daemon that has said nothing yet is taken to be.
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $wire:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, Type)]
        #[zbus(signature = "s")]
        pub enum $name {
            $( $(#[$vmeta])* #[serde(rename = $wire)] $variant, )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The name on the wire, e.g. `handed-off`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $wire, )+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                $name::ALL.iter().copied().find(|v| v.as_str() == s).ok_or_else(|| {
                    let allowed: Vec<&str> = $name::ALL.iter().map(|v| v.as_str()).collect();
                    format!("{s:?} is not one of {}", allowed.join(", "))
                })
            }
        }
    };
}

wire_enum! {
    /// Where the trainer's run stands (`State` property).
    pub enum TrainerState {
        /// Nothing to train: the configuration names no run (the status's last error says why).
        #[default]
        Idle = "idle",
        /// Preparing: device, tokenizer, data, model, resume.
        Starting = "starting",
        Training = "training",
        /// A pause was asked for; the current step finishes and is checkpointed first.
        Pausing = "pausing",
        Paused = "paused",
        /// `max_steps` or `num_epochs` reached; a restart with a higher limit goes on.
        Finished = "finished",
        /// Stopped by an error (the status's last error); a restart resumes from the last checkpoint.
        Failed = "failed",
    }
}

impl TrainerState {
    /// Whether the run has ended and `Start`/`Pause` cannot change that.
    pub fn is_over(self) -> bool {
        matches!(
            self,
            TrainerState::Idle | TrainerState::Finished | TrainerState::Failed
        )
    }
}

wire_enum! {
    /// Where a publish job stands: `received → staged → uploaded → hashed → handed-off →
    /// committed` (offline: `received → hashed → …`), or it ends `rejected` or `failed`.
    pub enum JobState {
        /// Accepted and durable; not yet copied.
        #[default]
        Received = "received",
        /// Copied into the state directory, passed the pre-flight, file digests known (online).
        Staged = "staged",
        /// The Hub has the commit; not yet re-downloaded and hashed.
        Uploaded = "uploaded",
        /// Hashed as validators will (online: from the committed revision, re-downloaded);
        /// the commitment is known and `Published` emitted.
        Hashed = "hashed",
        /// The committer has durably queued its commitment.
        HandedOff = "handed-off",
        /// The commitment is written.
        Committed = "committed",
        /// The competition pre-flight refused the model; nothing was uploaded.
        Rejected = "rejected",
        /// Could not be published (token rejected, the Hub refused, disk); `error` says why.
        Failed = "failed",
    }
}

impl JobState {
    /// Whether the pipeline still owes this job work.
    pub fn is_pending(self) -> bool {
        matches!(
            self,
            JobState::Received
                | JobState::Staged
                | JobState::Uploaded
                | JobState::Hashed
                | JobState::HandedOff
        )
    }

    /// Whether the job ended without a commitment.
    pub fn is_refused(self) -> bool {
        matches!(self, JobState::Rejected | JobState::Failed)
    }

    /// Whether the publisher holds its own copy of the model (staged or later): from here on
    /// the source directory may go.
    pub fn has_copy(self) -> bool {
        !matches!(
            self,
            JobState::Received | JobState::Rejected | JobState::Failed
        )
    }
}

wire_enum! {
    /// Where a commit job stands (`Commit()`'s answer).
    pub enum CommitJobState {
        /// Durably queued: it will be written even if the committer dies now.
        #[default]
        Queued = "queued",
        Committed = "committed",
        /// The chain refused it for good (the committer's journal says why); nothing is written.
        Failed = "failed",
    }
}

wire_enum! {
    /// The publisher's and the committer's `State`: whether any job is still owed work.
    pub enum WorkState {
        #[default]
        Idle = "idle",
        Working = "working",
    }
}

wire_enum! {
    /// The predictor's `State` (and `/healthz`'s `state`).
    pub enum PredictorState {
        /// Nothing configured to serve (image profiles: no `predictor.model_path`; SoundsRight:
        /// no competition's model committed yet).
        #[default]
        Idle = "idle",
        /// A model is loaded and the axon answers.
        Serving = "serving",
        /// A model is configured but none could be loaded yet (the status's last reload error says why).
        NoModel = "no-model",
    }
}

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

/// Errors a daemon returns over D-Bus, named `org.taominer.Error.<Variant>`. Each says what a
/// caller should do next (see [`ErrorKind`]): fix its input, try again later, or read the
/// daemon's journal.
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.taominer.Error")]
pub enum BusError {
    /// A transport-level error.
    #[zbus(error)]
    ZBus(zbus::Error),
    /// The caller's input was refused, for good; nothing was changed.
    InvalidInput(String),
    /// The request is fine but cannot be served now (no model loaded, no chain connection yet,
    /// a full queue); the same call may succeed later. Nothing was changed.
    Unavailable(String),
    /// The daemon failed doing it (disk, an internal fault); the message says what, the
    /// journal says more.
    Failed(String),
}

/// What a client does with a failed call: the one place that reads `org.taominer.Error.*` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// `InvalidInput`: the request will not succeed as it is.
    Refused,
    /// The daemon is not running, or said `Unavailable`: try again later.
    Unavailable,
    /// `Failed`, or the bus itself failed.
    Internal,
}

/// Classifies a call error (see [`ErrorKind`]).
pub fn error_kind(err: &zbus::Error) -> ErrorKind {
    if is_service_unknown(err) {
        return ErrorKind::Unavailable;
    }
    match error_name(err).as_deref() {
        Some("org.taominer.Error.InvalidInput") => ErrorKind::Refused,
        Some("org.taominer.Error.Unavailable") => ErrorKind::Unavailable,
        _ => ErrorKind::Internal,
    }
}

/// A publish job as the publisher reports it (`Jobs()`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct PublishJobInfo {
    /// Job id, carried end to end (publish job → commitment).
    pub id: String,
    pub state: JobState,
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

/// The model this miner's commitment names now: the newest publish job the committer reports
/// written (`Publisher1.LiveModel`, and `ModelWentLive` when it changes). The SoundsRight
/// axon answers with these ids, which validators compare with the commitment. All fields empty
/// (and `block` 0) while no job of this publisher is committed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct LiveModel {
    pub job_id: String,
    pub competition: String,
    /// `namespace/name` on the Hub.
    pub repo: String,
    /// The Hub revision committed (offline: the staged snapshot's tree id).
    pub commit: String,
    /// The exact string on chain.
    pub commitment: String,
    /// Block of the commitment (offline: ledger sequence).
    pub block: u64,
}

impl LiveModel {
    /// Whether a model is live at all.
    pub fn is_some(&self) -> bool {
        !self.job_id.is_empty()
    }
}

/// The trainer's figures in one reply (`Trainer1.Status()`): one call gives a client a
/// consistent reading instead of eleven property reads taken at different steps.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, Type)]
pub struct TrainerStatus {
    pub state: TrainerState,
    /// The one-line summary `minerctl status` and `STATUS=` show, e.g.
    /// `step 1200 loss 3.410 8.1k tok/s best 3.380 eta 1h05m`.
    pub line: String,
    pub step: u64,
    pub epoch: u64,
    /// The last step's training loss (NaN before the first step).
    pub loss: f64,
    /// The last evaluation's loss (NaN before the first).
    pub eval_loss: f64,
    /// The best eval loss of the run (NaN before the first evaluation).
    pub best_loss: f64,
    pub tokens_per_second: f64,
    /// Seconds until the run ends; -1 when it has no end.
    pub eta_seconds: f64,
    pub parameters: u64,
    /// Candidates recorded in this run.
    pub candidates: u64,
    /// Why the run failed (or, `idle`, what to configure); empty otherwise.
    pub last_error: String,
}

/// The predictor's figures in one reply (`Predictor1.Status()`): one call, one consistent
/// reading, instead of a property read per figure.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct PredictorStatus {
    pub state: PredictorState,
    /// The one-line summary `minerctl status` and `STATUS=` show.
    pub line: String,
    /// The serving model file; empty when none is loaded.
    pub model_path: String,
    /// First 16 hex digits of the serving model file's sha256; empty when none is loaded.
    pub model_version: String,
    pub served: u64,
    pub rejected: u64,
    /// Connections closed as soon as they were accepted: over the axon's total or per-address
    /// cap (a flood, or more validators than the limits were sized for).
    pub turned_away: u64,
    /// Why the last load was refused; empty after a good one.
    pub last_reload_error: String,
    /// Requests waiting for the model now.
    pub queued: u64,
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
    pub state: CommitJobState,
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
    /// `competition` empty means the configured default. A non-empty `key` (the trainer's
    /// checkpoint key) makes the call idempotent for its caller: the same key again returns the
    /// same job and never queues a second; empty means no idempotence.
    async fn publish(&self, path: &str, competition: &str, key: &str) -> zbus::Result<String>;
    /// Every job, oldest first.
    async fn jobs(&self) -> zbus::Result<Vec<PublishJobInfo>>;
    /// One line for `minerctl status`.
    async fn status(&self) -> zbus::Result<String>;
    /// Makes a Hub repository public.
    async fn make_public(&self, repo: &str) -> zbus::Result<()>;
    #[zbus(property)]
    fn state(&self) -> zbus::Result<WorkState>;
    /// The committed model (see [`LiveModel`]).
    #[zbus(property)]
    fn live_model(&self) -> zbus::Result<LiveModel>;
    /// The live model changed (a newer job was committed).
    #[zbus(signal)]
    fn model_went_live(&self, model: LiveModel) -> zbus::Result<()>;
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
    fn state(&self) -> zbus::Result<WorkState>;
    /// A commitment is written: the job, the exact string, and its block (offline: sequence).
    #[zbus(signal)]
    fn committed(&self, job_id: &str, commitment: &str, block: u64) -> zbus::Result<()>;
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
    /// Every figure at once (see [`TrainerStatus`]).
    async fn status(&self) -> zbus::Result<TrainerStatus>;
    #[zbus(property)]
    fn state(&self) -> zbus::Result<TrainerState>;
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
    /// Every figure at once (see [`PredictorStatus`]).
    async fn status(&self) -> zbus::Result<PredictorStatus>;
    #[zbus(property)]
    fn state(&self) -> zbus::Result<PredictorState>;
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

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::wire::{serialized::Context, to_bytes, Endian};

    /// Every state travels as a D-Bus string holding its documented name, and reads back as
    /// the same variant: the contract `busctl` users and other clients see.
    #[test]
    fn states_travel_as_their_names() {
        fn check<T>(all: &[T])
        where
            T: Copy + PartialEq + fmt::Debug + fmt::Display + FromStr + Serialize + Type,
            T: for<'de> Deserialize<'de>,
            <T as FromStr>::Err: fmt::Debug,
        {
            assert_eq!(T::SIGNATURE, "s");
            let ctxt = Context::new(Endian::Little, 0);
            for &v in all {
                let name = v.to_string();
                let encoded = to_bytes(ctxt, &v).unwrap();
                let as_string: String = encoded.deserialize().unwrap().0;
                assert_eq!(as_string, name);
                let back: T = encoded.deserialize().unwrap().0;
                assert_eq!(back, v);
                assert_eq!(name.parse::<T>().unwrap(), v);
                assert_eq!(serde_json::to_value(v).unwrap(), serde_json::json!(name));
            }
        }
        check(TrainerState::ALL);
        check(JobState::ALL);
        check(CommitJobState::ALL);
        check(WorkState::ALL);
        check(PredictorState::ALL);
        assert_eq!(JobState::HandedOff.as_str(), "handed-off");
        assert_eq!(PredictorState::NoModel.as_str(), "no-model");
    }

    /// An unknown name is refused with the allowed ones listed, never mapped to a default.
    #[test]
    fn an_unknown_state_is_refused_by_name() {
        let err = "handed_off".parse::<JobState>().unwrap_err();
        assert!(
            err.contains("handed-off") && err.contains("\"handed_off\""),
            "{err}"
        );
        let ctxt = Context::new(Endian::Little, 0);
        let encoded = to_bytes(ctxt, &"sleeping").unwrap();
        assert!(encoded.deserialize::<TrainerState>().is_err());
    }

    /// The states a client acts on: pending jobs still owe work; an over run refuses Start.
    #[test]
    fn state_predicates() {
        let pending: Vec<_> = JobState::ALL.iter().filter(|s| s.is_pending()).collect();
        assert_eq!(pending.len(), 5);
        assert!(!JobState::Committed.is_pending() && JobState::Failed.is_refused());
        assert!(JobState::Staged.has_copy() && !JobState::Received.has_copy());
        let over: Vec<_> = TrainerState::ALL.iter().filter(|s| s.is_over()).collect();
        assert_eq!(
            over,
            [
                &TrainerState::Idle,
                &TrainerState::Finished,
                &TrainerState::Failed
            ]
        );
    }
}
