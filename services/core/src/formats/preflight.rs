//! Competition pre-flight: the checks a validator makes before evaluating a model, made before a
//! single byte is uploaded.
//!
//! A model that validators will refuse (too many bytes, wrong architecture, parameter count out
//! of range, no safetensors weights) costs the miner an upload, a commitment and an evaluation
//! window. Everything here reads only small files: `config.json`, the safetensors headers and
//! directory listings, never tensor data, so it is cheap enough for `minerctl publish --dry-run`.
//!
//! Every failure names the limit and the measured value; all failures are reported together.

use std::fmt;
use std::path::Path;

use crate::formats::competition::{Limits, TokenizerRule};
use crate::formats::{hash, safetensors};
use crate::{Error, Result};

/// What a subnet publishes, which decides the structural checks (each subnet names its own in
/// `crate::subnet`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// A transformers directory: `config.json` and safetensors weights (SN9, SN37, SN29).
    Transformers,
    /// A container repository validators build from its `Dockerfile` (SN105).
    Container,
    /// Nothing is checked about the files (a subnet that publishes no models).
    Unchecked,
}

/// Files `AutoTokenizer.from_pretrained` looks for; any of them makes a tokenizer.
pub const TOKENIZER_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
    "spiece.model",
    "chat_template.jinja",
    "chat_template.json",
];

/// Files that make a tokenizer loadable on their own.
const TOKENIZER_CORE: &[&str] = &["tokenizer.json", "tokenizer.model", "vocab.json"];

/// What the pre-flight measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub repo: String,
    pub competition: String,
    pub files: usize,
    pub bytes: u64,
    /// `config.json` `architectures[0]`, for transformers profiles.
    pub architecture: Option<String>,
    /// From the safetensors headers, for transformers profiles.
    pub parameters: Option<u64>,
    /// `model.safetensors`, or the index and its shard count.
    pub weights: Option<String>,
    pub tokenizer_files: Vec<String>,
    /// The limits checked, when the competition has any.
    pub limits: Option<Limits>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "repo         {}", self.repo)?;
        writeln!(f, "competition  {}", self.competition)?;
        write!(f, "files        {}, {} bytes", self.files, self.bytes)?;
        match &self.limits {
            Some(l) => writeln!(f, " (limit {})", l.max_bytes)?,
            None => writeln!(f)?,
        }
        if let Some(a) = &self.architecture {
            writeln!(f, "architecture {a}")?;
        }
        if let Some(p) = self.parameters {
            match &self.limits {
                Some(l) => writeln!(
                    f,
                    "parameters   {p} (allowed {}..={})",
                    l.min_parameters, l.max_parameters
                )?,
                None => writeln!(f, "parameters   {p}")?,
            }
        }
        if let Some(w) = &self.weights {
            writeln!(f, "weights      {w}")?;
        }
        if let Some(l) = &self.limits {
            let present = if self.tokenizer_files.is_empty() {
                "no tokenizer files".to_string()
            } else {
                self.tokenizer_files.join(", ")
            };
            writeln!(f, "tokenizer    {}; {present}", l.tokenizer)?;
        }
        Ok(())
    }
}

/// Runs every check of `layout` for publishing `dir` to `repo` in `competition`. `limits` are
/// the competition's (from [`crate::config::PublisherConfig::limits_for`]); without them only
/// the structural checks run. `failures` are problems the caller found already (the subnet's
/// rules on the repository id: `Subnet::preflight`), reported first with the rest.
pub fn check(
    dir: &Path,
    layout: Layout,
    repo: &str,
    competition: &str,
    limits: Option<&Limits>,
    mut failures: Vec<String>,
) -> Result<Report> {
    let entries = hash::walk(dir, &|_| false)?;
    let mut bytes = 0u64;
    let mut names = Vec::with_capacity(entries.len());
    for e in &entries {
        bytes += std::fs::metadata(&e.path)
            .map_err(|err| Error::io("cannot stat", &e.path, err))?
            .len();
        names.push(e.rel.clone());
    }
    let tokenizer_files: Vec<String> = names
        .iter()
        .filter(|n| TOKENIZER_FILES.contains(&n.as_str()))
        .cloned()
        .collect();
    let mut report = Report {
        repo: repo.to_string(),
        competition: competition.to_string(),
        files: entries.len(),
        bytes,
        architecture: None,
        parameters: None,
        weights: None,
        tokenizer_files,
        limits: limits.cloned(),
    };

    if layout == Layout::Transformers {
        match architecture(dir) {
            Ok(a) => report.architecture = Some(a),
            Err(e) => failures.push(e.to_string()),
        }
        match safetensors::model_tensors(dir) {
            Ok(tensors) => {
                report.parameters = Some(tensors.values().map(|t| t.numel()).sum());
                report.weights = Some(weights_kind(dir));
            }
            Err(e) => failures.push(format!(
                "weights: {e} (validators load safetensors only: model.safetensors, or model.safetensors.index.json with its shards)"
            )),
        }
    }

    if layout == Layout::Container {
        failures.extend(container_problems(dir)?);
    }

    if let Some(l) = limits {
        // The Hub adds `.gitattributes` (about 1.5 KB) on creation; the check after the upload
        // sums every file exactly as validators do.
        if bytes > l.max_bytes {
            failures.push(format!(
                "too large: {bytes} bytes in {} files, the competition allows at most {} bytes (max_bytes)",
                entries.len(),
                l.max_bytes
            ));
        }
        if let Some(a) = &report.architecture {
            if !l.architectures.iter().any(|x| x == a) {
                failures.push(format!(
                    "architecture {a} is not allowed; allowed: {}",
                    l.architectures.join(", ")
                ));
            }
        }
        if let Some(p) = report.parameters {
            if p < l.min_parameters || p > l.max_parameters {
                failures.push(format!(
                    "parameter count {p} is outside the allowed range {}..={} (min_parameters..=max_parameters)",
                    l.min_parameters, l.max_parameters
                ));
            }
        }
        if l.tokenizer == TokenizerRule::Required
            && !report
                .tokenizer_files
                .iter()
                .any(|f| TOKENIZER_CORE.contains(&f.as_str()))
        {
            failures.push(format!(
                "no tokenizer: the competition requires the repository to carry one ({})",
                TOKENIZER_CORE.join(" or ")
            ));
        }
    }

    if failures.is_empty() {
        Ok(report)
    } else {
        Err(Error::Model(format!(
            "pre-flight for competition {competition} failed: {}",
            failures.join("; ")
        )))
    }
}

/// SoundsRight directory hashes validators refuse (upstream `build.py` `forbidden_model_hashes`:
/// the subnet's own baseline models).
const FORBIDDEN_DIRECTORY_HASHES: &[&str] = &[
    "ENZIdw0H8Vbb79lXDQKBqqReXIj2ycgOX1Ob0QoexAU=",
    "Mbx0++bk5q6n+rdVlUblElnturj/zRobTk61WFVHmgg=",
];

/// Files (sha256 hex) validators refuse anywhere in a SoundsRight repository (upstream
/// `validation.py` `verify_directory_files`).
const FORBIDDEN_FILE_HASHES: &[&str] = &[
    "e3875747b5646092d5c556bae68e5af639e2c1f45f009c669f379cd4d415cbd8",
    "2ec94cf546ef0a9d66f90364bd735820c78d9a214133588e90ce9ce01cd8a73b",
    "b770d098538dec1c06c6917bf327a7922ef326321aa23678f071d86c5f39716f",
];

/// The port the container API listens on; validators rewrite this string to `6500 + uid` in
/// every file of the repository before they build it.
pub const CONTAINER_PORT: &str = "6500";

/// What SoundsRight validators (and upstream's `verify_miner_model.py`) would refuse in a model
/// repository: no `Dockerfile`; a Dockerfile that runs as root (no `USER`, `USER root`/`0`, or a
/// `USER $VAR` that resolves to either or to nothing) or mentions `bittensor` (upstream's
/// "sensitive config"); no `6500` anywhere for the port rewrite to find; a forbidden baseline
/// file or directory hash. Each problem is one line; empty means the repository passes.
pub fn container_problems(dir: &Path) -> Result<Vec<String>> {
    let entries = hash::walk(dir, &|name| name == ".git")?;
    let mut problems = Vec::new();
    // The first `Dockerfile` in os.walk order, as validators pick it.
    match entries.iter().find(|e| e.rel.rsplit('/').next() == Some("Dockerfile")) {
        None => problems.push(
            "no Dockerfile: validators build the model as a container from the repository's Dockerfile"
                .to_string(),
        ),
        Some(df) => {
            let text = std::fs::read_to_string(&df.path)
                .map_err(|e| Error::io("cannot read", &df.path, e))?;
            if let Some(why) = dockerfile_runs_as_root(&text) {
                problems.push(format!(
                    "{}: the container would run as root ({why}); add a USER line with an unprivileged user",
                    df.rel
                ));
            }
            if let Some(line) = text.lines().find(|l| l.contains("bittensor")) {
                problems.push(format!(
                    "{}: mentions bittensor ({:?}), which validators treat as reaching for wallet files",
                    df.rel,
                    line.trim()
                ));
            }
        }
    }
    let mut port_seen = false;
    for e in &entries {
        let bytes = std::fs::read(&e.path).map_err(|err| Error::io("cannot read", &e.path, err))?;
        if !port_seen
            && bytes
                .windows(CONTAINER_PORT.len())
                .any(|w| w == CONTAINER_PORT.as_bytes())
        {
            port_seen = true;
        }
        let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
        if FORBIDDEN_FILE_HASHES.contains(&digest.as_str()) {
            problems.push(format!(
                "{} is one of the files validators refuse (sha256 {digest})",
                e.rel
            ));
        }
    }
    if !port_seen {
        problems.push(format!(
            "no file mentions port {CONTAINER_PORT}: the container API must listen on {CONTAINER_PORT} (validators rewrite \"{CONTAINER_PORT}\" to 6500+uid in every file)"
        ));
    }
    let content = hash::content_hash(dir)?;
    if FORBIDDEN_DIRECTORY_HASHES.contains(&content.as_str()) {
        problems.push(format!(
            "the repository is a SoundsRight baseline model (content hash {content}), which validators refuse"
        ));
    }
    Ok(problems)
}

/// Why a Dockerfile's container would run as root, or `None`. Follows upstream's
/// `check_dockerfile_for_root_user` (any USER line naming root or 0 counts; no USER line means
/// root), resolving `$VAR`/`${VAR}` through earlier `ARG`/`ENV` lines; an unresolved variable
/// counts as root, erring on the side of caution as upstream does.
pub fn dockerfile_runs_as_root(text: &str) -> Option<String> {
    let mut vars: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    let mut user_seen = false;
    for line in text.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        let keyword = words.next().unwrap_or("").to_ascii_uppercase();
        let rest = line[keyword.len().min(line.len())..].trim();
        match keyword.as_str() {
            "ARG" | "ENV" => {
                if let Some((k, v)) = rest.split_once('=') {
                    let v = v.trim().trim_matches('"').trim_matches('\'');
                    vars.insert(k.trim().to_string(), v.to_string());
                } else if keyword == "ENV" {
                    // `ENV NAME value`
                    let mut kv = rest.splitn(2, char::is_whitespace);
                    if let (Some(k), Some(v)) = (kv.next(), kv.next()) {
                        vars.insert(k.to_string(), v.trim().to_string());
                    }
                }
            }
            "USER" => {
                user_seen = true;
                let spec = rest.split_whitespace().next().unwrap_or("");
                // `user:group`: the user part decides.
                let user_part = spec.split(':').next().unwrap_or("");
                let resolved = match user_part.strip_prefix('$') {
                    Some(var) => {
                        let var = var.trim_start_matches('{').trim_end_matches('}');
                        match vars.get(var) {
                            Some(v) => v.clone(),
                            None => {
                                return Some(format!("USER {spec} names an undefined variable"))
                            }
                        }
                    }
                    None => user_part.to_string(),
                };
                if resolved.is_empty()
                    || resolved == "root"
                    || resolved == "0"
                    || resolved.starts_with('$')
                {
                    return Some(format!("USER {spec}"));
                }
            }
            _ => {}
        }
    }
    (!user_seen).then(|| "no USER line; the default user is root".to_string())
}

/// `config.json` `architectures[0]`.
fn architecture(dir: &Path) -> Result<String> {
    let path = dir.join("config.json");
    let text = std::fs::read(&path).map_err(|e| Error::io("cannot read", &path, e))?;
    let config: serde_json::Value = serde_json::from_slice(&text)
        .map_err(|e| Error::Model(format!("config.json is not valid JSON: {e}")))?;
    config
        .get("architectures")
        .and_then(|a| a.get(0))
        .and_then(|a| a.as_str())
        .map(str::to_string)
        .ok_or_else(|| {
            Error::Model(
                "config.json has no \"architectures\" list; transformers needs it to pick the model class"
                    .into(),
            )
        })
}

fn weights_kind(dir: &Path) -> String {
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let shards = std::fs::read(&index)
            .ok()
            .and_then(|t| serde_json::from_slice::<serde_json::Value>(&t).ok())
            .and_then(|v| {
                v.get("weight_map").and_then(|m| m.as_object()).map(|m| {
                    m.values()
                        .filter_map(|s| s.as_str())
                        .collect::<std::collections::BTreeSet<_>>()
                        .len()
                })
            })
            .unwrap_or(0);
        format!("model.safetensors.index.json ({shards} shards)")
    } else {
        "model.safetensors".into()
    }
}

/// The files of a repository that validators download (and so hash) for a layout:
/// taoverse and coldint hash the snapshot that `AutoModelForCausalLM.from_pretrained(...,
/// use_safetensors=True)` and `AutoTokenizer.from_pretrained` fill: `config.json`,
/// `generation_config.json`, the weights (`model.safetensors`, or the index and the shards it
/// names) and the tokenizer files present. SoundsRight clones the whole repository.
///
/// `repo_files` is the repository's file list at the revision; `index_shards` the shard names
/// of `model.safetensors.index.json` when the repository has no `model.safetensors`.
pub fn validator_files(
    layout: Layout,
    repo_files: &[String],
    index_shards: &[String],
) -> Vec<String> {
    if layout != Layout::Transformers {
        return repo_files.to_vec();
    }
    let has = |n: &str| repo_files.iter().any(|f| f == n);
    let mut out: Vec<String> = Vec::new();
    for f in ["config.json", "generation_config.json"] {
        if has(f) {
            out.push(f.into());
        }
    }
    if has("model.safetensors") {
        out.push("model.safetensors".into());
    } else if has("model.safetensors.index.json") {
        out.push("model.safetensors.index.json".into());
        for s in index_shards {
            if has(s) && !out.contains(s) {
                out.push(s.clone());
            }
        }
    }
    for f in TOKENIZER_FILES {
        if has(f) {
            out.push((*f).into());
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor_file(path: &Path, shape: &[u64]) {
        let n: u64 = shape.iter().product();
        let header =
            serde_json::json!({"w": {"dtype": "F32", "shape": shape, "data_offsets": [0, n * 4]}});
        let mut h = serde_json::to_vec(&header).unwrap();
        h.resize(h.len().div_ceil(8) * 8, b' ');
        let mut out = (h.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(&h);
        out.resize(out.len() + (n * 4) as usize, 0);
        std::fs::write(path, out).unwrap();
    }

    fn model(dir: &Path, arch: &str, shape: &[u64]) {
        std::fs::write(
            dir.join("config.json"),
            format!("{{\"architectures\": [\"{arch}\"]}}"),
        )
        .unwrap();
        tensor_file(&dir.join("model.safetensors"), shape);
    }

    fn limits() -> Limits {
        Limits {
            max_bytes: 10_000,
            min_parameters: 100,
            max_parameters: 1000,
            architectures: vec!["LlamaForCausalLM".into()],
            tokenizer: TokenizerRule::Any,
        }
    }

    #[test]
    fn a_model_inside_the_limits_passes_and_is_measured() {
        let d = tempfile::tempdir().unwrap();
        model(d.path(), "LlamaForCausalLM", &[10, 20]);
        let r = check(
            d.path(),
            Layout::Transformers,
            "me/m",
            "2",
            Some(&limits()),
            vec![],
        )
        .unwrap();
        assert_eq!(r.parameters, Some(200));
        assert_eq!(r.architecture.as_deref(), Some("LlamaForCausalLM"));
        assert_eq!(r.weights.as_deref(), Some("model.safetensors"));
        assert!(r.to_string().contains("allowed 100..=1000"));
    }

    #[test]
    fn each_violation_names_the_limit_and_the_measured_value() {
        let d = tempfile::tempdir().unwrap();
        model(d.path(), "GPT2LMHeadModel", &[50, 60]);
        // Through the subnet's rules, so its repository-id rule is reported with the rest.
        let e = crate::subnet::Profile::Pretraining
            .rules()
            .preflight(
                d.path(),
                "abcdefghijklmnopqrst/uvwxyzabcdefghijklmn",
                "2",
                Some(&limits()),
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("between 3 and 38 characters (it has 41)"), "{e}");
        assert!(e.contains("at most 10000 bytes"), "{e}");
        assert!(
            e.contains("architecture GPT2LMHeadModel is not allowed"),
            "{e}"
        );
        assert!(e.contains("parameter count 3000 is outside"), "{e}");

        let mut l = limits();
        l.tokenizer = TokenizerRule::Required;
        let d = tempfile::tempdir().unwrap();
        model(d.path(), "LlamaForCausalLM", &[10, 20]);
        let e = check(
            d.path(),
            Layout::Transformers,
            "me/m",
            "c00",
            Some(&l),
            vec![],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("no tokenizer"), "{e}");
        std::fs::write(d.path().join("tokenizer.json"), b"{}").unwrap();
        assert!(check(
            d.path(),
            Layout::Transformers,
            "me/m",
            "c00",
            Some(&l),
            vec![]
        )
        .is_ok());
    }

    #[test]
    fn dockerfiles_that_run_as_root_are_refused() {
        let root = |t: &str| dockerfile_runs_as_root(t).is_some();
        assert!(root("FROM python:3.11\nCMD [\"x\"]\n"));
        assert!(root("FROM x\nUSER root\n"));
        assert!(root("FROM x\nUSER 0:0\n"));
        assert!(root("FROM x\nUSER app\nUSER root\n"));
        assert!(root("FROM x\nARG U=root\nUSER $U\n"));
        assert!(root("FROM x\nUSER $NOBODY\n"));
        assert!(!root("FROM x\nUSER 10002:10002\n"));
        assert!(!root("FROM x\nARG U=app\nUSER ${U}\n"));
        // Upstream's own test expects this to pass (its code has a bug that refuses it).
        assert!(!root("FROM x\nENV USER_ID=nobody\nUSER $USER_ID\n"));
    }

    #[test]
    fn a_soundsright_repository_needs_a_safe_dockerfile_and_the_port() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let problems = container_problems(d).unwrap();
        assert!(
            problems.iter().any(|p| p.starts_with("no Dockerfile")),
            "{problems:?}"
        );
        std::fs::write(
            d.join("Dockerfile"),
            "FROM python:3.11\nRUN pip install bittensor\n",
        )
        .unwrap();
        let problems = container_problems(d).unwrap();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("run as root")));
        assert!(problems.iter().any(|p| p.contains("mentions bittensor")));
        assert!(problems.iter().any(|p| p.contains("port 6500")));
        std::fs::write(
            d.join("Dockerfile"),
            "FROM python:3.11\nUSER 10002:10002\nEXPOSE 6500\n",
        )
        .unwrap();
        assert_eq!(container_problems(d).unwrap(), Vec::<String>::new());
        let e = check(
            d,
            Layout::Container,
            "me/enh",
            "DENOISING_16000HZ",
            None,
            vec![],
        )
        .unwrap();
        assert_eq!(e.files, 1);
        std::fs::write(d.join("Dockerfile"), "FROM x\n").unwrap();
        let e = check(
            d,
            Layout::Container,
            "me/enh",
            "DENOISING_16000HZ",
            None,
            vec![],
        )
        .unwrap_err();
        assert!(e.to_string().contains("run as root"), "{e}");
    }

    #[test]
    fn missing_weights_are_refused() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("config.json"),
            br#"{"architectures":["LlamaForCausalLM"]}"#,
        )
        .unwrap();
        std::fs::write(d.path().join("pytorch_model.bin"), b"x").unwrap();
        let e = check(
            d.path(),
            Layout::Transformers,
            "me/m",
            "2",
            Some(&limits()),
            vec![],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("no model.safetensors"), "{e}");
    }

    #[test]
    fn validators_fetch_weights_config_and_tokenizer_only() {
        let files: Vec<String> = [
            ".gitattributes",
            "README.md",
            "config.json",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "model.safetensors.index.json",
            "tokenizer.json",
            "training_args.bin",
        ]
        .map(String::from)
        .to_vec();
        let shards = vec![
            "model-00001-of-00002.safetensors".to_string(),
            "model-00002-of-00002.safetensors".to_string(),
        ];
        assert_eq!(
            validator_files(Layout::Transformers, &files, &shards),
            vec![
                "config.json",
                "model-00001-of-00002.safetensors",
                "model-00002-of-00002.safetensors",
                "model.safetensors.index.json",
                "tokenizer.json"
            ]
        );
        assert_eq!(validator_files(Layout::Container, &files, &[]), files);
    }
}
