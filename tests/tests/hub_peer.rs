//! The local Hub server speaks the Hub's protocol: the official `huggingface_hub` client
//! (pinned in tests/requirements.txt) creates repositories, uploads folders through preupload,
//! basic and multipart LFS and NDJSON commits, downloads snapshots byte-identical, reads
//! `model_info(files_metadata=True)` sizes, is refused without the right token, and sees
//! immutable commits (`tests/hub/check_hub_server.py` lists every check).
//!
//! This is what lets `hub.rs` stand in for huggingface.co: the peer the publisher is tested
//! against is itself tested against the client validators use.

use std::process::Command;

use taominer_tests::{repo_root, venv_python};

#[test]
fn the_test_hub_passes_the_official_client_checks() {
    let out = Command::new(venv_python())
        .arg(repo_root().join("tests/hub/check_hub_server.py"))
        .output()
        .expect("run check_hub_server.py");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.lines().any(|l| l.ends_with(" passed, 0 failed")),
        "{text}"
    );
}
