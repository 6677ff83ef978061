//! The worker's outside world behind three small traits, so its transitions and retry rules can be
//! unit-tested against fakes on tokio's paused clock, in milliseconds, instead of only against a
//! dev chain and a bus in another process.
//!
//! * [`CommitSink`]: the chain as the worker writes to it (block number, `CommitmentOf`,
//!   `set_commitment`, tempo), and nothing more; [`Chain`] is the real one.
//! * [`Connector`]: how the worker gets a sink (one attempt; the worker owns the timeout and the
//!   backoff) and hands it to the D-Bus interface; [`Node`] connects to `miner.chain_endpoint`.
//! * [`Announce`]: where `Committed` goes; the real one is the bus's [`SignalEmitter`].

use std::future::Future;
use std::sync::Arc;

use taominer_core::wallet::Hotkey;
use zbus::object_server::SignalEmitter;

use crate::chain::{Chain, ChainError, OnChain};
use crate::interface::CommitterService;
use crate::jobs::Shared;

/// The chain as the worker writes commitments to it. Errors keep [`ChainError`]'s sorting, which
/// is what the worker's retry rules decide on.
pub trait CommitSink: Send + Sync {
    /// The newest block number.
    fn block_number(&self) -> impl Future<Output = Result<u64, ChainError>> + Send;

    /// `Commitments.CommitmentOf(netuid, account)`, if any.
    fn commitment_of(
        &self,
        netuid: u16,
        account: [u8; 32],
    ) -> impl Future<Output = Result<Option<OnChain>, ChainError>> + Send;

    /// Writes a commitment signed by `hotkey`; the finalized block it is in.
    fn set_commitment(
        &self,
        netuid: u16,
        data: &[u8],
        hotkey: &Hotkey,
    ) -> impl Future<Output = Result<u64, ChainError>> + Send;

    /// Blocks per epoch, less one (`SubtensorModule.Tempo`).
    fn tempo(&self, netuid: u16) -> impl Future<Output = Result<u64, ChainError>> + Send;
}

impl CommitSink for Chain {
    // Each forwards to the inherent method of the same name (inherent methods win the lookup).
    fn block_number(&self) -> impl Future<Output = Result<u64, ChainError>> + Send {
        Chain::block_number(self)
    }

    fn commitment_of(
        &self,
        netuid: u16,
        account: [u8; 32],
    ) -> impl Future<Output = Result<Option<OnChain>, ChainError>> + Send {
        Chain::commitment_of(self, netuid, account)
    }

    fn set_commitment(
        &self,
        netuid: u16,
        data: &[u8],
        hotkey: &Hotkey,
    ) -> impl Future<Output = Result<u64, ChainError>> + Send {
        Chain::set_commitment(self, netuid, data, hotkey)
    }

    fn tempo(&self, netuid: u16) -> impl Future<Output = Result<u64, ChainError>> + Send {
        Chain::tempo(self, netuid)
    }
}

/// Where the worker's connections come from.
pub trait Connector {
    type Sink: CommitSink;

    /// Where it connects, for the log.
    fn endpoint(&self) -> &str;

    /// One attempt at a connection; the worker bounds it in time and backs off after a failure.
    fn connect(&self) -> impl Future<Output = Result<Self::Sink, ChainError>> + Send;

    /// Makes the worker's connection (or, with `None`, its loss) visible to the D-Bus interface,
    /// which reads the chain for `Commitment`, `Metagraph` and `ServeAxon`.
    fn share(
        &self,
        shared: &Shared,
        chain: Option<Arc<Self::Sink>>,
    ) -> impl Future<Output = ()> + Send;
}

/// The node at `miner.chain_endpoint`.
pub struct Node {
    pub endpoint: String,
}

impl Connector for Node {
    type Sink = Chain;

    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn connect(&self) -> impl Future<Output = Result<Chain, ChainError>> + Send {
        Chain::connect(&self.endpoint)
    }

    async fn share(&self, shared: &Shared, chain: Option<Arc<Chain>>) {
        *shared.chain.write().await = chain;
    }
}

/// Where the worker says a commitment is written.
pub trait Announce {
    /// A job's commitment is written at `block`.
    fn committed(
        &self,
        job_id: &str,
        commitment: &str,
        block: u64,
    ) -> impl Future<Output = zbus::Result<()>> + Send;
}

impl Announce for SignalEmitter<'static> {
    fn committed(
        &self,
        job_id: &str,
        commitment: &str,
        block: u64,
    ) -> impl Future<Output = zbus::Result<()>> + Send {
        CommitterService::committed(self, job_id, commitment, block)
    }
}
