//! An ONNX model behind ONNX Runtime (`ort`, loaded at run time), checked at load against the
//! preprocessing it will be fed.
//!
//! The runtime library is found at run time (`predictor.ort_library`, else `$ORT_DYLIB_PATH`, else
//! the loader's `libonnxruntime.so`), so the build neither downloads nor links it; the PyPI
//! `onnxruntime` wheel's library works, and so does nixpkgs'. A model is read once into memory,
//! hashed (its version), committed to a session, and run once on a zero input before anyone is
//! told it loaded: a file that is not a model, has the wrong input, or produces no number is
//! refused with the reason and never serves.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::session::Session;
use ort::value::{Tensor, TensorElementType, ValueType};
use sha2::{Digest, Sha256};
use taominer_core::config::{Device, PredictorConfig};

use crate::error::{Error, Result};
use crate::preprocess::Preprocess;

/// The ONNX Runtime environment; there is one per process.
static RUNTIME: OnceLock<std::result::Result<ort::environment::Environment, String>> =
    OnceLock::new();

/// The library path in effect for a configuration.
pub fn runtime_library(config: &PredictorConfig) -> PathBuf {
    config
        .ort_library
        .clone()
        .or_else(|| {
            std::env::var_os("ORT_DYLIB_PATH")
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from("libonnxruntime.so"))
}

/// Loads the ONNX Runtime library once; later calls return the first outcome.
pub fn init_runtime(library: &Path) -> Result<&'static ort::environment::Environment> {
    let outcome = RUNTIME.get_or_init(|| {
        let builder = ort::init_from(library).map_err(|e| e.to_string())?;
        builder
            .with_name("taominer-predictor")
            .build()
            .map_err(|e| e.to_string())
    });
    outcome.as_ref().map_err(|message| Error::Runtime {
        path: library.display().to_string(),
        message: message.clone(),
    })
}

/// What the model's output means (`predictor.output`), parsed once by the configuration.
pub use taominer_core::config::Output;

/// How a model is loaded: device, threads, and what its input must look like.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub device: Device,
    pub threads: usize,
    pub output: Output,
    /// Configured (height, width); `None`: take the model's.
    pub image_size: Option<(u32, u32)>,
    pub mean: Option<[f32; 3]>,
    pub std: Option<[f32; 3]>,
    /// Most inputs per run the caller wants.
    pub max_batch: usize,
}

impl LoadOptions {
    pub fn from_config(c: &PredictorConfig) -> LoadOptions {
        LoadOptions {
            device: c.device,
            threads: c.threads,
            output: c.output,
            image_size: c.image_size.map(|[h, w]| (h, w)),
            mean: c.mean,
            std: c.std,
            max_batch: c.max_batch,
        }
    }
}

/// A loaded, checked model.
pub struct Model {
    pub path: PathBuf,
    /// First 16 hex digits of the file's sha256.
    pub version: String,
    pub preprocess: Preprocess,
    /// Most inputs one run takes: 1 when the model's batch axis is fixed at 1.
    pub max_batch: usize,
    output: Output,
    input_name: String,
    output_name: String,
    /// `run` needs `&mut`: ONNX Runtime sessions are not safe to run from two threads at once.
    session: Mutex<Session>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("preprocess", &self.preprocess)
            .finish()
    }
}

fn refuse(path: &Path, message: impl Into<String>) -> Error {
    Error::Model {
        path: path.display().to_string(),
        message: message.into(),
    }
}

impl Model {
    /// Reads, checks and warms up a model. Nothing is shared until this returns `Ok`.
    pub fn load(library: &Path, path: &Path, opts: &LoadOptions) -> Result<Model> {
        let env = init_runtime(library)?;
        let bytes = std::fs::read(path).map_err(|e| refuse(path, format!("cannot read: {e}")))?;
        let version = hex::encode(&Sha256::digest(&bytes)[..8]);
        let mut builder = Session::builder(env)
            .map_err(|e| refuse(path, e.to_string()))?
            .with_execution_providers(providers(opts.device).map_err(|m| refuse(path, m))?)
            .map_err(|e| refuse(path, e.to_string()))?;
        if opts.threads > 0 {
            builder = builder
                .with_intra_threads(opts.threads)
                .map_err(|e| refuse(path, e.to_string()))?;
        }
        let session = builder
            .commit_from_memory(&bytes)
            .map_err(|e| refuse(path, format!("not a usable ONNX model: {e}")))?;

        let (input_name, batch, height, width) = check_input(&session, path, opts)?;
        let output_name = check_output(&session, path)?;
        let model = Model {
            path: path.to_path_buf(),
            version,
            preprocess: Preprocess {
                height,
                width,
                mean: opts.mean,
                std: opts.std,
            },
            max_batch: match batch {
                Some(n) => n,
                None => opts.max_batch.max(1),
            },
            output: opts.output,
            input_name,
            output_name,
            session: Mutex::new(session),
        };
        let batch_n = if batch.is_some() { model.max_batch } else { 1 };
        let zeros = vec![0f32; model.preprocess.len() * batch_n];
        model
            .predict(&zeros, batch_n)
            .map_err(|e| refuse(path, format!("fails on a zero input: {e}")))?;
        Ok(model)
    }

    /// Runs `n` inputs laid end to end (each `preprocess.len()` floats); one probability each,
    /// in [0, 1].
    pub fn predict(&self, inputs: &[f32], n: usize) -> Result<Vec<f64>> {
        let (h, w) = (
            self.preprocess.height as usize,
            self.preprocess.width as usize,
        );
        if n == 0 || inputs.len() != n * 3 * h * w {
            return Err(Error::Inference(format!(
                "{} floats for {n} inputs of 3x{h}x{w}",
                inputs.len()
            )));
        }
        let tensor = Tensor::from_array(([n, 3, h, w], inputs.to_vec()))
            .map_err(|e| Error::Inference(e.to_string()))?;
        let mut session = self
            .session
            .lock()
            .map_err(|_| Error::Inference("session lock poisoned".into()))?;
        let outputs = session
            .run(ort::inputs![self.input_name.as_str() => tensor])
            .map_err(|e| Error::Inference(e.to_string()))?;
        let (_, values) = outputs[self.output_name.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(|e| Error::Inference(e.to_string()))?;
        if values.len() != n {
            return Err(Error::Inference(format!(
                "model gave {} values for {n} inputs; one score per image is needed",
                values.len()
            )));
        }
        values
            .iter()
            .map(|&v| {
                let v = f64::from(v);
                if !v.is_finite() {
                    return Err(Error::Inference(format!("model output is {v}")));
                }
                let p = match self.output {
                    Output::Logit => 1.0 / (1.0 + (-v).exp()),
                    Output::Probability => v,
                };
                Ok(p.clamp(0.0, 1.0))
            })
            .collect()
    }
}

/// The execution providers for a device; never a silent CPU fallback for a GPU device.
fn providers(
    device: Device,
) -> std::result::Result<Vec<ort::ep::ExecutionProviderDispatch>, String> {
    let Some(ordinal) = device.cuda_ordinal() else {
        return Ok(Vec::new());
    };
    #[cfg(feature = "cuda")]
    {
        let id = i32::try_from(ordinal).map_err(|_| format!("bad device {device}"))?;
        Ok(vec![ort::ep::CUDA::default()
            .with_device_id(id)
            .build()
            .error_on_failure()])
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = ordinal;
        Err(format!(
            "device \"{device}\" needs a build with the `cuda` feature (cargo build --features cuda)"
        ))
    }
}

fn dims(v: &ValueType) -> Option<(TensorElementType, Vec<i64>)> {
    match v {
        ValueType::Tensor { ty, shape, .. } => Some((*ty, shape.iter().copied().collect())),
        _ => None,
    }
}

/// One float input `[N, 3, H, W]`; returns its name, fixed batch size (None when dynamic) and the
/// (H, W) to feed it, checked against the configured size.
fn check_input(
    session: &Session,
    path: &Path,
    opts: &LoadOptions,
) -> Result<(String, Option<usize>, u32, u32)> {
    let inputs = session.inputs();
    if inputs.len() != 1 {
        return Err(refuse(
            path,
            format!(
                "has {} inputs ({}); one image input [N, 3, H, W] is needed",
                inputs.len(),
                inputs
                    .iter()
                    .map(|i| i.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    let input = &inputs[0];
    let Some((ty, shape)) = dims(input.dtype()) else {
        return Err(refuse(
            path,
            format!("input {:?} is not a tensor", input.name()),
        ));
    };
    if ty != TensorElementType::Float32 {
        return Err(refuse(
            path,
            format!("input {:?} is {ty:?}; float32 is needed", input.name()),
        ));
    }
    if shape.len() != 4 || !(shape[1] == 3 || shape[1] < 0) {
        return Err(refuse(
            path,
            format!(
                "input {:?} has shape {shape:?}; [N, 3, H, W] is needed",
                input.name()
            ),
        ));
    }
    let batch = match shape[0] {
        n if n > 0 => Some(n as usize),
        _ => None,
    };
    if batch.is_some_and(|n| n != 1) {
        return Err(refuse(
            path,
            format!(
                "input batch axis is fixed at {}; 1 or dynamic is needed",
                shape[0]
            ),
        ));
    }
    let model_hw = (shape[2] > 0 && shape[3] > 0).then(|| (shape[2] as u32, shape[3] as u32));
    let (h, w) =
        match (opts.image_size, model_hw) {
            (Some(cfg), Some(m)) if cfg != m => {
                return Err(refuse(
                    path,
                    format!(
                        "input is {}x{} but predictor.image_size is [{}, {}]",
                        m.0, m.1, cfg.0, cfg.1
                    ),
                ))
            }
            (Some(cfg), _) => cfg,
            (None, Some(m)) => m,
            (None, None) => return Err(refuse(
                path,
                "input height and width are dynamic; set predictor.image_size = [height, width]",
            )),
        };
    Ok((input.name().to_string(), batch, h, w))
}

/// The first output, a float tensor with one value per input.
fn check_output(session: &Session, path: &Path) -> Result<String> {
    let Some(output) = session.outputs().first() else {
        return Err(refuse(path, "has no outputs"));
    };
    match dims(output.dtype()) {
        Some((TensorElementType::Float32, shape))
            if !shape.is_empty() && shape.iter().skip(1).all(|&d| d == 1 || d < 0) =>
        {
            Ok(output.name().to_string())
        }
        other => Err(refuse(
            path,
            format!(
                "output {:?} is {other:?}; one float32 score per image ([N] or [N, 1]) is needed",
                output.name()
            ),
        )),
    }
}
