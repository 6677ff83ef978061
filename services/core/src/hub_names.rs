//! File names that a Hugging Face Hub lists (`rfilename` of `model_info`, an index's shard
//! names), checked before any of them is joined to a local directory.
//!
//! Both the publisher (re-downloading its own commit) and the trainer (downloading other miners'
//! models) write what the Hub names under a directory of theirs. `Path::join` with an absolute
//! name replaces the directory, and `..` climbs out of it, so a hostile or compromised Hub (or a
//! repository someone else controls) could otherwise write anywhere the daemon can. One rule,
//! in one place: a name is a relative, `/`-separated path of ordinary components.

use crate::error::{Error, Result};

/// Longest name accepted (the Hub's own limit on paths is far below this).
pub const MAX_NAME_BYTES: usize = 1024;

/// Accepts `name` if it is a relative path of ordinary components: not empty, not absolute, no
/// empty, `.` or `..` component, no backslash, no control character. The error quotes the name
/// escaped and shortened, so a hostile name cannot forge log lines.
pub fn check(name: &str) -> Result<()> {
    let refuse = |why: &str| {
        let shown: String = name.chars().take(120).collect();
        Err(Error::Format(format!(
            "the Hub listed an unsafe file name {shown:?}: {why}; refusing the whole listing"
        )))
    };
    if name.is_empty() {
        return refuse("empty");
    }
    if name.len() > MAX_NAME_BYTES {
        return refuse("too long");
    }
    if name.starts_with('/') {
        return refuse("absolute path");
    }
    if name.contains('\\') {
        return refuse("backslash");
    }
    if name.chars().any(char::is_control) {
        return refuse("control character");
    }
    for part in name.split('/') {
        match part {
            "" => return refuse("empty path component"),
            "." | ".." => return refuse("`.` or `..` component"),
            _ => {}
        }
    }
    Ok(())
}

/// Checks every name of a listing; the first bad one refuses them all.
pub fn check_all<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<()> {
    names.into_iter().try_for_each(check)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves: ordinary repository paths pass, and every way out of the download directory
    /// (absolute, `..`, empty components, backslashes, control characters) is refused.
    #[test]
    fn only_plain_relative_names_pass() {
        for ok in [
            "config.json",
            "model-00001-of-00002.safetensors",
            "app/main.py",
            ".gitattributes",
            "a/b/c..d/e...txt",
        ] {
            assert!(check(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../escape",
            "a/../../escape",
            "a/..",
            "./config.json",
            "a//b",
            "a/",
            "a\\..\\b",
            "bad\nname",
            "nul\0byte",
            "esc\u{1b}[31m",
        ] {
            let e = check(bad).unwrap_err().to_string();
            assert!(e.contains("unsafe file name"), "{bad:?}: {e}");
        }
        assert!(check(&"a".repeat(MAX_NAME_BYTES + 1)).is_err());
        assert!(check_all(["config.json", "../x"]).is_err());
        assert!(check_all(["config.json", "x/y"]).is_ok());
        // The error shows the name escaped: no raw newline reaches a log line.
        assert!(!check("x\ny").unwrap_err().to_string().contains('\n'));
    }
}
