//! Hotkey keyfiles made by the official `bittensor_wallet` package (pinned in
//! tests/requirements.txt) load to the same account through each of their secret fields alone,
//! our signatures verify with its `Keypair` (its signatures verifying with ours is a unit test in
//! `taominer_core::wallet`), and encrypted and public-only files are refused with the reason.
//!
//! `minerctl hotkey` is the window onto `taominer_core::wallet`, the loader the committer and the
//! predictor use.

use std::process::Command;

use taominer_tests::*;

/// Runs Python with bittensor_wallet; returns the last line of stdout (bittensor_wallet prints
/// progress such as "Encrypting..." there too).
fn python(code: &str, args: &[&str]) -> String {
    let out = Command::new(venv_python())
        .arg("-c")
        .arg(code)
        .args(args)
        .output()
        .expect("run the venv's python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim().lines().last().unwrap_or("").to_string()
}

fn minerctl_hotkey(args: &[&str]) -> std::process::Output {
    Command::new(bin_dir().join("minerctl"))
        .arg("hotkey")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn bittensor_wallet_keyfiles_load_to_the_same_account() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().to_str().unwrap();
    // A hotkey as `btcli wallet new_hotkey` makes it, a password-protected one, and a coldkey.
    let address = python(
        "import sys; from bittensor_wallet import Wallet, Keyfile, Keypair\n\
         w = Wallet(name='m', hotkey='h', path=sys.argv[1])\n\
         w.create_new_hotkey(use_password=False, overwrite=True, suppress=True)\n\
         w.create_new_coldkey(use_password=False, overwrite=True, suppress=True)\n\
         kf = Keyfile(sys.argv[1] + '/encrypted')\n\
         kf.set_keypair(Keypair.create_from_mnemonic(Keypair.generate_mnemonic()), encrypt=True, overwrite=True, password='pw-123456789')\n\
         print(w.hotkey.ss58_address)",
        &[root],
    );
    let file = d.path().join("m/hotkeys/h");
    let full: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    // One file per secret field, each alone: the loader's three ways in.
    for (field, source) in [
        ("secretPhrase", "secretPhrase"),
        ("secretSeed", "secretSeed"),
        ("privateKey", "privateKey"),
    ] {
        let only = d.path().join(field);
        std::fs::write(&only, serde_json::json!({ field: full[field] }).to_string()).unwrap();
        let out = minerctl_hotkey(&[only.to_str().unwrap(), "--json"]);
        let v = json(&out);
        assert_eq!(v["ss58_address"], address.as_str(), "{field}");
        assert_eq!(v["secret_from"], source);
    }

    // Our signature verifies with bittensor_wallet's Keypair (as a validator's axon checks one).
    let v = json(&minerctl_hotkey(&[
        file.to_str().unwrap(),
        "--sign",
        "1.a.b.c.d",
        "--json",
    ]));
    let ok = python(
        "import sys; from bittensor_wallet import Keypair\n\
         print(Keypair(ss58_address=sys.argv[1]).verify(sys.argv[2], bytes.fromhex(sys.argv[3][2:])))",
        &[&address, "1.a.b.c.d", v["signature"].as_str().unwrap()],
    );
    assert_eq!(ok, "True");

    // A password-protected keyfile (what a coldkey normally is) and a public-only file are
    // refused with the reason.
    let out = minerctl_hotkey(&[d.path().join("encrypted").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(65));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("encrypted") && err.contains("never the coldkey"),
        "{err}"
    );
    for public in ["m/coldkeypub.txt", "m/hotkeys/hpub.txt"] {
        let out = minerctl_hotkey(&[d.path().join(public).to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(65));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("only a public key"), "{public}: {err}");
    }
}
