//! `[committer]`: the chain writer's own section. It is empty: everything the committer needs is
//! shared with other daemons and lives there (`[miner]`: chain endpoint, netuid, hotkey;
//! `[retry]`: the delays between chain attempts; `[publisher]`'s `repo`, which a commitment must
//! name). The section exists so that `[committer]` in a file is accepted, and so that a setting
//! only the committer reads has a place to go.

use serde::{Deserialize, Serialize};

/// `[committer]`: no keys of its own (see the module comment for what the committer reads).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CommitterConfig {}
