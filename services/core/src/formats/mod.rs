//! Protocol formats: what validators compute and what goes on chain, byte for byte.
//!
//! * [`hash`]: the taoverse model hash and secure hash, the SoundsRight content hash, and the git
//!   tree id used as the revision of an offline snapshot.
//! * [`model_id`]: repository ids and the commitment string of each profile.
//! * [`competition`]: the built-in competition tables.
//! * [`preflight`]: a competition's limits checked before anything is uploaded, and the files
//!   validators download.
//! * [`safetensors`]: tensor headers and parameter counts, without reading tensor data.
//! * [`ss58`]: SS58 address checks.

pub mod competition;
pub mod hash;
pub mod model_id;
pub mod preflight;
pub mod safetensors;
pub mod ss58;
