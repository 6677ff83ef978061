//! The checked-in seed corpora (`fuzz/corpus/`) replay through every target without a panic, and
//! each target's real-world seed is *accepted*: a corpus the parser refuses at the first byte
//! would leave the fuzzing on the surface. Runs in `cargo test`; the bounded mutation run is
//! `scripts/fuzz`.

use std::path::PathBuf;

use taominer_fuzz::{driver, targets};

fn corpus_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus")
}

fn corpus(target: &str) -> PathBuf {
    corpus_root().join(target)
}

#[test]
fn every_seed_replays_and_the_real_ones_are_accepted() {
    for (name, target) in targets::TARGETS {
        let dir = corpus(name);
        let seeds = driver::load_corpus(&dir);
        assert!(!seeds.is_empty(), "{} has no seeds", dir.display());
        let accepted = seeds
            .iter()
            .filter(|s| driver::exec(*target, s).unwrap_or_else(|m| panic!("{name}: {m}")))
            .count();
        assert!(accepted > 0, "{name}: no seed is accepted");
    }
    // The seeds that must parse (a signed head, a full keyfile, a real safetensors file).
    for (name, file) in [
        ("axon_head", "signed-image-synapse"),
        ("keyfile", "full"),
        ("keyfile", "phrase"),
        ("safetensors_header", "two-with-metadata"),
        ("config_toml", "miner.toml.example"),
        ("commitment", "taoverse"),
        ("image", "rgb.jpg"),
        ("synapse_body", "image-png.json"),
    ] {
        let bytes = std::fs::read(corpus(name).join(file)).expect("seed file");
        let target = targets::by_name(name).expect("target");
        assert!(target(&bytes), "{name}/{file} is refused");
    }
}

/// A bounded mutation run finds no crash (the same check as CI's `scripts/fuzz`, a few hundred
/// inputs per target so that `cargo test` stays fast).
#[test]
fn a_short_mutation_run_finds_no_crash() {
    driver::quiet_panics();
    let artifacts = tempfile::tempdir().expect("tempdir");
    for (name, target) in targets::TARGETS {
        let opts = driver::Options {
            time: std::time::Duration::from_secs(5),
            seed: 1,
            max_execs: Some(300),
            corpus: corpus_root(),
            artifacts: artifacts.path().to_path_buf(),
            trace: false,
        };
        let report = driver::run(name, *target, &opts).expect("run");
        assert_eq!(report.execs, 300, "{name}");
        assert!(report.crashes.is_empty(), "{name}: {:?}", report.crashes);
    }
}

/// A planted bug: panics when an input holds a byte no seed has.
fn planted(data: &[u8]) -> bool {
    assert!(!data.contains(&0xff), "planted bug reached");
    true
}

/// The driver finds a planted panic by mutation alone, keeps going, and saves the input that
/// reproduces it with the panic message beside it (a driver that cannot see crashes would make
/// every "zero panics" above meaningless).
#[test]
fn the_driver_finds_saves_and_replays_a_planted_crash() {
    driver::quiet_panics();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("corpus/planted")).expect("mkdir");
    std::fs::write(
        dir.path().join("corpus/planted/seed"),
        b"ns:name:rev:hash:2",
    )
    .expect("seed");
    let opts = driver::Options {
        time: std::time::Duration::from_secs(30),
        seed: 1,
        max_execs: Some(20_000),
        corpus: dir.path().join("corpus"),
        artifacts: dir.path().join("artifacts"),
        trace: false,
    };
    let report = driver::run("planted", planted, &opts).expect("run");
    assert_eq!(report.execs, 20_000, "the run goes on after a crash");
    assert_eq!(report.crashes.len(), 1, "one panic site, saved once");
    let (path, message) = &report.crashes[0];
    assert!(message.contains("planted bug reached"), "{message}");
    let input = std::fs::read(path).expect("saved input");
    assert!(
        driver::exec(planted, &input).is_err(),
        "the saved input replays the crash"
    );
    let note = std::fs::read_to_string(path.with_extension("txt")).expect("message file");
    assert!(note.contains("planted bug reached"));
}
