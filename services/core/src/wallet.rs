//! The hotkey: a Bittensor keyfile loaded into an sr25519 keypair.
//!
//! The committer signs extrinsics with it and the predictor signs axon responses with it, so it
//! is loaded in one place, with the checks a daemon that runs unattended needs:
//!
//! * the keyfile format of `bittensor_wallet` (`~/.bittensor/wallets/<w>/hotkeys/<h>`): JSON with
//!   `secretPhrase`, `secretSeed`, `privateKey`, `publicKey`/`accountId`, `ss58Address`,
//!   `cryptoType`; the secret is taken in the loader's priority order (phrase, then seed, then
//!   private key) and the derived public key must match the file's;
//! * refusals that say what to do: an encrypted file (a coldkey, or a password-protected hotkey),
//!   a public-only file (`coldkeypub.txt`, `…pub.txt`), another key type;
//! * a daemon refuses a file its group or others can read (`miner.allow_readable_hotkey` to
//!   accept it), with the `chmod` to run; `minerctl hotkey` only warns;
//! * the secret's bytes (the file, the phrase, the seed, the entropy) are wiped once the keypair
//!   is made (`zeroize`; schnorrkel wipes its keys on drop), and the daemon's core dumps are off.
//!
//! Keys are derived as substrate does (`sp_core::sr25519::Pair`): a phrase through substrate-bip39
//! (the entropy, not the BIP39 seed), a 32-byte seed as a mini secret key expanded Ed25519-style,
//! a 64-byte private key as schnorrkel's secret key bytes. Nothing here ever prints a secret.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use schnorrkel::{ExpansionMode, Keypair, MiniSecretKey, PublicKey, SecretKey, Signature};
use serde::Deserialize;
use zeroize::{Zeroize, Zeroizing};

use crate::formats::ss58;
use crate::{Error, Result};

/// The SS58 network prefix Bittensor addresses use (the generic Substrate one).
pub const SS58_PREFIX: u16 = 42;

/// The signing context of every substrate sr25519 signature.
const SIGNING_CONTEXT: &[u8] = b"substrate";

/// A loaded hotkey. Not `Debug`/`Display` beyond its public address.
pub struct Hotkey {
    keypair: Keypair,
    ss58: String,
}

impl std::fmt::Debug for Hotkey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hotkey({})", self.ss58)
    }
}

/// The keyfile's JSON, every field optional (which ones are present decides how it is read).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Keyfile {
    secret_phrase: Option<String>,
    secret_seed: Option<String>,
    private_key: Option<String>,
    public_key: Option<String>,
    account_id: Option<String>,
    ss58_address: Option<String>,
    crypto_type: Option<u8>,
}

impl Drop for Keyfile {
    fn drop(&mut self) {
        self.secret_phrase.zeroize();
        self.secret_seed.zeroize();
        self.private_key.zeroize();
    }
}

/// The most bytes a keyfile may have (bittensor_wallet's are under 1 KiB).
const MAX_KEYFILE_BYTES: u64 = 64 * 1024;

/// Where the secret of a keyfile was taken from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Phrase,
    Seed,
    PrivateKey,
}

impl Hotkey {
    /// Loads a hotkey keyfile. Errors name the file and the problem, never a secret.
    pub fn load(path: &Path) -> Result<Hotkey> {
        Ok(Self::load_with_source(path)?.0)
    }

    /// As [`Hotkey::load`], also saying which field the secret came from.
    pub fn load_with_source(path: &Path) -> Result<(Hotkey, Source)> {
        let (bytes, mode) = read_keyfile(path)?;
        if let Some(warning) = readable_by_others(path, mode) {
            tracing::warn!("{warning}");
        }
        Self::parse(path, &bytes)
    }

    /// Loads a hotkey for a daemon: as [`Hotkey::load`], but a file its group or other users
    /// can read is refused (`Error::Exposed`) unless `allow_readable` says to accept it.
    pub fn load_private(path: &Path, allow_readable: bool) -> Result<Hotkey> {
        let (bytes, mode) = read_keyfile(path)?;
        if let Some(why) = readable_by_others(path, mode) {
            if !allow_readable {
                return Err(Error::Exposed(why));
            }
            tracing::warn!("{why} (accepted: miner.allow_readable_hotkey = true)");
        }
        Ok(Self::parse(path, &bytes)?.0)
    }

    /// The keypair in a keyfile's bytes; every copy of the secret made here is wiped on return.
    fn parse(path: &Path, bytes: &[u8]) -> Result<(Hotkey, Source)> {
        let bad = |why: String| Error::Format(format!("hotkey file {}: {why}", path.display()));
        // bittensor_wallet's encrypted formats: NaCl secretbox, Ansible vault, legacy Fernet.
        for (magic, what) in [
            (&b"$NACL"[..], "NaCl"),
            (&b"$ANSIBLE_VAULT"[..], "Ansible vault"),
            (&b"gAAAAA"[..], "Fernet"),
        ] {
            if bytes.starts_with(magic) {
                return Err(bad(format!(
                    "it is encrypted ({what}); a coldkey or a password-protected hotkey cannot run unattended. \
                     Give the daemon an unencrypted hotkey (btcli wallet new_hotkey without a password); never the coldkey"
                )));
            }
        }
        // serde_json's error names a line and column, never the text there.
        let file: Keyfile = serde_json::from_slice(bytes)
            .map_err(|e| bad(format!("not a Bittensor keyfile (JSON): {e}")))?;
        if let Some(t) = file.crypto_type {
            if t != 1 {
                return Err(bad(format!(
                    "cryptoType {t} is not sr25519 (1); Bittensor hotkeys are sr25519"
                )));
            }
        }
        let (keypair, source) = if let Some(phrase) = &file.secret_phrase {
            let seed = seed_from_phrase(phrase)
                .ok_or_else(|| bad("secretPhrase is not a valid BIP39 mnemonic".into()))?;
            (from_mini_secret(&seed[..]).map_err(bad)?, Source::Phrase)
        } else if let Some(seed) = &file.secret_seed {
            let seed = hex_bytes(seed)
                .filter(|b| b.len() == 32)
                .ok_or_else(|| bad("secretSeed is not 32 bytes of 0x-hex".into()))?;
            (from_mini_secret(&seed[..]).map_err(bad)?, Source::Seed)
        } else if let Some(private) = &file.private_key {
            let raw = hex_bytes(private)
                .filter(|b| b.len() == 64)
                .ok_or_else(|| bad("privateKey is not 64 bytes of 0x-hex".into()))?;
            let secret = SecretKey::from_bytes(&raw)
                .map_err(|_| bad("privateKey is not an sr25519 secret key".into()))?;
            (secret.to_keypair(), Source::PrivateKey)
        } else if file.ss58_address.is_some() || file.public_key.is_some() {
            return Err(bad(
                "it holds only a public key (like coldkeypub.txt or <hotkey>pub.txt); give the hotkey file itself".into(),
            ));
        } else {
            return Err(bad("no secretPhrase, secretSeed or privateKey".into()));
        };
        let public = keypair.public.to_bytes();
        let ss58 = ss58::encode(SS58_PREFIX, &public);
        for (field, value) in [
            ("publicKey", &file.public_key),
            ("accountId", &file.account_id),
        ] {
            if let Some(v) = value {
                if hex_bytes(v).as_deref().map(Vec::as_slice) != Some(&public[..]) {
                    return Err(bad(format!(
                        "the key derived from its secret is {ss58}, but its {field} says otherwise; the file is inconsistent"
                    )));
                }
            }
        }
        if let Some(addr) = &file.ss58_address {
            let (_, key) = ss58::decode(addr).map_err(|e| bad(e.to_string()))?;
            if key != public {
                return Err(bad(format!(
                    "the key derived from its secret is {ss58}, but its ss58Address is {addr}"
                )));
            }
        }
        Ok((Hotkey { keypair, ss58 }, source))
    }

    /// A hotkey from a 32-byte seed (tests and development accounts).
    pub fn from_seed(seed: [u8; 32]) -> Result<Hotkey> {
        let keypair = from_mini_secret(&seed).map_err(Error::Format)?;
        let ss58 = ss58::encode(SS58_PREFIX, &keypair.public.to_bytes());
        Ok(Hotkey { keypair, ss58 })
    }

    /// The SS58 address (prefix 42).
    pub fn ss58(&self) -> &str {
        &self.ss58
    }

    /// The hotkey the configuration names (`miner.hotkey_file` or the systemd credential
    /// `hotkey`), checked against `miner.hotkey_ss58`. Every problem is a configuration error
    /// that says what to fix.
    pub fn configured(
        config: &crate::config::Config,
    ) -> std::result::Result<Hotkey, crate::config::ConfigError> {
        use crate::config::ConfigError;
        let Some(path) = config.miner.hotkey_path() else {
            return Err(ConfigError::new(
                "miner.hotkey_file",
                "(unset)",
                "the hotkey is needed: LoadCredential=hotkey:/path under systemd, or miner.hotkey_file",
            ));
        };
        forbid_core_dumps();
        let hotkey = Hotkey::load_private(&path, config.miner.allow_readable_hotkey).map_err(
            |e| match e {
                Error::Exposed(why) => ConfigError::new(
                    "miner.allow_readable_hotkey",
                    "false",
                    format!("{why}, or set miner.allow_readable_hotkey = true to accept it"),
                ),
                e => ConfigError::new("miner.hotkey_file", path.display(), e.to_string()),
            },
        )?;
        if let Some(expected) = &config.miner.hotkey_ss58 {
            if expected != hotkey.ss58() {
                return Err(ConfigError::new(
                    "miner.hotkey_ss58",
                    expected,
                    format!("the hotkey file {} is {}", path.display(), hotkey.ss58()),
                ));
            }
        }
        Ok(hotkey)
    }

    /// The 32-byte public key (the chain's AccountId).
    pub fn public_key(&self) -> [u8; 32] {
        self.keypair.public.to_bytes()
    }

    /// sr25519 signature (signing context `substrate`) over `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.keypair
            .sign(schnorrkel::signing_context(SIGNING_CONTEXT).bytes(message))
            .to_bytes()
    }
}

/// A warning when other users can read a key file, else `None`.
pub fn permissions_warning(path: &Path) -> Option<String> {
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    readable_by_others(path, mode)
}

/// Why a key file of this mode is exposed (its group or others have any access), with the
/// command that fixes it; `None` when only its owner can use it.
fn readable_by_others(path: &Path, mode: u32) -> Option<String> {
    let mode = mode & 0o777;
    (mode & 0o077 != 0).then(|| {
        format!(
            "hotkey file {} can be read by other users (mode {mode:03o}): run `chmod 600 {}`",
            path.display(),
            path.display()
        )
    })
}

/// Reads a keyfile into memory that is wiped when dropped, with the mode of the file read (taken
/// from the open descriptor, so it is the file's and not a swapped path's).
fn read_keyfile(path: &Path) -> Result<(Zeroizing<Vec<u8>>, u32)> {
    let file = std::fs::File::open(path).map_err(|e| Error::io("cannot read", path, e))?;
    let meta = file
        .metadata()
        .map_err(|e| Error::io("cannot read", path, e))?;
    if !meta.is_file() || meta.len() > MAX_KEYFILE_BYTES {
        return Err(Error::Format(format!(
            "hotkey file {}: not a regular file of at most {MAX_KEYFILE_BYTES} bytes",
            path.display()
        )));
    }
    // Sized up front so the buffer never reallocates (a reallocation would leave a copy behind).
    let mut bytes = Zeroizing::new(Vec::with_capacity(MAX_KEYFILE_BYTES as usize + 1));
    file.take(MAX_KEYFILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io("cannot read", path, e))?;
    Ok((bytes, meta.permissions().mode()))
}

/// Turns core dumps off for this process (`RLIMIT_CORE` 0), as the units' `LimitCORE=0` does,
/// so a crash outside systemd cannot write the key to disk either.
pub fn forbid_core_dumps() {
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit with a valid pointer to an initialised struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) } != 0 {
        tracing::warn!(
            "cannot turn core dumps off: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Checks an sr25519 signature by `public_key` over `message`.
pub fn verify(signature: &[u8; 64], message: &[u8], public_key: &[u8; 32]) -> bool {
    let (Ok(sig), Ok(key)) = (
        Signature::from_bytes(signature),
        PublicKey::from_bytes(public_key),
    ) else {
        return false;
    };
    key.verify_simple(SIGNING_CONTEXT, message, &sig).is_ok()
}

/// A 32-byte mini secret key expanded as substrate does (`ExpansionMode::Ed25519`).
fn from_mini_secret(seed: &[u8]) -> std::result::Result<Keypair, String> {
    MiniSecretKey::from_bytes(seed)
        .map(|m| m.expand_to_keypair(ExpansionMode::Ed25519))
        .map_err(|_| "not a 32-byte sr25519 seed".to_string())
}

/// substrate-bip39 `mini_secret_from_entropy` with no password: PBKDF2-HMAC-SHA512 over the
/// mnemonic's *entropy* (not the BIP39 seed of its words), salt `"mnemonic"`, 2048 rounds; the
/// first 32 bytes are the mini secret key.
fn seed_from_phrase(phrase: &str) -> Option<Zeroizing<[u8; 32]>> {
    // Mnemonic wipes itself on drop (bip39's `zeroize` feature); the rest is wiped here.
    let mnemonic = bip39::Mnemonic::parse_normalized(phrase.trim()).ok()?;
    let (entropy, len) = mnemonic.to_entropy_array();
    let entropy = Zeroizing::new(entropy);
    let mut seed = Zeroizing::new([0u8; 64]);
    pbkdf2::pbkdf2::<hmac::Hmac<sha2::Sha512>>(&entropy[..len], b"mnemonic", 2048, &mut *seed)
        .ok()?;
    let mut mini = Zeroizing::new([0u8; 32]);
    mini.copy_from_slice(&seed[..32]);
    Some(mini)
}

/// Hex (with or without `0x`) to bytes that are wiped when dropped: it decodes secrets.
fn hex_bytes(s: &str) -> Option<Zeroizing<Vec<u8>>> {
    hex::decode(s.trim().strip_prefix("0x").unwrap_or(s.trim()))
        .ok()
        .map(Zeroizing::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    }

    /// The well-known development phrase: `//Alice` is derived from it by a hard junction, so
    /// the bare phrase's account is checked against the value substrate's tools print.
    const DEV_PHRASE: &str =
        "bottom drive obey lake curtain smoke basket hold race lonely fit walk";

    #[test]
    fn phrase_seed_and_private_key_agree_and_sign() {
        let d = tempfile::tempdir().unwrap();
        let p = write(&d, "hk", &format!("{{\"secretPhrase\": \"{DEV_PHRASE}\"}}"));
        let (hk, src) = Hotkey::load_with_source(&p).unwrap();
        assert_eq!(src, Source::Phrase);
        // `subkey inspect "bottom drive …"`: the dev phrase's own account.
        assert_eq!(
            hk.ss58(),
            "5DfhGyQdFobKM8NsWvEeAKk5EQQgYe9AydgJ7rMB6E1EqRzV"
        );
        let sig = hk.sign(b"hello");
        assert!(verify(&sig, b"hello", &hk.public_key()));
        assert!(!verify(&sig, b"hellO", &hk.public_key()));

        let seed = [7u8; 32];
        let from_seed = Hotkey::from_seed(seed).unwrap();
        let p = write(
            &d,
            "seed",
            &format!(
                "{{\"secretSeed\": \"0x{}\", \"ss58Address\": \"{}\"}}",
                hex::encode(seed),
                from_seed.ss58()
            ),
        );
        assert_eq!(Hotkey::load(&p).unwrap().ss58(), from_seed.ss58());
    }

    #[test]
    fn matches_bittensor_wallet_keys_and_signatures() {
        // Made with bittensor_wallet 4.1.1: Keypair.create_from_seed("07" * 32), sign(b"hello").
        let hk = Hotkey::from_seed([7u8; 32]).unwrap();
        assert_eq!(
            hk.ss58(),
            "5EsNLFaGe9XK5LzWH3i6eC2Wqv6YqZS1442N1C4yeSdP6uxy"
        );
        let sig: [u8; 64] = hex::decode("b83422e12f280d52a1ef8a6d787f7a520d593ad4a32f9597f212279b7e4b2f16fe92d610d73439b55b3793ef4a54cf7e11f0032bb22d4e84c0d5820d1426d98e")
            .unwrap()
            .try_into()
            .unwrap();
        assert!(verify(&sig, b"hello", &hk.public_key()));
        assert!(!verify(&sig, b"hello!", &hk.public_key()));
    }

    /// A daemon refuses a hotkey file its group or others can read, naming the key that accepts
    /// it and the exact `chmod` to run, and never printing the secret; with the key set, or the
    /// file at 0600 / 0400, it loads.
    #[test]
    fn a_daemon_refuses_a_hotkey_file_others_can_read() {
        let d = tempfile::tempdir().unwrap();
        let seed = format!("{{\"secretSeed\": \"0x{}\"}}", "07".repeat(32));
        let p = write(&d, "hk", &seed);
        let mut config = crate::config::Config::default();
        config.miner.hotkey_file = Some(p.clone());
        for mode in [0o640, 0o604, 0o644, 0o660] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = Hotkey::configured(&config).unwrap_err();
            let text = err.to_string();
            assert_eq!(err.key, "miner.allow_readable_hotkey", "{text}");
            assert!(
                text.contains(&format!("`chmod 600 {}`", p.display())),
                "{mode:o}: {text}"
            );
            assert!(!text.contains("0707"), "{text}");
            assert!(matches!(
                Hotkey::load_private(&p, false),
                Err(Error::Exposed(_))
            ));
        }
        config.miner.allow_readable_hotkey = true;
        assert_eq!(
            Hotkey::configured(&config).unwrap().ss58(),
            "5EsNLFaGe9XK5LzWH3i6eC2Wqv6YqZS1442N1C4yeSdP6uxy"
        );
        config.miner.allow_readable_hotkey = false;
        for mode in [0o600, 0o400] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            Hotkey::configured(&config).unwrap();
        }
        // minerctl's loader (an operator inspecting a file) only warns.
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        Hotkey::load(&p).unwrap();
        assert!(permissions_warning(&p).is_some());
    }

    #[test]
    fn refusals_say_what_is_wrong() {
        let d = tempfile::tempdir().unwrap();
        let e = |p: std::path::PathBuf| Hotkey::load(&p).unwrap_err().to_string();
        assert!(e(write(&d, "enc", "$NACLabcdef")).contains("encrypted"));
        assert!(e(write(
            &d,
            "pub",
            "{\"ss58Address\": \"5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY\"}"
        ))
        .contains("only a public key"));
        assert!(e(write(
            &d,
            "type",
            "{\"cryptoType\": 0, \"secretSeed\": \"0x00\"}"
        ))
        .contains("not sr25519"));
        assert!(e(write(
            &d,
            "mismatch",
            &format!(
                "{{\"secretPhrase\": \"{DEV_PHRASE}\", \"ss58Address\": \"5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY\"}}"
            )
        ))
        .contains("but its ss58Address is"));
        let msg = e(write(&d, "bad", "{\"secretSeed\": \"0x1234\"}"));
        assert!(
            msg.contains("secretSeed is not 32 bytes") && !msg.contains("1234"),
            "{msg}"
        );
    }
}
