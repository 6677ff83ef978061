//! The seed corpora, generated: real inputs of each parser (a signed request head, an encoded
//! image, a safetensors file, the example `miner.toml`, a keyfile as `bittensor_wallet` writes it,
//! commitments of each profile). `fuzz-driver --write-seeds fuzz/corpus` writes them; the files
//! are checked in so that cargo-fuzz and the stable driver start from the same place.

use std::path::Path;

use base64::Engine;
use taominer_core::formats::ss58;
use taominer_core::wallet::Hotkey;
use taominer_predictor::protocol;

/// `(target, file name, bytes)` for every seed.
pub fn seeds(repo_root: &Path) -> anyhow::Result<Vec<(&'static str, String, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut add = |target: &'static str, name: &str, bytes: Vec<u8>| {
        out.push((target, name.to_string(), bytes));
    };

    // A head signed as a validator's dendrite signs it (seed 0x01…01) for the seed-7 axon.
    let validator = Hotkey::from_seed([1u8; 32])?;
    let axon = Hotkey::from_seed([7u8; 32])?;
    let body_hash = protocol::sha3_hex("");
    let dendrite = protocol::Dendrite {
        hotkey: validator.ss58().to_string(),
        nonce: 1_764_720_000_000_000_000,
        uuid: "5d0c8a86-8a1f-11f0-9b4e-0242ac120002".into(),
        signature: None,
        version: Some(protocol::AXON_VERSION),
        ip: Some("203.0.113.7".into()),
    };
    let sig =
        validator.sign(protocol::request_message(&dendrite, axon.ss58(), &body_hash).as_bytes());
    let head = format!(
        "name: ImageSynapse\r\ntimeout: 12.0\r\ntotal_size: 0\r\nheader_size: 0\r\n\
         bt_header_axon_ip: 198.51.100.2\r\nbt_header_axon_port: 8091\r\nbt_header_axon_hotkey: {axon}\r\n\
         bt_header_dendrite_ip: 203.0.113.7\r\nbt_header_dendrite_version: {v}\r\n\
         bt_header_dendrite_nonce: {nonce}\r\nbt_header_dendrite_uuid: {uuid}\r\n\
         bt_header_dendrite_hotkey: {hotkey}\r\nbt_header_dendrite_signature: 0x{sig}\r\n\
         computed_body_hash: {body_hash}\r\n",
        axon = axon.ss58(),
        v = protocol::AXON_VERSION,
        nonce = dendrite.nonce,
        uuid = dendrite.uuid,
        hotkey = dendrite.hotkey,
        sig = hex::encode(sig),
    );
    add("axon_head", "signed-image-synapse", head.into_bytes());
    add(
        "axon_head",
        "minimal",
        format!(
            "bt_header_dendrite_hotkey: {}\nbt_header_dendrite_nonce: 1\nbt_header_dendrite_uuid: u\n",
            validator.ss58()
        )
        .into_bytes(),
    );

    // Images: a colour PNG, a grey PNG with alpha, a JPEG.
    let rgb = image::RgbImage::from_fn(12, 9, |x, y| {
        image::Rgb([(x * 20) as u8, (y * 25) as u8, 128])
    });
    let png = encode(
        &image::DynamicImage::ImageRgb8(rgb.clone()),
        image::ImageFormat::Png,
    )?;
    let la = image::GrayAlphaImage::from_fn(5, 7, |x, y| image::LumaA([(x * 40 + y) as u8, 200]));
    let grey = encode(
        &image::DynamicImage::ImageLumaA8(la),
        image::ImageFormat::Png,
    )?;
    let jpeg = encode(
        &image::DynamicImage::ImageRgb8(rgb),
        image::ImageFormat::Jpeg,
    )?;
    add("image", "rgb.png", png.clone());
    add("image", "grey-alpha.png", grey);
    add("image", "rgb.jpg", jpeg.clone());

    // Synapse bodies: ImageSynapse with each image, a SoundsRight competition synapse, feedback.
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    for (name, img) in [("image-png.json", &png), ("image-jpeg.json", &jpeg)] {
        let body = serde_json::json!({
            "name": "ImageSynapse", "timeout": 12.0, "total_size": 0, "header_size": 0,
            "dendrite": {"hotkey": validator.ss58(), "nonce": 1, "uuid": "u"},
            "axon": {}, "computed_body_hash": "", "required_hash_fields": [],
            "image": b64(img), "prediction": -1.0,
        });
        add("synapse_body", name, serde_json::to_vec(&body)?);
    }
    add(
        "synapse_body",
        "soundsright-competition.json",
        serde_json::to_vec(&serde_json::json!({
            "name": "Denoising_16kHz_Protocol", "subnet_version": 2001000, "data": null
        }))?,
    );
    add(
        "synapse_body",
        "soundsright-feedback.json",
        serde_json::to_vec(&serde_json::json!({
            "name": "FeedbackProtocol", "competition": "DENOISING_16000HZ",
            "data": {"score": 0.5, "metrics": {"PESQ": 2.1}},
            "best_models": [{"hf_model_namespace": "a", "hf_model_name": "b"}],
            "subnet_version": 2001000
        }))?,
    );

    // safetensors: one F32 vector, and a file with two tensors and metadata.
    add(
        "safetensors_header",
        "one-f32",
        safetensors(&[("w", "F32", &[4])]),
    );
    add(
        "safetensors_header",
        "two-with-metadata",
        safetensors(&[("embed.weight", "BF16", &[3, 2]), ("norm", "F32", &[])]),
    );
    add(
        "shard_index",
        "two-shards.json",
        br#"{"metadata": {"total_size": 40}, "weight_map": {"a.weight": "model-00001-of-00002.safetensors", "b.weight": "model-00002-of-00002.safetensors"}}"#.to_vec(),
    );

    // Configuration: the shipped example (every key), and an online SoundsRight miner.
    add(
        "config_toml",
        "miner.toml.example",
        std::fs::read(repo_root.join("units/miner.toml.example"))?,
    );
    add(
        "config_toml",
        "online-soundsright.toml",
        format!(
            "[miner]\noffline = false\nprofile = \"soundsright\"\nhotkey_ss58 = \"{}\"\n\
             chain_endpoint = \"ws://127.0.0.1:9944\"\n\n[publisher]\nrepo = \"me/denoiser\"\n\n\
             [hub]\nendpoint = \"https://huggingface.co\"\n\n[retry]\ninitial_ms = 100\n\n\
             [publisher.limits.\"2\"]\nmin_parameters = 0\n",
            axon.ss58()
        )
        .into_bytes(),
    );
    add(
        "config_set",
        "overrides",
        b"miner.netuid=9\npublisher.repo=\"alice/tiny\"\nminer.offline=true\ntrainer.lr=0.003\nminer.competitions=[\"2\", \"4\"]\n".to_vec(),
    );

    // Keyfiles as bittensor_wallet writes them: every field, a phrase only, public only, encrypted.
    let mini = schnorrkel::MiniSecretKey::from_bytes(&[7u8; 32])
        .map_err(|e| anyhow::anyhow!("mini secret: {e}"))?;
    let private = mini.expand(schnorrkel::ExpansionMode::Ed25519).to_bytes();
    let public = format!("0x{}", hex::encode(axon.public_key()));
    add(
        "keyfile",
        "full",
        serde_json::to_vec(&serde_json::json!({
            "accountId": public, "publicKey": public,
            "privateKey": format!("0x{}", hex::encode(private)),
            "secretPhrase": null, "secretSeed": format!("0x{}", "07".repeat(32)),
            "ss58Address": axon.ss58(), "cryptoType": 1,
        }))?,
    );
    add(
        "keyfile",
        "phrase",
        br#"{"secretPhrase": "bottom drive obey lake curtain smoke basket hold race lonely fit walk", "ss58Address": "5DfhGyQdFobKM8NsWvEeAKk5EQQgYe9AydgJ7rMB6E1EqRzV"}"#.to_vec(),
    );
    add(
        "keyfile",
        "public-only",
        serde_json::to_vec(
            &serde_json::json!({"accountId": public, "publicKey": public, "ss58Address": axon.ss58()}),
        )?,
    );
    add(
        "keyfile",
        "encrypted",
        b"$NACL\x00\x01\x02secretbox".to_vec(),
    );

    // Commitments: taoverse, legacy, coldint, SoundsRight; ids the parsers meet around them.
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let hash = "k2oYXKqiZrucvpgengXLeM1zKwsygOuURBK7b4+PB68=";
    for (name, s) in [
        ("taoverse", format!("alice:tiny:{commit}:{hash}:2")),
        ("legacy", format!("alice:tiny:{commit}:{hash}")),
        ("none-revision", format!("alice:tiny:None:{hash}:4")),
        ("coldint", format!("coldint:model:{commit}:{hash}:c00")),
        (
            "soundsright",
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".to_string(),
        ),
        ("repo", "namespace/name.v2".to_string()),
        ("competition", "DENOISING_16000HZ".to_string()),
    ] {
        add("commitment", name, s.into_bytes());
    }

    // SS58: Alice, the seed-7 key, a one-byte and a two-byte prefix.
    add(
        "ss58",
        "alice",
        b"5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY".to_vec(),
    );
    add("ss58", "seed7", axon.ss58().as_bytes().to_vec());
    add(
        "ss58",
        "prefix-0",
        ss58::encode(0, &axon.public_key()).into_bytes(),
    );
    add(
        "ss58",
        "prefix-1284",
        ss58::encode(1284, &axon.public_key()).into_bytes(),
    );
    Ok(out)
}

fn encode(img: &image::DynamicImage, format: image::ImageFormat) -> anyhow::Result<Vec<u8>> {
    let mut buf = std::io::Cursor::new(Vec::new());
    img.write_to(&mut buf, format)?;
    Ok(buf.into_inner())
}

/// A safetensors file with zero-filled tensors `(name, dtype, shape)` (dtypes of 2 or 4 bytes).
fn safetensors(tensors: &[(&str, &str, &[u64])]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut offset = 0u64;
    for (name, dtype, shape) in tensors {
        let size = if *dtype == "F32" { 4 } else { 2 };
        let len = shape.iter().product::<u64>() * size;
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len]}),
        );
        offset += len;
    }
    header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
    let mut h = serde_json::to_vec(&header).unwrap_or_default();
    h.resize(h.len().div_ceil(8) * 8, b' ');
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.resize(out.len() + offset as usize, 0);
    out
}
