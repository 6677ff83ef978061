//! Protocol formats: what validators compute and what goes on chain, byte for byte.
//!
//! * [`hash`]: the taoverse model hash and secure hash, the SoundsRight content hash, and the git
//!   tree id used as the revision of an offline snapshot.
//! * [`model_id`]: repository ids, taoverse's `ModelId`, and the rules every commitment shares.
//! * [`competition`]: what a competition is and its [`competition::Limits`].
//! * [`preflight`]: the engine that checks a competition's limits and a subnet's layout before
//!   anything is uploaded, and the files validators download.
//! * [`safetensors`]: tensor headers and parameter counts, without reading tensor data.
//! * [`ss58`]: SS58 address checks.
//!
//! Nothing here depends on which subnet is in use: each subnet's choices among these (its
//! tables, its commitment, which hash) are in [`crate::subnet`].

pub mod competition;
pub mod hash;
pub mod model_id;
pub mod preflight;
pub mod safetensors;
pub mod ss58;
