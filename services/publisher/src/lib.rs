//! The publisher's Hub client as a library: one client, with one retry rule, for every process
//! that talks to the Hugging Face Hub. The publisher uploads and verifies with it; the trainer
//! reads other miners' committed models and dataset shards with it
//! (`taominer_trainer::remote`). Everything else of the publisher stays in its binary.

pub mod hub;
pub mod retry;
