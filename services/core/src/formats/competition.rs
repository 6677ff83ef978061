//! The vocabulary of competitions, shared by every subnet: what a competition is and what its
//! validators require of a model ([`Limits`]). Each subnet's own table and limits are in its
//! module under [`crate::subnet`] (competitions are data, docs/architecture.md §6, following the
//! upstream repositories at the commits named in `docs/protocols.md`); `[miner] competitions`
//! replaces a table.
//!
//! Each active LLM competition has [`Limits`]: what a validator checks before it evaluates a
//! model (total bytes, architecture, parameter count, tokenizer). The publisher checks them before
//! uploading anything, so a commitment never points at a model validators will reject.
//! `[publisher.limits."<id>"]` overrides them field by field.

/// One competition of a subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Competition {
    /// The id as configured and as written in the commitment (taoverse integers, coldint strings,
    /// SoundsRight task names).
    pub id: &'static str,
    /// Upstream's name for it.
    pub name: &'static str,
    /// Whether validators still score it.
    pub active: bool,
}

/// A table entry (the subnets' tables are `const`).
pub(crate) const fn c(id: &'static str, name: &'static str, active: bool) -> Competition {
    Competition { id, name, active }
}

/// GiB, as upstream writes its byte limits (`15 * 1024**3`).
pub(crate) const GIB: u64 = 1 << 30;

/// What the validators of a competition require of a model before they evaluate it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// The sum of the sizes of every file in the repository at the committed revision
    /// (`sum(s.size for s in model_info.siblings)`), `.gitattributes` and README included.
    pub max_bytes: u64,
    /// Smallest allowed parameter count (`min_model_parameter_size`).
    pub min_parameters: u64,
    /// Largest allowed parameter count (`max_model_parameter_size`).
    pub max_parameters: u64,
    /// Allowed `config.json` `architectures[0]` values (transformers class names).
    pub architectures: Vec<String>,
    /// What the competition expects of the tokenizer.
    pub tokenizer: TokenizerRule,
}

/// How a competition treats the tokenizer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenizerRule {
    /// Validators evaluate with this tokenizer, whatever the repository holds (SN9, SN37).
    Fixed(String),
    /// The repository must carry its own tokenizer (coldint: `free_tokenizer`, pushed first).
    Required,
    /// No rule.
    Any,
}

impl TokenizerRule {
    /// Reads the configuration form: `"required"`, `"any"`, or the name of a fixed tokenizer.
    pub fn parse(s: &str) -> TokenizerRule {
        match s {
            "required" => TokenizerRule::Required,
            "any" | "" => TokenizerRule::Any,
            other => TokenizerRule::Fixed(other.to_string()),
        }
    }
}

impl std::fmt::Display for TokenizerRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenizerRule::Fixed(name) => write!(f, "fixed ({name}, set by validators)"),
            TokenizerRule::Required => f.write_str("required in the repository"),
            TokenizerRule::Any => f.write_str("any"),
        }
    }
}

/// A [`Limits`] from upstream-style constants: bytes, (min, max) parameters, architectures.
pub(crate) fn limits(
    max_bytes: u64,
    params: (u64, u64),
    architectures: &[&str],
    tokenizer: TokenizerRule,
) -> Limits {
    Limits {
        max_bytes,
        min_parameters: params.0,
        max_parameters: params.1,
        architectures: architectures.iter().map(|a| a.to_string()).collect(),
        tokenizer,
    }
}
