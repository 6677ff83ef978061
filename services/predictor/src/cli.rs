//! `miner-predictor predict`: run a model on image files exactly as the axon would, without a
//! bus, a hotkey or a socket. For checking a model before it goes live, and for the tests that
//! compare our preprocessing and ONNX Runtime runs with Python's.

use std::io::Write;
use std::path::PathBuf;

use taominer_core::config::PredictorConfig;

use crate::error::{Error, Result};
use crate::model::{self, LoadOptions, Model};

/// Options of `predict`.
#[derive(Debug, Clone, clap::Args)]
pub struct PredictArgs {
    /// The ONNX model file.
    #[arg(long, value_name = "FILE")]
    pub model: PathBuf,
    /// JPEG or PNG files, one prediction each.
    #[arg(value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
    /// Raw float32 CHW tensors (little-endian) to run as they are, instead of images.
    #[arg(long = "tensor", value_name = "FILE")]
    pub tensors: Vec<PathBuf>,
    /// Write each image's preprocessed tensor here as raw little-endian float32 (one per image,
    /// named after it).
    #[arg(long, value_name = "DIR")]
    pub tensor_out: Option<PathBuf>,
    /// The ONNX Runtime library (else predictor.ort_library, $ORT_DYLIB_PATH, libonnxruntime.so).
    #[arg(long, value_name = "FILE")]
    pub ort_library: Option<PathBuf>,
}

/// Prints one JSON line per input: `{"input", "prediction", "model_version"}`.
pub fn predict(args: &PredictArgs, config: &PredictorConfig) -> Result<()> {
    let mut cfg = config.clone();
    if args.ort_library.is_some() {
        cfg.ort_library = args.ort_library.clone();
    }
    let library = model::runtime_library(&cfg);
    let model = Model::load(&library, &args.model, &LoadOptions::from_config(&cfg))?;
    if let Some(dir) = &args.tensor_out {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            context: format!("cannot create {}", dir.display()),
            source,
        })?;
    }
    let mut out = std::io::stdout().lock();
    let read = |p: &PathBuf| {
        std::fs::read(p).map_err(|source| Error::Io {
            context: format!("cannot read {}", p.display()),
            source,
        })
    };
    let mut run = |name: String, tensor: Vec<f32>| -> Result<()> {
        let p = model.predict(&tensor, 1)?[0];
        let line =
            serde_json::json!({"input": name, "prediction": p, "model_version": model.version});
        writeln!(out, "{line}").map_err(|source| Error::Io {
            context: "stdout".into(),
            source,
        })
    };
    for image in &args.images {
        let tensor = model.preprocess.from_encoded(&read(image)?)?;
        if let Some(dir) = &args.tensor_out {
            let name = image
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let bytes: Vec<u8> = tensor.iter().flat_map(|v| v.to_le_bytes()).collect();
            let target = dir.join(format!("{name}.f32"));
            std::fs::write(&target, bytes).map_err(|source| Error::Io {
                context: format!("cannot write {}", target.display()),
                source,
            })?;
        }
        run(image.display().to_string(), tensor)?;
    }
    for t in &args.tensors {
        let bytes = read(t)?;
        if bytes.len() != model.preprocess.len() * 4 {
            return Err(Error::BadImage(format!(
                "{} has {} bytes; the model takes 3x{}x{} float32 = {} bytes",
                t.display(),
                bytes.len(),
                model.preprocess.height,
                model.preprocess.width,
                model.preprocess.len() * 4
            )));
        }
        let tensor = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        run(t.display().to_string(), tensor)?;
    }
    Ok(())
}
