//! The Nix files: every `.nix` in the repository parses with Nix (Debian's `nix-bin`, which
//! scripts/setup installs), and, where a nixpkgs `lib` directory is at hand (an ignored test, run
//! with `TAOMINER_NIXPKGS_LIB=/path/to/nixpkgs/lib … -- --ignored`), `scripts/check-nix-module`
//! evaluates the NixOS module with `lib.evalModules` and checks what it renders and what its
//! assertions say. Neither needs the network; a full `nix flake check` needs nixpkgs and a newer
//! Nix (docs/operating.md).

use std::path::{Path, PathBuf};
use std::process::Command;

use taominer_tests::repo_root;

fn nix_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            if !matches!(name.as_str(), "target" | ".venv" | ".git") {
                nix_files(&path, out);
            }
        } else if name.ends_with(".nix") {
            out.push(path);
        }
    }
}

#[test]
fn every_nix_file_parses() {
    let mut files = Vec::new();
    nix_files(&repo_root(), &mut files);
    assert!(
        files.len() >= 3,
        "flake.nix, the module and its check: {files:?}"
    );
    for f in files {
        let out = Command::new("nix-instantiate")
            .arg("--parse")
            .arg(&f)
            .output()
            .expect("nix-instantiate (Debian nix-bin; scripts/setup installs it)");
        assert!(
            out.status.success(),
            "{}: {}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Ignored by default, so a run without a nixpkgs lib reports it as not run rather than passed:
/// `TAOMINER_NIXPKGS_LIB=/path/to/nixpkgs/lib cargo test -p taominer-tests --test nix -- --ignored`.
#[test]
#[ignore = "needs TAOMINER_NIXPKGS_LIB, a nixpkgs lib directory (README: NixOS)"]
fn the_module_evaluates_with_nixpkgs_lib() {
    let lib = std::env::var_os("TAOMINER_NIXPKGS_LIB")
        .expect("set TAOMINER_NIXPKGS_LIB to a nixpkgs lib/ directory");
    let out = Command::new("bash")
        .arg(repo_root().join("scripts/check-nix-module"))
        .arg(lib)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.lines().any(|l| l.ends_with(" passed, 0 failed")),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
