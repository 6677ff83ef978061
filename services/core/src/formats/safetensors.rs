//! safetensors headers: tensor names, dtypes and shapes, read without touching tensor data.
//!
//! Validators count a model's parameters after loading it; a miner should know the count before
//! uploading, so that a model outside a competition's range is refused locally rather than after
//! a multi-gigabyte upload. A safetensors file starts with a little-endian u64 header length and a
//! JSON header `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}`; this
//! module reads and checks only that header (offsets consistent with dtype and shape, inside the
//! file), for single files and for sharded checkpoints with `model.safetensors.index.json`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Read;
use std::path::Path;

use serde::Deserialize;

use crate::error::IoContext;
use crate::{Error, Result};

/// Largest header accepted (the format's own reference loader uses 100 MB).
const MAX_HEADER: u64 = 100_000_000;

/// One tensor as the header describes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TensorInfo {
    pub dtype: String,
    pub shape: Vec<u64>,
    pub data_offsets: (u64, u64),
}

impl TensorInfo {
    /// Number of elements (1 for a scalar); `u64::MAX` if the shape overflows (`read_header`
    /// refuses such a header, so a counted tensor never has one).
    pub fn numel(&self) -> u64 {
        self.shape
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d))
            .unwrap_or(u64::MAX)
    }
}

/// Bytes per element of a safetensors dtype.
fn dtype_size(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" => 1,
        "U16" | "I16" | "F16" | "BF16" => 2,
        "U32" | "I32" | "F32" => 4,
        "U64" | "I64" | "F64" => 8,
        _ => return None,
    })
}

/// Reads and checks the header of one safetensors file.
pub fn read_header(path: &Path) -> Result<BTreeMap<String, TensorInfo>> {
    let bad = |why: String| {
        Error::Model(format!(
            "{}: not a valid safetensors file: {why}",
            path.display()
        ))
    };
    let mut file = File::open(path).ctx("cannot open", path)?;
    let file_len = file.metadata().ctx("cannot stat", path)?.len();
    let mut len_bytes = [0u8; 8];
    file.read_exact(&mut len_bytes)
        .map_err(|_| bad("shorter than its 8-byte header length".into()))?;
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > MAX_HEADER || 8 + header_len > file_len {
        return Err(bad(format!(
            "header length {header_len} does not fit the file"
        )));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header).ctx("cannot read", path)?;
    let raw: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&header)
        .map_err(|e| bad(format!("header is not a JSON object: {e}")))?;
    let data_len = file_len - 8 - header_len;
    let mut tensors = BTreeMap::new();
    for (name, value) in raw {
        if name == "__metadata__" {
            continue;
        }
        let info: TensorInfo =
            serde_json::from_value(value).map_err(|e| bad(format!("tensor {name:?}: {e}")))?;
        let size = dtype_size(&info.dtype)
            .ok_or_else(|| bad(format!("tensor {name:?}: unknown dtype {}", info.dtype)))?;
        let (begin, end) = info.data_offsets;
        // Checked at every step: a shape whose product overflows must not wrap to a small size.
        let expected = info.shape.iter().try_fold(size, |n, &d| n.checked_mul(d));
        if end < begin || end > data_len || expected != Some(end - begin) {
            return Err(bad(format!(
                "tensor {name:?}: offsets {begin}..{end} do not match {} {:?} in {data_len} data bytes",
                info.dtype, info.shape
            )));
        }
        tensors.insert(name, info);
    }
    Ok(tensors)
}

#[derive(Deserialize)]
struct ShardIndex {
    weight_map: BTreeMap<String, String>,
}

/// The shard files a `model.safetensors.index.json` names, sorted and once each; each must be a
/// plain file name in the index's directory.
pub fn index_shards(index_path: &Path) -> Result<Vec<String>> {
    Ok(read_index(index_path)?
        .weight_map
        .into_values()
        .collect::<BTreeSet<String>>()
        .into_iter()
        .collect())
}

fn read_index(index_path: &Path) -> Result<ShardIndex> {
    let text = std::fs::read(index_path).ctx("cannot read", index_path)?;
    let index: ShardIndex = serde_json::from_slice(&text).map_err(|e| {
        Error::Model(format!(
            "{}: not a valid shard index: {e}",
            index_path.display()
        ))
    })?;
    if let Some(bad) = index
        .weight_map
        .values()
        .find(|s| s.contains('/') || s.starts_with('.'))
    {
        return Err(Error::Model(format!(
            "{}: shard name {bad:?} must be a file in the same directory",
            index_path.display()
        )));
    }
    Ok(index)
}

/// The tensors of a model directory: `model.safetensors`, or the shards that
/// `model.safetensors.index.json` names, checked against the index.
pub fn model_tensors(dir: &Path) -> Result<BTreeMap<String, TensorInfo>> {
    let single = dir.join("model.safetensors");
    let index_path = dir.join("model.safetensors.index.json");
    if index_path.is_file() {
        let index = read_index(&index_path)?;
        let shards: BTreeSet<&String> = index.weight_map.values().collect();
        let mut all = BTreeMap::new();
        for shard in shards {
            let tensors = read_header(&dir.join(shard))?;
            for (name, info) in tensors {
                if index.weight_map.get(&name) != Some(shard) {
                    return Err(Error::Model(format!(
                        "{shard}: tensor {name:?} is not mapped to this shard in the index"
                    )));
                }
                all.insert(name, info);
            }
        }
        if let Some(missing) = index.weight_map.keys().find(|k| !all.contains_key(*k)) {
            return Err(Error::Model(format!(
                "{}: tensor {missing:?} is in the index but in no shard",
                index_path.display()
            )));
        }
        Ok(all)
    } else if single.is_file() {
        read_header(&single)
    } else {
        Err(Error::Model(format!(
            "{}: no model.safetensors and no model.safetensors.index.json",
            dir.display()
        )))
    }
}

/// Total parameter count of a model directory, from headers only.
pub fn parameter_count(dir: &Path) -> Result<u64> {
    Ok(model_tensors(dir)?.values().map(TensorInfo::numel).sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a safetensors file with the given (name, dtype, shape) tensors, zero-filled.
    fn write(path: &Path, tensors: &[(&str, &str, &[u64])]) {
        let mut header = serde_json::Map::new();
        let mut offset = 0u64;
        for (name, dtype, shape) in tensors {
            let len = shape.iter().product::<u64>() * dtype_size(dtype).unwrap();
            header.insert(
                name.to_string(),
                serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len]}),
            );
            offset += len;
        }
        header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
        let mut h = serde_json::to_vec(&header).unwrap();
        h.resize(h.len().div_ceil(8) * 8, b' ');
        let mut out = (h.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(&h);
        out.resize(out.len() + offset as usize, 0);
        std::fs::write(path, out).unwrap();
    }

    #[test]
    fn counts_parameters_of_single_and_sharded_models() {
        let d = tempfile::tempdir().unwrap();
        write(
            &d.path().join("model.safetensors"),
            &[("a", "BF16", &[4, 8]), ("b", "F32", &[3])],
        );
        assert_eq!(parameter_count(d.path()).unwrap(), 35);

        let s = tempfile::tempdir().unwrap();
        write(
            &s.path().join("m-1.safetensors"),
            &[("a", "F16", &[10, 10])],
        );
        write(
            &s.path().join("m-2.safetensors"),
            &[("b", "F16", &[5]), ("c", "I64", &[])],
        );
        let index = serde_json::json!({"metadata": {}, "weight_map": {"a": "m-1.safetensors", "b": "m-2.safetensors", "c": "m-2.safetensors"}});
        std::fs::write(
            s.path().join("model.safetensors.index.json"),
            index.to_string(),
        )
        .unwrap();
        assert_eq!(parameter_count(s.path()).unwrap(), 106);
    }

    #[test]
    fn refuses_inconsistent_files() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("model.safetensors");
        write(&p, &[("a", "F32", &[4])]);
        let mut bytes = std::fs::read(&p).unwrap();
        bytes.truncate(bytes.len() - 1);
        std::fs::write(&p, &bytes).unwrap();
        assert!(read_header(&p).unwrap_err().to_string().contains("offsets"));
        std::fs::write(&p, b"\xff\xff\xff\xff\xff\xff\xff\x7f").unwrap();
        assert!(read_header(&p)
            .unwrap_err()
            .to_string()
            .contains("header length"));
        std::fs::remove_file(&p).unwrap();
        assert!(parameter_count(d.path())
            .unwrap_err()
            .to_string()
            .contains("no model.safetensors"));

        write(&d.path().join("m-1.safetensors"), &[("a", "F16", &[2])]);
        let index =
            serde_json::json!({"weight_map": {"a": "m-1.safetensors", "z": "m-1.safetensors"}});
        std::fs::write(
            d.path().join("model.safetensors.index.json"),
            index.to_string(),
        )
        .unwrap();
        assert!(parameter_count(d.path())
            .unwrap_err()
            .to_string()
            .contains("\"z\""));
    }
}
