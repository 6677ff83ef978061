//! The subtensor chain, as the committer uses it: `subxt` with the metadata the node serves at run
//! time (subtensor upgrades its runtime often; nothing is generated from a metadata file at
//! build time), through the dynamic API.
//!
//! * [`Chain::commitment_of`] reads `Commitments.CommitmentOf(netuid, hotkey)`: the block it was
//!   written in and the bytes of its first `Raw` field, what validators decode.
//! * [`Chain::set_commitment`] submits `Commitments.set_commitment(netuid, {fields: [RawN(bytes)]})`
//!   signed by the hotkey (`RawN` with N the length, as the Python SDK writes it), waits for it to
//!   be in a finalized block and returns that block; a failed dispatch comes back as the pallet's
//!   error name (`AccountNotAllowedCommit`, `SpaceLimitExceeded`, ...).
//!
//! Errors are sorted by what helps: reconnecting ([`ChainError::Unreachable`]), nothing
//! ([`ChainError::Dispatch`], the pallet's verdict), or a person ([`ChainError::Refused`]).

use subxt::dynamic::{self, Value};
use subxt::utils::{AccountId32, MultiSignature};
use subxt::{OnlineClient, SubstrateConfig};
use taominer_core::wallet::Hotkey;

/// What went wrong talking to the chain.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ChainError {
    /// The node is unreachable or the connection broke: reconnect and retry.
    #[error("chain unreachable: {0}")]
    Unreachable(String),
    /// The extrinsic was included and failed with this pallet error.
    #[error("{pallet}.{name}")]
    Dispatch { pallet: String, name: String },
    /// Anything else the node refused (bad data, invalid transaction).
    #[error("{0}")]
    Refused(String),
}

/// The hotkey as a subxt signer.
struct Signer<'a>(&'a Hotkey);

impl subxt::transactions::Signer<SubstrateConfig> for Signer<'_> {
    fn account_id(&self) -> AccountId32 {
        AccountId32(self.0.public_key())
    }

    fn sign(&self, payload: &[u8]) -> MultiSignature {
        MultiSignature::Sr25519(self.0.sign(payload))
    }
}

/// A commitment as stored on chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnChain {
    /// The block it was written in (`Registration.block`).
    pub block: u64,
    /// The first field's bytes.
    pub data: Vec<u8>,
}

/// A connection to one node.
pub struct Chain {
    api: OnlineClient<SubstrateConfig>,
}

impl Chain {
    /// Connects to a node (`ws://` or `wss://`); fetches its metadata.
    pub async fn connect(endpoint: &str) -> Result<Chain, ChainError> {
        let api = if endpoint.starts_with("ws://") {
            OnlineClient::<SubstrateConfig>::from_insecure_url(endpoint).await
        } else {
            OnlineClient::<SubstrateConfig>::from_url(endpoint).await
        }
        .map_err(|e| ChainError::Unreachable(format!("{endpoint}: {e}")))?;
        Ok(Chain { api })
    }

    /// The newest block number.
    pub async fn block_number(&self) -> Result<u64, ChainError> {
        let at = self.api.at_current_block().await.map_err(unreachable)?;
        Ok(at.block_number())
    }

    /// `Commitments.CommitmentOf(netuid, account)`, if any.
    pub async fn commitment_of(
        &self,
        netuid: u16,
        account: [u8; 32],
    ) -> Result<Option<OnChain>, ChainError> {
        let Some(value) = self
            .fetch_by_account("Commitments", "CommitmentOf", netuid, account)
            .await?
        else {
            return Ok(None);
        };
        registration(&value)
            .map(Some)
            .ok_or_else(|| ChainError::Refused(format!("unexpected CommitmentOf value: {value}")))
    }

    /// A `(netuid, account)` storage map entry at the newest block, decoded, if present.
    async fn fetch_by_account(
        &self,
        pallet: &str,
        item: &str,
        netuid: u16,
        account: [u8; 32],
    ) -> Result<Option<Value>, ChainError> {
        let at = self.api.at_current_block().await.map_err(unreachable)?;
        let addr = dynamic::storage::<(u16, [u8; 32]), Value>(pallet, item);
        let Some(entry) = at
            .storage()
            .try_fetch(addr, (netuid, account))
            .await
            .map_err(unreachable)?
        else {
            return Ok(None);
        };
        entry
            .decode()
            .map(Some)
            .map_err(|e| ChainError::Refused(format!("cannot decode {pallet}.{item}: {e}")))
    }

    /// `SubtensorModule.Tempo(netuid)`: blocks per epoch, less one.
    pub async fn tempo(&self, netuid: u16) -> Result<u64, ChainError> {
        let at = self.api.at_current_block().await.map_err(unreachable)?;
        let addr = dynamic::storage::<(u16,), u16>("SubtensorModule", "Tempo");
        let entry = at
            .storage()
            .fetch(addr, (netuid,))
            .await
            .map_err(unreachable)?;
        let tempo = entry
            .decode()
            .map_err(|e| ChainError::Refused(format!("cannot decode Tempo: {e}")))?;
        Ok(u64::from(tempo))
    }

    /// Writes a commitment signed by `hotkey`; returns the finalized block it is in.
    pub async fn set_commitment(
        &self,
        netuid: u16,
        data: &[u8],
        hotkey: &Hotkey,
    ) -> Result<u64, ChainError> {
        let tx = dynamic::transaction(
            "Commitments",
            "set_commitment",
            vec![
                Value::u128(u128::from(netuid)),
                Value::named_composite([(
                    "fields",
                    Value::unnamed_composite([Value::unnamed_variant(
                        format!("Raw{}", data.len()),
                        [Value::from_bytes(data)],
                    )]),
                )]),
            ],
        );
        self.submit(&tx, hotkey).await
    }

    /// Signs `tx` with the hotkey, submits it, waits for a finalized block and returns its
    /// number; a failed dispatch comes back as the pallet's error name.
    async fn submit(
        &self,
        tx: &impl subxt::transactions::Payload,
        hotkey: &Hotkey,
    ) -> Result<u64, ChainError> {
        let at = self.api.at_current_block().await.map_err(unreachable)?;
        let progress = at
            .transactions()
            .sign_and_submit_then_watch_default(tx, &Signer(hotkey))
            .await
            .map_err(|e| classify(e.to_string()))?;
        taominer_core::daemon::fault::crash_point("committer.chain-submitted");
        let in_block = progress
            .wait_for_finalized()
            .await
            .map_err(|e| classify(e.to_string()))?;
        let block_hash = in_block.block_hash();
        match in_block.wait_for_success().await {
            Ok(_) => {}
            Err(subxt::error::TransactionEventsError::ExtrinsicFailed(
                subxt::error::DispatchError::Module(m),
            )) => {
                return Err(match m.details() {
                    Ok(d) => ChainError::Dispatch {
                        pallet: d.pallet.name().to_string(),
                        name: d.variant.name.clone(),
                    },
                    Err(_) => ChainError::Refused(format!("module error {}", m.details_string())),
                })
            }
            Err(e) => return Err(ChainError::Refused(e.to_string())),
        }
        let at = self.api.at_block(block_hash).await.map_err(unreachable)?;
        Ok(at.block_number())
    }

    /// `NeuronInfoRuntimeApi.get_neurons_lite(netuid)`: the subnet's neurons.
    pub async fn neurons(&self, netuid: u16) -> Result<Vec<Neuron>, ChainError> {
        let at = self.api.at_current_block().await.map_err(unreachable)?;
        let call = dynamic::runtime_api_call::<_, Value>(
            "NeuronInfoRuntimeApi",
            "get_neurons_lite",
            (netuid,),
        );
        let value = at
            .runtime_apis()
            .call(call)
            .await
            .map_err(|e| ChainError::Unreachable(e.to_string()))?;
        let list = items(&value);
        Ok(list.into_iter().filter_map(neuron).collect())
    }

    /// `SubtensorModule.Axons(netuid, hotkey)`: what the chain announces for this axon.
    pub async fn axon_of(
        &self,
        netuid: u16,
        account: [u8; 32],
    ) -> Result<Option<Axon>, ChainError> {
        let Some(value) = self
            .fetch_by_account("SubtensorModule", "Axons", netuid, account)
            .await?
        else {
            return Ok(None);
        };
        Ok(axon(&value))
    }

    /// `SubtensorModule.serve_axon` signed by the hotkey; returns the finalized block.
    pub async fn serve_axon(
        &self,
        netuid: u16,
        axon: &Axon,
        hotkey: &Hotkey,
    ) -> Result<u64, ChainError> {
        let tx = dynamic::transaction(
            "SubtensorModule",
            "serve_axon",
            vec![
                Value::u128(u128::from(netuid)),
                Value::u128(u128::from(axon.version)),
                Value::u128(axon.ip),
                Value::u128(u128::from(axon.port)),
                Value::u128(u128::from(axon.ip_type)),
                Value::u128(u128::from(axon.protocol)),
                Value::u128(0),
                Value::u128(0),
            ],
        );
        self.submit(&tx, hotkey).await
    }
}

/// One neuron of a subnet.
#[derive(Debug, Clone, PartialEq)]
pub struct Neuron {
    pub uid: u16,
    pub hotkey: [u8; 32],
    pub coldkey: [u8; 32],
    /// Total stake, in the chain's smallest unit.
    pub stake: u64,
    pub validator_permit: bool,
    /// `incentive / u16::MAX`.
    pub incentive: f64,
    pub axon: Axon,
}

/// An axon as the chain stores it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Axon {
    pub version: u32,
    /// IPv4 in the low 32 bits, or IPv6.
    pub ip: u128,
    pub port: u16,
    /// 4 or 6.
    pub ip_type: u8,
    pub protocol: u8,
}

/// The elements of a sequence value (possibly wrapped in a one-field composite).
/// The direct values of a composite (a sequence's elements, a tuple's fields).
fn children(value: &Value) -> Vec<&Value> {
    match &value.value {
        subxt::ext::scale_value::ValueDef::Composite(c) => c.values().collect(),
        _ => Vec::new(),
    }
}

fn items(value: &Value) -> Vec<&Value> {
    use subxt::ext::scale_value::ValueDef;
    match &value.value {
        ValueDef::Composite(c) => {
            let v: Vec<&Value> = c.values().collect();
            if v.len() == 1
                && matches!(v[0].value, ValueDef::Composite(_))
                && field(v[0], "hotkey").is_none()
            {
                items(v[0])
            } else {
                v
            }
        }
        _ => Vec::new(),
    }
}

/// A named field of a composite value.
fn field<'a>(value: &'a Value, name: &str) -> Option<&'a Value> {
    use subxt::ext::scale_value::{Composite, ValueDef};
    match &value.value {
        ValueDef::Composite(Composite::Named(fields)) => {
            fields.iter().find(|(n, _)| n == name).map(|(_, v)| v)
        }
        _ => None,
    }
}

fn number(value: &Value) -> Option<u128> {
    use subxt::ext::scale_value::ValueDef;
    value.as_u128().or_else(|| match &value.value {
        // Compact<T> and newtypes decode as one-field composites.
        ValueDef::Composite(c) if c.values().count() == 1 => c.values().next().and_then(number),
        _ => None,
    })
}

fn account(value: &Value) -> Option<[u8; 32]> {
    bytes_of(value)?.try_into().ok()
}

fn neuron(value: &Value) -> Option<Neuron> {
    let stake = match field(value, "stake") {
        // Vec<(coldkey, Compact<u64>)>: the stake of each nominator.
        // Not `items`: it unwraps one-element composites, so a single staker's pair would be
        // taken for the list and its AccountId's bytes for the pair.
        Some(s) => children(s)
            .into_iter()
            .filter_map(|pair| children(pair).get(1).and_then(|v| number(v)))
            .sum::<u128>() as u64,
        None => 0,
    };
    Some(Neuron {
        uid: number(field(value, "uid")?)? as u16,
        hotkey: account(field(value, "hotkey")?)?,
        coldkey: account(field(value, "coldkey")?)?,
        stake,
        validator_permit: field(value, "validator_permit")
            .and_then(|v| v.as_bool())
            .unwrap_or(false),
        incentive: field(value, "incentive").and_then(number).unwrap_or(0) as f64
            / f64::from(u16::MAX),
        axon: field(value, "axon_info").and_then(axon).unwrap_or_default(),
    })
}

fn axon(value: &Value) -> Option<Axon> {
    let n = |name: &str| field(value, name).and_then(number);
    Some(Axon {
        version: n("version")? as u32,
        ip: n("ip")?,
        port: n("port")? as u16,
        ip_type: n("ip_type")? as u8,
        protocol: n("protocol").unwrap_or(0) as u8,
    })
}

fn unreachable(e: impl std::fmt::Display) -> ChainError {
    ChainError::Unreachable(e.to_string())
}

/// Submission errors: a broken connection is worth retrying; a transaction the pool refuses
/// (bad signature, stale nonce, priority) is reported as it is.
fn classify(message: String) -> ChainError {
    let lower = message.to_ascii_lowercase();
    if lower.contains("restart")
        || lower.contains("connection")
        || lower.contains("closed")
        || lower.contains("transport")
    {
        ChainError::Unreachable(message)
    } else {
        ChainError::Refused(message)
    }
}

/// `Registration { deposit, block, info: { fields: [Data, ...] } }` → block and the first
/// field's bytes (`RawN` variants carry them as one unnamed field).
fn registration(value: &Value) -> Option<OnChain> {
    use subxt::ext::scale_value::{Composite, ValueDef};
    let ValueDef::Composite(Composite::Named(fields)) = &value.value else {
        return None;
    };
    let get = |name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, v)| v);
    let block = get("block")?.as_u128()? as u64;
    let info = get("info")?;
    let ValueDef::Composite(Composite::Named(info)) = &info.value else {
        return None;
    };
    let fields = &info.iter().find(|(n, _)| n == "fields")?.1;
    // BoundedVec<Data> decodes as a composite of one unnamed composite (the inner Vec).
    let first = first_variant(fields)?;
    let ValueDef::Variant(variant) = &first.value else {
        return None;
    };
    let bytes_value = variant.values.values().next()?;
    Some(OnChain {
        block,
        data: bytes_of(bytes_value)?,
    })
}

/// The first variant value inside nested composites.
fn first_variant(value: &Value) -> Option<&Value> {
    use subxt::ext::scale_value::ValueDef;
    match &value.value {
        ValueDef::Variant(_) => Some(value),
        ValueDef::Composite(c) => c.values().find_map(first_variant),
        _ => None,
    }
}

/// A `[u8; N]` or `Vec<u8>` value as bytes.
fn bytes_of(value: &Value) -> Option<Vec<u8>> {
    use subxt::ext::scale_value::ValueDef;
    match &value.value {
        ValueDef::Composite(c) => {
            let items: Vec<&Value> = c.values().collect();
            if items.len() == 1 && !matches!(items[0].value, ValueDef::Primitive(_)) {
                return bytes_of(items[0]);
            }
            items
                .into_iter()
                .map(|v| v.as_u128().and_then(|n| u8::try_from(n).ok()))
                .collect()
        }
        _ => None,
    }
}
