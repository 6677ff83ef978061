//! SS58 addresses (Substrate's base58 account encoding), checked so that a mistyped hotkey is an
//! error at the door instead of a secure hash that no validator will ever match.

use blake2::{Blake2b512, Digest};

use crate::{Error, Result};

/// Decodes an SS58 address into its network prefix and 32-byte public key, checking the checksum.
pub fn decode(address: &str) -> Result<(u16, [u8; 32])> {
    let bad = |why: &str| Error::Format(format!("{address:?} is not an SS58 address: {why}"));
    let data = bs58::decode(address)
        .into_vec()
        .map_err(|_| bad("not base58"))?;
    let (prefix, prefix_len) = match data.first() {
        Some(&b) if b < 64 => (u16::from(b), 1),
        Some(&b) if b < 128 => {
            let second = *data.get(1).ok_or_else(|| bad("too short"))?;
            // Two-byte prefixes pack 14 bits as described in the SS58 registry.
            let lower = (u16::from(b) << 2) | (u16::from(second) >> 6);
            let upper = u16::from(second & 0b0011_1111);
            ((lower & 0x00ff) | (upper << 8), 2)
        }
        _ => return Err(bad("unknown prefix")),
    };
    if data.len() != prefix_len + 32 + 2 {
        return Err(bad("wrong length for a 32-byte account"));
    }
    let body = &data[..prefix_len + 32];
    let mut hasher = Blake2b512::new();
    hasher.update(b"SS58PRE");
    hasher.update(body);
    let checksum = hasher.finalize();
    if checksum[..2] != data[prefix_len + 32..] {
        return Err(bad("checksum mismatch"));
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(&data[prefix_len..prefix_len + 32]);
    Ok((prefix, key))
}

/// Encodes a 32-byte public key as an SS58 address with `prefix` (42 for Bittensor).
pub fn encode(prefix: u16, key: &[u8; 32]) -> String {
    let mut data = if prefix < 64 {
        vec![prefix as u8]
    } else {
        // The two-byte form of the SS58 registry (prefixes 64..16383).
        let first = ((prefix & 0b0000_0000_1111_1100) as u8 >> 2) | 0b0100_0000;
        let second = ((prefix >> 8) as u8) | ((prefix & 0b0000_0000_0000_0011) as u8) << 6;
        vec![first, second]
    };
    data.extend_from_slice(key);
    let mut hasher = Blake2b512::new();
    hasher.update(b"SS58PRE");
    hasher.update(&data);
    let checksum = hasher.finalize();
    data.extend_from_slice(&checksum[..2]);
    bs58::encode(data).into_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alice_decodes_to_her_public_key() {
        let (prefix, key) = decode("5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY").unwrap();
        assert_eq!(prefix, 42);
        assert_eq!(
            hex::encode(key),
            "d43593c715fdd31c61141abd04a99fd6822c8558854ccde39a5684e7a56da27d"
        );
    }

    #[test]
    fn encoding_round_trips() {
        let (_, key) = decode("5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY").unwrap();
        assert_eq!(
            encode(42, &key),
            "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"
        );
        for prefix in [0u16, 2, 63, 64, 255, 1284, 16383] {
            assert_eq!(
                decode(&encode(prefix, &key)).unwrap(),
                (prefix, key),
                "{prefix}"
            );
        }
    }

    #[test]
    fn typos_are_caught() {
        assert!(decode("5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQZ").is_err());
        assert!(decode("5Grwva").is_err());
        assert!(decode("0OIl").is_err());
        assert!(decode("").is_err());
    }
}
