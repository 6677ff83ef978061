//! The compute device a daemon runs on (`trainer.device`, `predictor.device`): `cpu`, `cuda` or
//! `cuda:N`. One type for both keys so that the string is parsed once, here, and the daemons
//! match on a value the compiler checks instead of comparing strings.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer, Unexpected};
use serde::{Deserialize, Serialize, Serializer};

/// What `cpu`, `cuda` and `cuda:N` mean.
const EXPECTED: &str = "\"cpu\", \"cuda\" or \"cuda:N\"";

/// A compute device as configured. Written and read as its string (`cuda:1`), so the TOML, the
/// flags and the logs keep the words users type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Device {
    /// The CPU.
    #[default]
    Cpu,
    /// A CUDA GPU: `cuda` (no ordinal given: the first GPU) or `cuda:N`.
    Cuda(Option<u32>),
}

impl Device {
    /// Whether this is a CUDA device.
    pub fn is_cuda(self) -> bool {
        matches!(self, Device::Cuda(_))
    }

    /// The CUDA ordinal to open (`cuda` is the first GPU, 0); `None` for the CPU.
    pub fn cuda_ordinal(self) -> Option<u32> {
        match self {
            Device::Cpu => None,
            Device::Cuda(n) => Some(n.unwrap_or(0)),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(None) => f.write_str("cuda"),
            Device::Cuda(Some(n)) => write!(f, "cuda:{n}"),
        }
    }
}

impl FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> Result<Device, String> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(None)),
            _ => s
                .strip_prefix("cuda:")
                // Digits only: `u32::from_str` would also take "+1".
                .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|n| n.parse::<u32>().ok())
                .map(|n| Device::Cuda(Some(n)))
                .ok_or_else(|| format!("unknown device {s:?}; allowed: {EXPECTED}")),
        }
    }
}

impl Serialize for Device {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Device {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Device, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|_| de::Error::invalid_value(Unexpected::Str(&s), &EXPECTED))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_once_and_print_as_written() {
        for (text, device) in [
            ("cpu", Device::Cpu),
            ("cuda", Device::Cuda(None)),
            ("cuda:0", Device::Cuda(Some(0))),
            ("cuda:3", Device::Cuda(Some(3))),
        ] {
            assert_eq!(text.parse::<Device>(), Ok(device));
            assert_eq!(device.to_string(), text);
        }
        assert_eq!(Device::Cuda(None).cuda_ordinal(), Some(0));
        assert_eq!(Device::Cuda(Some(2)).cuda_ordinal(), Some(2));
        assert_eq!(Device::Cpu.cuda_ordinal(), None);
        // What used to fall back to GPU 0 silently is refused.
        for bad in [
            "tpu", "cuda:", "cuda:x", "cuda:+1", "cuda:-1", "CPU", "cuda:1:2", "",
        ] {
            let e = bad.parse::<Device>().unwrap_err();
            assert!(e.contains("cuda:N"), "{bad}: {e}");
        }
    }
}
