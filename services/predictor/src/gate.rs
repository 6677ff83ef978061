//! Who may query the axon, and whether this request is really theirs.
//!
//! Stricter than upstream's axon on purpose:
//! * a signature is required (upstream lets a request without one through `default_verify`);
//! * every nonce must be recent (upstream checks the window only for the first nonce of an
//!   endpoint), and the window uses a capped timeout, since the `timeout` header is not signed;
//! * a nonce may be at most [`FUTURE_SKEW_NS`] ahead of our clock (upstream accepts any: one
//!   request from a clock an hour fast would then lock that endpoint out for the hour);
//! * the nonce table is bounded (endpoints per hotkey, only authenticated callers) and ages out
//!   by generations, in O(1) per request, never by scanning it;
//! * callers come from the metagraph (registered, validator permit, `min_stake_tao`) or the static
//!   allow-list; with no metagraph ever seen, only the allow-list gets in (fail closed). The last
//!   metagraph is cached on disk so a committer restart neither opens nor shuts the door.
//!
//! Checks run cheapest first (blacklist on the hotkey header, then the signature), so a flood of
//! strangers costs a hash lookup each.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use serde::{Deserialize, Serialize};
use taominer_core::bus::NeuronInfo;
use taominer_core::daemon::store;
use taominer_core::formats::ss58;
use taominer_core::wallet;

use crate::protocol::{self, RequestHead};

/// upstream's `ALLOWED_DELTA`: how old a nonce may be beyond the request's timeout.
pub const ALLOWED_DELTA_NS: u64 = 4_000_000_000;

/// How far ahead of our clock a nonce may be (clock skew between validator and miner).
pub const FUTURE_SKEW_NS: u64 = 4_000_000_000;

/// Endpoints (dendrite uuids) one hotkey may use within a nonce generation: a dendrite keeps one
/// uuid per process, so this allows a validator's restarts and parallel processes while a
/// caller minting uuids cannot grow the table.
pub const ENDPOINTS_PER_HOTKEY: usize = 64;

/// One rao is 1e-9 TAO.
const RAO_PER_TAO: f64 = 1e9;

/// Why a request is turned away, and with which status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// 403: the hotkey may not query us.
    Forbidden(String),
    /// 401: the request is not provably theirs (signature, nonce).
    Unverified(String),
}

/// A neuron as the gate needs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub hotkey: String,
    pub stake: u64,
    pub validator_permit: bool,
}

/// The metagraph snapshot written to disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub netuid: u16,
    /// When it was fetched, seconds since the epoch.
    pub fetched: u64,
    pub neurons: Vec<Member>,
}

/// The gate's rules, from the configuration.
#[derive(Debug, Clone)]
pub struct Rules {
    pub netuid: u16,
    pub allow: Vec<String>,
    pub require_validator_permit: bool,
    pub min_stake_tao: f64,
    pub max_timeout_s: f64,
}

/// An admitted caller and the priority its requests get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub hotkey: String,
    /// Stake in rao; allow-listed callers not in the metagraph get the highest priority.
    pub priority: u64,
}

pub struct Gate {
    axon_hotkey: String,
    rules: Rules,
    allow: HashSet<String>,
    members: RwLock<Option<HashMap<String, Member>>>,
    nonces: Mutex<Nonces>,
    cache: Option<PathBuf>,
}

/// The last nonce seen from each endpoint `(hotkey, uuid)`, in two generations.
///
/// An entry only matters while a nonce at or below it could still pass the age check, i.e. for
/// the longest window plus the allowed skew after it was recorded. Entries are recorded in
/// `current`; every `period` (that long) `current` becomes `previous` and the old `previous` is
/// dropped whole, so every entry lives at least one period and pruning costs nothing per
/// request.
#[derive(Default)]
struct Nonces {
    current: HashMap<(String, String), u64>,
    previous: HashMap<(String, String), u64>,
    /// Endpoints per hotkey in `current`.
    endpoints: HashMap<String, usize>,
    rotated_at: u64,
    period: u64,
}

impl Nonces {
    fn new(period: u64) -> Nonces {
        Nonces {
            period,
            rotated_at: protocol::now_ns(),
            ..Nonces::default()
        }
    }

    fn rotate_if_due(&mut self, now: u64) {
        if now.saturating_sub(self.rotated_at) >= self.period {
            self.previous = std::mem::take(&mut self.current);
            self.endpoints.clear();
            self.rotated_at = now;
        }
    }

    fn last(&self, key: &(String, String)) -> Option<u64> {
        match (self.current.get(key), self.previous.get(key)) {
            (Some(&a), Some(&b)) => Some(a.max(b)),
            (a, b) => a.or(b).copied(),
        }
    }

    /// Records `nonce` for `key`; refused when it would be one endpoint too many for the hotkey.
    fn record(&mut self, key: (String, String), nonce: u64) -> Result<(), Denied> {
        if !self.current.contains_key(&key) {
            let n = self.endpoints.entry(key.0.clone()).or_insert(0);
            if *n >= ENDPOINTS_PER_HOTKEY {
                return Err(Denied::Unverified(format!(
                    "more than {ENDPOINTS_PER_HOTKEY} endpoints (uuids) from this hotkey in a minute"
                )));
            }
            *n += 1;
        }
        self.current.insert(key, nonce);
        Ok(())
    }

    fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }
}

impl Gate {
    /// A gate for `axon_hotkey` (ours); `cache` is where the metagraph is kept across restarts.
    pub fn new(axon_hotkey: &str, rules: Rules, cache: Option<&Path>) -> Gate {
        // Long enough for any nonce that could still pass the age check (see `Nonces`).
        let nonce_period =
            (rules.max_timeout_s.max(0.0) * 1e9) as u64 + ALLOWED_DELTA_NS + FUTURE_SKEW_NS;
        let gate = Gate {
            axon_hotkey: axon_hotkey.to_string(),
            allow: rules.allow.iter().cloned().collect(),
            rules,
            members: RwLock::new(None),
            nonces: Mutex::new(Nonces::new(nonce_period)),
            cache: cache.map(Path::to_path_buf),
        };
        if let Some(path) = &gate.cache {
            match store::read_json::<Snapshot>(path) {
                Ok(Some(s)) if s.netuid == gate.rules.netuid => {
                    tracing::info!(
                        "validators from the cached metagraph of {} ({} neurons)",
                        s.fetched,
                        s.neurons.len()
                    );
                    gate.install(s.neurons);
                }
                Ok(Some(s)) => tracing::warn!(
                    "ignoring cached metagraph of netuid {} (serving netuid {})",
                    s.netuid,
                    gate.rules.netuid
                ),
                Ok(None) => {}
                Err(e) => tracing::warn!("ignoring unreadable metagraph cache: {e}"),
            }
        }
        gate
    }

    fn install(&self, neurons: Vec<Member>) {
        let map = neurons.into_iter().map(|m| (m.hotkey.clone(), m)).collect();
        if let Ok(mut w) = self.members.write() {
            *w = Some(map);
        }
    }

    /// Replaces the validator set with a fresh metagraph and writes it to the cache.
    pub fn update(&self, neurons: &[NeuronInfo]) {
        let members: Vec<Member> = neurons
            .iter()
            .map(|n| Member {
                hotkey: n.hotkey.clone(),
                stake: n.stake,
                validator_permit: n.validator_permit,
            })
            .collect();
        if let Some(path) = &self.cache {
            let snapshot = Snapshot {
                netuid: self.rules.netuid,
                fetched: store::unix_now(),
                neurons: members.clone(),
            };
            if let Err(e) = store::write_json(path, &snapshot) {
                tracing::warn!("cannot cache the metagraph: {e}");
            }
        }
        self.install(members);
    }

    /// Whether any metagraph (fresh or cached) is known.
    pub fn has_metagraph(&self) -> bool {
        self.members.read().map(|m| m.is_some()).unwrap_or(false)
    }

    /// The blacklist: may this hotkey query us at all? (403 otherwise.)
    pub fn blacklist(&self, hotkey: &str) -> Result<Caller, Denied> {
        let members = self
            .members
            .read()
            .map_err(|_| Denied::Forbidden("validator set unavailable".into()))?;
        let member = members.as_ref().and_then(|m| m.get(hotkey));
        if self.allow.contains(hotkey) {
            return Ok(Caller {
                hotkey: hotkey.to_string(),
                priority: member.map_or(u64::MAX, |m| m.stake),
            });
        }
        let Some(all) = members.as_ref() else {
            return Err(Denied::Forbidden(
                "no metagraph seen yet; only predictor.allow hotkeys are served".into(),
            ));
        };
        let Some(m) = all.get(hotkey) else {
            return Err(Denied::Forbidden(format!(
                "hotkey {hotkey} is not registered on netuid {}",
                self.rules.netuid
            )));
        };
        if self.rules.require_validator_permit && !m.validator_permit {
            return Err(Denied::Forbidden(format!(
                "hotkey {hotkey} has no validator permit"
            )));
        }
        if (m.stake as f64) < self.rules.min_stake_tao * RAO_PER_TAO {
            return Err(Denied::Forbidden(format!(
                "hotkey {hotkey} has {:.3} TAO staked; {} needed",
                m.stake as f64 / RAO_PER_TAO,
                self.rules.min_stake_tao
            )));
        }
        Ok(Caller {
            hotkey: hotkey.to_string(),
            priority: m.stake,
        })
    }

    /// Signature and nonce (401 otherwise). Records the nonce only when everything holds.
    pub fn verify(&self, head: &RequestHead) -> Result<(), Denied> {
        let d = &head.dendrite;
        let Some(sig_text) = d.signature.as_deref().filter(|s| !s.is_empty()) else {
            return Err(Denied::Unverified("missing signature".into()));
        };
        let Some(signature) = protocol::parse_signature(sig_text) else {
            return Err(Denied::Unverified(
                "signature is not 64 bytes of hex".into(),
            ));
        };
        let Ok((_, public)) = ss58::decode(&d.hotkey) else {
            return Err(Denied::Unverified(
                "dendrite hotkey is not an SS58 address".into(),
            ));
        };
        let timeout = head
            .timeout
            .unwrap_or(0.0)
            .min(self.rules.max_timeout_s)
            .max(0.0);
        let window = (timeout * 1e9) as u64 + ALLOWED_DELTA_NS;
        let now = protocol::now_ns();
        let oldest = now.saturating_sub(window);
        if d.nonce <= oldest {
            return Err(Denied::Unverified(format!(
                "nonce is too old: {:.2} s, {:.2} s allowed",
                (now.saturating_sub(d.nonce)) as f64 / 1e9,
                window as f64 / 1e9
            )));
        }
        if d.nonce > now.saturating_add(FUTURE_SKEW_NS) {
            return Err(Denied::Unverified(format!(
                "nonce is {:.2} s ahead of the axon's clock, {:.2} s allowed",
                (d.nonce - now) as f64 / 1e9,
                FUTURE_SKEW_NS as f64 / 1e9
            )));
        }
        let message = protocol::request_message(d, &self.axon_hotkey, &head.body_hash);
        // bittensor's Keypair.verify also accepts a signature over the message wrapped in
        // <Bytes>…</Bytes> (what polkadot.js signers produce).
        let wrapped = format!("<Bytes>{message}</Bytes>");
        if !wallet::verify(&signature, message.as_bytes(), &public)
            && !wallet::verify(&signature, wrapped.as_bytes(), &public)
        {
            return Err(Denied::Unverified("signature mismatch".into()));
        }
        let key = (d.hotkey.clone(), d.uuid.clone());
        let mut nonces = self.nonces.lock().unwrap_or_else(|p| p.into_inner());
        nonces.rotate_if_due(now);
        if let Some(last) = nonces.last(&key) {
            if d.nonce <= last {
                return Err(Denied::Unverified(
                    "nonce is not newer than the last one from this endpoint".into(),
                ));
            }
        }
        nonces.record(key, d.nonce)
    }

    /// Endpoints in the nonce table now (both generations).
    pub fn nonce_entries(&self) -> usize {
        self.nonces.lock().map(|n| n.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Dendrite;
    use taominer_core::wallet::Hotkey;

    fn key(seed: u8) -> Hotkey {
        Hotkey::from_seed([seed; 32]).unwrap()
    }

    fn rules(allow: Vec<String>) -> Rules {
        Rules {
            netuid: 34,
            allow,
            require_validator_permit: true,
            min_stake_tao: 10.0,
            max_timeout_s: 60.0,
        }
    }

    fn signed(caller: &Hotkey, axon: &str, nonce: u64, uuid: &str) -> RequestHead {
        let mut d = Dendrite {
            hotkey: caller.ss58().to_string(),
            nonce,
            uuid: uuid.into(),
            ..Default::default()
        };
        let hash = protocol::sha3_hex("");
        let msg = protocol::request_message(&d, axon, &hash);
        d.signature = Some(format!("0x{}", hex::encode(caller.sign(msg.as_bytes()))));
        RequestHead {
            dendrite: d,
            timeout: Some(12.0),
            body_hash: hash,
        }
    }

    #[test]
    fn fail_closed_without_metagraph_but_allow_list_passes() {
        let (axon, v) = (key(1), key(2));
        let gate = Gate::new(axon.ss58(), rules(vec![v.ss58().into()]), None);
        assert_eq!(gate.blacklist(v.ss58()).unwrap().priority, u64::MAX);
        assert!(
            matches!(gate.blacklist(key(3).ss58()), Err(Denied::Forbidden(m)) if m.contains("no metagraph"))
        );
    }

    #[test]
    fn metagraph_rules_permit_and_stake() {
        let axon = key(1);
        let gate = Gate::new(axon.ss58(), rules(vec![]), None);
        let n = |k: &Hotkey, stake: u64, permit: bool| NeuronInfo {
            uid: 0,
            hotkey: k.ss58().into(),
            coldkey: String::new(),
            stake,
            validator_permit: permit,
            incentive: 0.0,
            axon: String::new(),
        };
        gate.update(&[
            n(&key(2), 20_000_000_000, true),
            n(&key(3), 20_000_000_000, false),
            n(&key(4), 1, true),
        ]);
        assert_eq!(
            gate.blacklist(key(2).ss58()).unwrap().priority,
            20_000_000_000
        );
        assert!(
            gate.blacklist(key(3).ss58()).unwrap_err()
                == Denied::Forbidden(format!("hotkey {} has no validator permit", key(3).ss58()))
        );
        assert!(
            matches!(gate.blacklist(key(4).ss58()), Err(Denied::Forbidden(m)) if m.contains("TAO staked"))
        );
        assert!(
            matches!(gate.blacklist(key(5).ss58()), Err(Denied::Forbidden(m)) if m.contains("not registered"))
        );
    }

    #[test]
    fn cached_metagraph_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("metagraph.json");
        let axon = key(1);
        let gate = Gate::new(axon.ss58(), rules(vec![]), Some(&cache));
        gate.update(&[NeuronInfo {
            uid: 0,
            hotkey: key(2).ss58().into(),
            coldkey: String::new(),
            stake: 20_000_000_000,
            validator_permit: true,
            incentive: 0.0,
            axon: String::new(),
        }]);
        let again = Gate::new(axon.ss58(), rules(vec![]), Some(&cache));
        assert!(again.has_metagraph());
        assert!(again.blacklist(key(2).ss58()).is_ok());
    }

    #[test]
    fn signatures_nonces_and_replays() {
        let (axon, v) = (key(1), key(2));
        let gate = Gate::new(axon.ss58(), rules(vec![v.ss58().into()]), None);
        let now = protocol::now_ns();
        let head = signed(&v, axon.ss58(), now, "u1");
        gate.verify(&head).unwrap();
        // The same request again is a replay.
        assert!(
            matches!(gate.verify(&head), Err(Denied::Unverified(m)) if m.contains("not newer"))
        );
        // Signed for another axon.
        let other = signed(&v, key(9).ss58(), now + 1, "u1");
        assert_eq!(
            gate.verify(&other),
            Err(Denied::Unverified("signature mismatch".into()))
        );
        // Unsigned.
        let mut unsigned = signed(&v, axon.ss58(), now + 2, "u1");
        unsigned.dendrite.signature = None;
        assert_eq!(
            gate.verify(&unsigned),
            Err(Denied::Unverified("missing signature".into()))
        );
        // Old, even for a new endpoint (upstream would accept a first nonce inside 4 s + timeout
        // only; we apply the window to every nonce).
        let old = signed(&v, axon.ss58(), now - 30_000_000_000, "u2");
        assert!(matches!(gate.verify(&old), Err(Denied::Unverified(m)) if m.contains("too old")));
        // A huge unsigned timeout header does not widen the window past max_timeout_s.
        let mut stale = signed(&v, axon.ss58(), now - 120_000_000_000, "u3");
        stale.timeout = Some(1e9);
        assert!(matches!(gate.verify(&stale), Err(Denied::Unverified(m)) if m.contains("too old")));
        // A newer nonce on the first endpoint passes.
        gate.verify(&signed(&v, axon.ss58(), now + 5, "u1"))
            .unwrap();
    }

    #[test]
    fn a_nonce_from_the_future_is_refused_and_does_not_lock_the_endpoint_out() {
        // Proves the finding "a nonce an hour ahead is answered 200, then the validator's normal
        // requests are refused for that hour": the future nonce is refused and not recorded.
        let (axon, v) = (key(1), key(2));
        let gate = Gate::new(axon.ss58(), rules(vec![v.ss58().into()]), None);
        let now = protocol::now_ns();
        let ahead = signed(&v, axon.ss58(), now + 3_600_000_000_000, "u1");
        assert!(matches!(gate.verify(&ahead), Err(Denied::Unverified(m)) if m.contains("ahead")));
        gate.verify(&signed(&v, axon.ss58(), now, "u1")).unwrap();
        // Within the skew is fine (a validator's clock a little fast).
        gate.verify(&signed(&v, axon.ss58(), now + 2_000_000_000, "u1"))
            .unwrap();
    }

    #[test]
    fn endpoints_per_hotkey_are_bounded() {
        let (axon, v) = (key(1), key(2));
        let gate = Gate::new(axon.ss58(), rules(vec![v.ss58().into()]), None);
        let now = protocol::now_ns();
        for i in 0..ENDPOINTS_PER_HOTKEY {
            gate.verify(&signed(&v, axon.ss58(), now, &format!("u{i}")))
                .unwrap();
        }
        let one_more = signed(&v, axon.ss58(), now, "another");
        assert!(
            matches!(gate.verify(&one_more), Err(Denied::Unverified(m)) if m.contains("endpoints"))
        );
        // Known endpoints keep working.
        gate.verify(&signed(&v, axon.ss58(), now + 1, "u0"))
            .unwrap();
        assert_eq!(gate.nonce_entries(), ENDPOINTS_PER_HOTKEY);
    }

    #[test]
    fn nonce_generations_keep_entries_for_a_period_and_drop_them_after_two() {
        let mut n = Nonces::new(100);
        let t0 = n.rotated_at;
        let k = ("h".to_string(), "u".to_string());
        n.record(k.clone(), 7).unwrap();
        n.rotate_if_due(t0 + 50);
        assert_eq!(n.last(&k), Some(7));
        n.rotate_if_due(t0 + 100);
        assert_eq!(n.last(&k), Some(7), "kept one more period");
        n.rotate_if_due(t0 + 200);
        assert_eq!(n.last(&k), None);
        assert_eq!(n.len(), 0);
    }

    #[test]
    fn bytes_wrapped_signatures_are_accepted() {
        let (axon, v) = (key(1), key(2));
        let gate = Gate::new(axon.ss58(), rules(vec![v.ss58().into()]), None);
        let mut head = signed(&v, axon.ss58(), protocol::now_ns(), "u");
        let msg = protocol::request_message(&head.dendrite, axon.ss58(), &head.body_hash);
        let sig = v.sign(format!("<Bytes>{msg}</Bytes>").as_bytes());
        head.dendrite.signature = Some(format!("0x{}", hex::encode(sig)));
        gate.verify(&head).unwrap();
    }
}
