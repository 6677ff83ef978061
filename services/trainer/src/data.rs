//! Training text → token sequences: the tokenizer, the sources, the held-out eval split, packing,
//! and the seeded order in which batches are drawn.
//!
//! Documents are split into train and eval by a hash of their content (not by position), so the
//! eval set is the same whatever order the files are listed in, and an eval document never feeds
//! training. Each split is tokenized, documents joined with the end-of-text token, and packed into
//! fixed-length sequences. An epoch draws `pages_per_epoch` pages of `page_sequences` sequences
//! (all when 0), like upstream's page sampling, in an order that depends only on the seed and the
//! epoch number: the data position in a checkpoint is then just (epoch, batch).

use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::rng::Rng;

/// A tokenizer and the files that describe it to transformers.
pub struct Tok {
    pub inner: tokenizers::Tokenizer,
    /// `tokenizer.json` as written next to the model.
    json: String,
    pub eos_token: Option<String>,
    pub eos_id: Option<u32>,
    pub bos_token: Option<String>,
    pub bos_id: Option<u32>,
}

/// Tokens tried, in order, as the end-of-text marker put between documents.
const EOS_NAMES: &[&str] = &[
    "<|endoftext|>",
    "</s>",
    "<eos>",
    "<|end_of_text|>",
    "<|eot_id|>",
];
const BOS_NAMES: &[&str] = &["<s>", "<bos>", "<|begin_of_text|>"];

impl Tok {
    /// Reads a `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Tok> {
        let json = fs::read_to_string(path).map_err(Error::io("cannot read tokenizer", path))?;
        Self::from_json(json).map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))
    }

    fn from_json(json: String) -> Result<Tok> {
        let inner: tokenizers::Tokenizer = json
            .parse()
            .map_err(|e| Error::Tokenizer(format!("not a tokenizer.json: {e}")))?;
        let find = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| inner.token_to_id(n).map(|id| (n.to_string(), id)))
        };
        let (eos_token, eos_id) = find(EOS_NAMES).unzip();
        let (bos_token, bos_id) = find(BOS_NAMES).unzip();
        Ok(Tok {
            inner,
            json,
            eos_token,
            eos_id,
            bos_token,
            bos_id,
        })
    }

    /// The built-in tokenizer: byte-level, one token per byte plus `<|endoftext|>` (257 tokens).
    /// It needs no file and no download, and any UTF-8 text round-trips through it.
    pub fn builtin_bytes() -> Result<Tok> {
        let vocab: serde_json::Map<String, serde_json::Value> = (0u32..256)
            .map(|b| (byte_char(b as u8).to_string(), b.into()))
            .collect();
        let json = serde_json::json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": [{"id": 256, "content": "<|endoftext|>", "single_word": false,
                "lstrip": false, "rstrip": false, "normalized": false, "special": true}],
            "normalizer": null,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false,
                "trim_offsets": true, "use_regex": false},
            "post_processor": null,
            "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
                "use_regex": false},
            "model": {"type": "BPE", "dropout": null, "unk_token": null,
                "continuing_subword_prefix": null, "end_of_word_suffix": null, "fuse_unk": false,
                "byte_fallback": false, "ignore_merges": false, "vocab": vocab, "merges": []},
        });
        Self::from_json(json.to_string())
    }

    /// Tokens including added ones: ids run below this.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Refuses a tokenizer whose ids would index past the model's embedding table.
    pub fn check_fits(&self, model_vocab: usize) -> Result<()> {
        let n = self.vocab_size();
        if n > model_vocab {
            return Err(Error::Tokenizer(format!(
                "the tokenizer has {n} tokens but the model's vocab_size is {model_vocab}: token ids would fall outside the embedding table"
            )));
        }
        Ok(())
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// `tokenizer.json`, `tokenizer_config.json` and `special_tokens_map.json`, which is what
    /// `AutoTokenizer`/`PreTrainedTokenizerFast` read.
    pub fn write_files(&self, dir: &Path) -> Result<()> {
        let write = |name: &str, text: String| -> Result<()> {
            let path = dir.join(name);
            fs::write(&path, text).map_err(Error::io("cannot write", &path))?;
            fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(Error::io("cannot sync", &path))
        };
        write("tokenizer.json", self.json.clone())?;
        let mut special = serde_json::Map::new();
        if let Some(e) = &self.eos_token {
            special.insert("eos_token".into(), e.clone().into());
        }
        if let Some(b) = &self.bos_token {
            special.insert("bos_token".into(), b.clone().into());
        }
        let mut config = special.clone();
        config.insert("tokenizer_class".into(), "PreTrainedTokenizerFast".into());
        config.insert("clean_up_tokenization_spaces".into(), false.into());
        write(
            "tokenizer_config.json",
            serde_json::to_string_pretty(&config).unwrap_or_default() + "\n",
        )?;
        write(
            "special_tokens_map.json",
            serde_json::to_string_pretty(&special).unwrap_or_default() + "\n",
        )
    }
}

/// GPT-2's byte-to-character map, which byte-level tokenizers use.
fn byte_char(b: u8) -> char {
    let printable = |b: u8| (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
    if printable(b) {
        return b as char;
    }
    let offset = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + offset).unwrap_or('?')
}

/// Reads documents from files and directories of `.txt`/`.md` (split on blank lines), `.jsonl`
/// (one JSON object per line, `text_field`) and `.parquet` (`text_field` column).
/// `beat` is called as reading progresses (a large corpus takes longer than the watchdog's
/// patience).
pub fn read_documents(paths: &[PathBuf], text_field: &str, beat: &dyn Fn()) -> Result<Vec<String>> {
    let files = source_files(paths)?;
    let mut docs = Vec::new();
    for f in files {
        match extension(&f).as_str() {
            "jsonl" => read_jsonl(&f, text_field, &mut docs)?,
            "parquet" => read_parquet(&f, text_field, &mut docs, beat)?,
            _ => read_text(&f, &mut docs)?,
        }
        beat();
    }
    Ok(docs)
}

/// The files `read_documents` reads, in order.
pub fn source_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in paths {
        collect_files(p, &mut files)?;
    }
    if files.is_empty() {
        return Err(Error::Data(
            "no training files (trainer.data lists files or directories of .txt, .md, .jsonl, .parquet)".into(),
        ));
    }
    Ok(files)
}

fn extension(p: &Path) -> String {
    p.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default()
}

fn collect_files(p: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let meta = fs::metadata(p).map_err(Error::io("cannot read training data", p))?;
    if meta.is_file() {
        out.push(p.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = fs::read_dir(p)
        .map_err(Error::io("cannot list training data", p))?
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for e in entries {
        if e.is_dir() {
            collect_files(&e, out)?;
        } else if matches!(extension(&e).as_str(), "txt" | "md" | "jsonl" | "parquet") {
            out.push(e);
        }
    }
    Ok(())
}

fn read_text(path: &Path, docs: &mut Vec<String>) -> Result<()> {
    let text = fs::read_to_string(path).map_err(Error::io("cannot read training text", path))?;
    let text = text.replace("\r\n", "\n");
    docs.extend(
        text.split("\n\n")
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(str::to_string),
    );
    Ok(())
}

fn read_jsonl(path: &Path, field: &str, docs: &mut Vec<String>) -> Result<()> {
    let text = fs::read_to_string(path).map_err(Error::io("cannot read training text", path))?;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| Error::file(path, format!("line {}: not JSON: {e}", i + 1)))?;
        let Some(s) = v.get(field).and_then(|s| s.as_str()) else {
            return Err(Error::file(
                path,
                format!(
                    "line {}: no string field {field:?} (trainer.text_field)",
                    i + 1
                ),
            ));
        };
        if !s.trim().is_empty() {
            docs.push(s.to_string());
        }
    }
    Ok(())
}

fn read_parquet(path: &Path, field: &str, docs: &mut Vec<String>, beat: &dyn Fn()) -> Result<()> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::RowAccessor;
    let file = fs::File::open(path).map_err(Error::io("cannot open", path))?;
    let reader = SerializedFileReader::new(file).map_err(|e| Error::file(path, e))?;
    let schema = reader.metadata().file_metadata().schema_descr();
    if !schema.columns().iter().any(|c| c.name() == field) {
        let names: Vec<&str> = schema.columns().iter().map(|c| c.name()).collect();
        return Err(Error::file(
            path,
            format!("no column {field:?} (trainer.text_field); columns: {names:?}"),
        ));
    }
    // Project to the one column: the row reader then skips the others' pages.
    let projection = parquet::schema::types::Type::group_type_builder("schema")
        .with_fields(
            schema
                .root_schema()
                .get_fields()
                .iter()
                .filter(|f| f.name() == field)
                .cloned()
                .collect(),
        )
        .build()
        .map_err(|e| Error::file(path, e))?;
    let rows = reader
        .get_row_iter(Some(projection))
        .map_err(|e| Error::file(path, e))?;
    for (i, row) in rows.enumerate() {
        if i % 4096 == 0 {
            beat();
        }
        let row = row.map_err(|e| Error::file(path, e))?;
        match row.get_string(0) {
            Ok(s) if !s.trim().is_empty() => docs.push(s.clone()),
            Ok(_) => {}
            Err(_) => {} // null text: nothing to train on
        }
    }
    Ok(())
}

/// Whether a document is held out for evaluation: a hash of its content, so the split is stable.
pub fn is_eval(doc: &str, permille: u32) -> bool {
    let h = Sha256::digest(doc.as_bytes());
    let v = u64::from_le_bytes(h[..8].try_into().unwrap_or_default());
    (v % 1000) < permille as u64
}

/// What the token cache depends on: each source file's path, size and modification time, the
/// tokenizer, and the settings that shape the split and the packing.
fn cache_key(
    sources: &[PathBuf],
    tok: &Tok,
    cfg: &taominer_core::config::TrainerConfig,
) -> Result<String> {
    let mut h = Sha256::new();
    for f in source_files(sources)? {
        let meta = fs::metadata(&f).map_err(Error::io("cannot read training data", &f))?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        h.update(f.to_string_lossy().as_bytes());
        h.update([0]);
        h.update(meta.len().to_le_bytes());
        h.update(mtime.to_le_bytes());
    }
    h.update(tok.json.as_bytes());
    h.update(cfg.text_field.as_bytes());
    h.update([0]);
    h.update(cfg.eval_permille.to_le_bytes());
    h.update((cfg.sequence_length as u64).to_le_bytes());
    Ok(hex::encode(&h.finalize()[..16]))
}

/// `[train len u64][eval len u64][train u32…][eval u32…][sha256 of all before]`, little-endian.
fn encode_streams(train: &[u32], eval: &[u32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + 4 * (train.len() + eval.len()) + 32);
    out.extend((train.len() as u64).to_le_bytes());
    out.extend((eval.len() as u64).to_le_bytes());
    for t in train.iter().chain(eval.iter()) {
        out.extend(t.to_le_bytes());
    }
    let digest = Sha256::digest(&out);
    out.extend(digest);
    out
}

fn decode_streams(bytes: &[u8]) -> Option<(Vec<u32>, Vec<u32>)> {
    let (body, digest) = bytes.split_at_checked(bytes.len().checked_sub(32)?)?;
    if Sha256::digest(body).as_slice() != digest {
        return None;
    }
    let n_train = u64::from_le_bytes(body.get(..8)?.try_into().ok()?) as usize;
    let n_eval = u64::from_le_bytes(body.get(8..16)?.try_into().ok()?) as usize;
    let words = body.get(16..)?;
    if words.len() != 4 * (n_train + n_eval) {
        return None;
    }
    let mut all = words
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
    let train: Vec<u32> = all.by_ref().take(n_train).collect();
    let eval: Vec<u32> = all.collect();
    Some((train, eval))
}

/// Packed token sequences for training and evaluation.
pub struct Dataset {
    pub seq_len: usize,
    train: Vec<u32>,
    eval: Vec<u32>,
    pub eval_limit: usize,
    pub page_sequences: usize,
    pub pages_per_epoch: usize,
    pub seed: u64,
    /// sha256 of both token streams: a resumed run says when its data changed.
    pub fingerprint: String,
    /// The largest token id in either stream (checked against a model's vocabulary).
    pub max_token: u32,
}

impl Dataset {
    /// The packed dataset of `sources`, from the token cache in `cache_dir` when the files,
    /// the tokenizer and the packing settings are unchanged (a restart then skips reading and
    /// tokenizing), else built and cached.
    pub fn load_or_build(
        sources: &[PathBuf],
        tok: &Tok,
        cfg: &taominer_core::config::TrainerConfig,
        cache_dir: &Path,
        beat: &dyn Fn(),
    ) -> Result<Dataset> {
        let key = cache_key(sources, tok, cfg)?;
        let path = cache_dir.join(format!("{key}.tokens"));
        if let Ok(bytes) = fs::read(&path) {
            if let Some((train, eval)) = decode_streams(&bytes) {
                tracing::info!(
                    "data: {} training and {} eval tokens from the token cache",
                    train.len(),
                    eval.len()
                );
                return Ok(Self::from_streams(train, eval, cfg));
            }
            tracing::warn!("ignoring a damaged token cache {}", path.display());
        }
        let docs = read_documents(sources, &cfg.text_field, beat)?;
        let ds = Self::build(&docs, tok, cfg, beat)?;
        taominer_core::daemon::store::ensure_dir(cache_dir)?;
        // Only the newest cache is kept: an old one is a corpus nobody trains on any more.
        if let Ok(entries) = fs::read_dir(cache_dir) {
            for e in entries.flatten() {
                let _ = fs::remove_file(e.path());
            }
        }
        taominer_core::daemon::store::write_atomic(&path, &encode_streams(&ds.train, &ds.eval))?;
        Ok(ds)
    }

    fn from_streams(
        train: Vec<u32>,
        eval: Vec<u32>,
        cfg: &taominer_core::config::TrainerConfig,
    ) -> Dataset {
        let mut h = Sha256::new();
        let mut max_token = 0;
        for &t in train.iter().chain(eval.iter()) {
            h.update(t.to_le_bytes());
            max_token = max_token.max(t);
        }
        h.update((cfg.sequence_length as u64).to_le_bytes());
        Dataset {
            max_token,
            seq_len: cfg.sequence_length,
            train,
            eval,
            eval_limit: cfg.eval_sequences,
            page_sequences: cfg.page_sequences,
            pages_per_epoch: cfg.pages_per_epoch,
            seed: cfg.seed,
            fingerprint: hex::encode(h.finalize()),
        }
    }

    pub fn build(
        docs: &[String],
        tok: &Tok,
        cfg: &taominer_core::config::TrainerConfig,
        beat: &dyn Fn(),
    ) -> Result<Dataset> {
        let seq_len = cfg.sequence_length;
        let (mut train, mut eval) = (Vec::new(), Vec::new());
        let (mut n_train, mut n_eval) = (0usize, 0usize);
        for (i, d) in docs.iter().enumerate() {
            if i % 256 == 0 {
                beat();
            }
            let (stream, count) = if is_eval(d, cfg.eval_permille) {
                (&mut eval, &mut n_eval)
            } else {
                (&mut train, &mut n_train)
            };
            stream.extend(tok.encode(d)?);
            if let Some(e) = tok.eos_id {
                stream.push(e);
            }
            *count += 1;
        }
        let train_seqs = train.len() / seq_len;
        let eval_seqs = eval.len() / seq_len;
        if eval_seqs == 0 {
            return Err(Error::Data(format!(
                "the eval split ({n_eval} documents, {} tokens) is shorter than one sequence of {seq_len} tokens: add text or raise trainer.eval_permille",
                eval.len()
            )));
        }
        if train_seqs < cfg.batch_size {
            return Err(Error::Data(format!(
                "{n_train} training documents make {} tokens, {train_seqs} sequences of {seq_len}; one batch needs {}",
                train.len(),
                cfg.batch_size
            )));
        }
        train.truncate(train_seqs * seq_len);
        eval.truncate(eval_seqs * seq_len);
        tracing::info!(
            "data: {n_train} training documents → {train_seqs} sequences of {seq_len}; {n_eval} eval documents → {eval_seqs} sequences"
        );
        Ok(Self::from_streams(train, eval, cfg))
    }

    /// The packed training split: `train_sequences()` whole sequences of `seq_len` ids (what the
    /// external engine is given; it never sees the held-out split).
    pub fn train_tokens(&self) -> &[u32] {
        &self.train
    }

    pub fn train_sequences(&self) -> usize {
        self.train.len() / self.seq_len
    }

    /// The order of training sequences in `epoch`: seeded page draw, then a seeded shuffle.
    pub fn epoch_order(&self, epoch: u64) -> Vec<usize> {
        let n = self.train_sequences();
        let mut rng = Rng::new(self.seed.wrapping_mul(0x9e37_79b9).wrapping_add(epoch));
        let mut pages: Vec<Vec<usize>> = (0..n)
            .collect::<Vec<_>>()
            .chunks(self.page_sequences)
            .map(<[usize]>::to_vec)
            .collect();
        rng.shuffle(&mut pages);
        if self.pages_per_epoch > 0 {
            pages.truncate(self.pages_per_epoch);
        }
        let mut order: Vec<usize> = pages.into_iter().flatten().collect();
        rng.shuffle(&mut order);
        order
    }

    /// Token ids of training sequences `idx`, flattened `[len(idx) * seq_len]`.
    pub fn train_batch(&self, idx: &[usize]) -> Vec<u32> {
        let l = self.seq_len;
        idx.iter()
            .flat_map(|&i| self.train[i * l..(i + 1) * l].iter().copied())
            .collect()
    }

    /// The eval sequences scored each evaluation (the first `eval_limit`; all when 0).
    pub fn eval_sequences(&self) -> Vec<&[u32]> {
        let all: Vec<&[u32]> = self.eval.chunks(self.seq_len).collect();
        match self.eval_limit {
            0 => all,
            n => all.into_iter().take(n).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_tokenizer_round_trips_and_has_eos() {
        let tok = Tok::builtin_bytes().unwrap();
        assert_eq!(tok.vocab_size(), 257);
        assert_eq!(tok.eos_id, Some(256));
        let ids = tok.encode("héllo wörld\n\t!").unwrap();
        assert_eq!(ids.len(), "héllo wörld\n\t!".len());
        assert_eq!(ids[0], b'h' as u32);
        let back = tok.inner.decode(&ids, false).unwrap();
        assert_eq!(back, "héllo wörld\n\t!");
        assert!(tok.check_fits(256).is_err());
        assert!(tok.check_fits(257).is_ok());
    }

    #[test]
    fn split_is_by_content_and_roughly_proportional() {
        let docs: Vec<String> = (0..4000).map(|i| format!("document {i}")).collect();
        let eval = docs.iter().filter(|d| is_eval(d, 50)).count();
        assert!((120..280).contains(&eval), "{eval}");
        assert_eq!(is_eval("x", 50), is_eval("x", 50));
    }

    #[test]
    fn token_cache_round_trips_and_detects_damage() {
        let bytes = encode_streams(&[1, 2, 3], &[4, 5]);
        assert_eq!(decode_streams(&bytes), Some((vec![1, 2, 3], vec![4, 5])));
        let mut bad = bytes.clone();
        bad[20] ^= 1;
        assert_eq!(decode_streams(&bad), None);
        assert_eq!(decode_streams(&bytes[..bytes.len() - 1]), None);
    }

    #[test]
    fn epoch_order_is_seeded_and_sampled() {
        let tok = Tok::builtin_bytes().unwrap();
        let docs: Vec<String> = (0..300)
            .map(|i| format!("doc {i} {}", "z".repeat(i % 50)))
            .collect();
        let cfg = taominer_core::config::TrainerConfig {
            sequence_length: 16,
            batch_size: 2,
            page_sequences: 10,
            pages_per_epoch: 3,
            ..Default::default()
        };
        let ds = Dataset::build(&docs, &tok, &cfg, &|| {}).unwrap();
        let a = ds.epoch_order(0);
        assert_eq!(a.len(), 30);
        assert_eq!(a, ds.epoch_order(0));
        assert_ne!(a, ds.epoch_order(1));
    }
}
