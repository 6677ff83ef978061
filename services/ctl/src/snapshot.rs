//! One reading of every daemon's figures over D-Bus, for `minerctl top` and `minerctl metrics`.
//!
//! Both views show the same numbers, so they are gathered in one place; a daemon that is down is
//! a row that says so, never an error that hides the others.

use taominer_core::bus::{
    self, CommitterProxy, JobState, Part, PredictorProxy, PublisherProxy, TrainerProxy, WorkState,
};

/// The trainer's figures: its `Status()` reply as it is.
pub type Trainer = bus::TrainerStatus;

/// The publisher's jobs, counted by state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Publisher {
    pub state: WorkState,
    pub jobs: Vec<(JobState, u64)>,
    pub in_flight: u64,
    pub last: Option<bus::PublishJobInfo>,
}

/// The committer's last commitment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Committer {
    pub state: WorkState,
    pub commitments: u64,
    pub last: Option<bus::CommitmentRecord>,
}

/// The axon's figures: the predictor's `Status()` reply as it is.
pub type Predictor = bus::PredictorStatus;

/// Each daemon's figures, `None` when it is not on the bus.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub trainer: Option<Trainer>,
    pub publisher: Option<Publisher>,
    pub committer: Option<Committer>,
    pub predictor: Option<Predictor>,
}

impl Snapshot {
    /// Reads every daemon once.
    pub async fn read(conn: &zbus::Connection) -> Snapshot {
        Snapshot {
            trainer: up(Part::Trainer, trainer(conn).await),
            publisher: up(Part::Publisher, publisher(conn).await),
            committer: up(Part::Committer, committer(conn).await),
            predictor: up(Part::Predictor, predictor(conn).await),
        }
    }
}

/// A daemon that does not answer is shown as down; why goes to the debug log.
fn up<T>(part: Part, r: zbus::Result<T>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::debug!("{part}: {}", bus::error_message(&e));
            None
        }
    }
}

async fn trainer(conn: &zbus::Connection) -> zbus::Result<Trainer> {
    TrainerProxy::new(conn).await?.status().await
}

async fn publisher(conn: &zbus::Connection) -> zbus::Result<Publisher> {
    let p = PublisherProxy::builder(conn)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await?;
    let state = p.state().await?;
    let all = p.jobs().await?;
    let mut jobs: Vec<(JobState, u64)> = Vec::new();
    for j in &all {
        match jobs.iter_mut().find(|(s, _)| *s == j.state) {
            Some((_, n)) => *n += 1,
            None => jobs.push((j.state, 1)),
        }
    }
    Ok(Publisher {
        state,
        in_flight: all.iter().filter(|j| j.state.is_pending()).count() as u64,
        jobs,
        last: all.into_iter().next_back(),
    })
}

async fn committer(conn: &zbus::Connection) -> zbus::Result<Committer> {
    let c = CommitterProxy::builder(conn)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await?;
    let state = c.state().await?;
    let records = c.commitments().await?;
    Ok(Committer {
        state,
        commitments: records.len() as u64,
        last: records.into_iter().max_by_key(|r| r.block),
    })
}

async fn predictor(conn: &zbus::Connection) -> zbus::Result<Predictor> {
    PredictorProxy::new(conn).await?.status().await
}
