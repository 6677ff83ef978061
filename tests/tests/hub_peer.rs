//! The local Hub server speaks the Hub's protocol: the official `huggingface_hub` client
//! (pinned in tests/requirements.txt) creates repositories, uploads folders through preupload,
//! basic and multipart LFS and NDJSON commits, downloads snapshots byte-identical, reads
//! `model_info(files_metadata=True)` sizes, is refused without the right token, and sees
//! immutable commits (`tests/hub/check_hub_server.py` lists every check).
//!
//! This is what lets `hub.rs` stand in for huggingface.co: the peer the publisher is tested
//! against is itself tested against the client validators use.

use taominer_tests::{assert_python_checks_pass, repo_root};

#[test]
fn the_test_hub_passes_the_official_client_checks() {
    assert_python_checks_pass(&repo_root().join("tests/hub/check_hub_server.py"), &[]);
}
