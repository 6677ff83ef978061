//! The local subtensor dev chain (`tests/devchain/`) behaves as a node for the official
//! `bittensor` 10.5.0 SDK: it connects, reads blocks and storage under the real keys, commits
//! with `set_commitment` (signature and nonce checked over the real signing payload of the real
//! finney metadata), reads the commitment back with `get_commitment`, and sees the pallet's
//! refusals (`AccountNotAllowedCommit`, `SpaceLimitExceeded` until the next epoch) and
//! `serve_axon`'s rules (`tests/devchain/check_devchain.py` lists every check).
//!
//! This is what lets the committer's tests stand in for a subtensor node.

use taominer_tests::{assert_python_checks_pass, finney_metadata, repo_root};

#[test]
fn the_dev_chain_passes_the_official_sdk_checks() {
    let metadata = finney_metadata();
    assert_python_checks_pass(
        &repo_root().join("tests/devchain/check_devchain.py"),
        &["--metadata".as_ref(), metadata.as_os_str()],
    );
}
