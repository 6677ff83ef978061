//! `miner-eval`: scores a Hugging Face LLaMA model directory on text with the validators' metric
//! (mean next-token cross-entropy), using the same forward pass the trainer trains with. Prints
//! JSON. With `--logits` it also prints every position's logits, which is how the tests compare
//! this implementation with transformers.

use std::path::PathBuf;

use anyhow::Context;
use candle_core::{DType, Tensor};
use clap::Parser;
use taominer_trainer::checkpoint::read_model_dir;
use taominer_trainer::data::Tok;
use taominer_trainer::model::Llama;
use taominer_trainer::train::device_for;

/// Score a LlamaForCausalLM directory on text (mean token cross-entropy).
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// The model directory (config.json, model.safetensors or an index, tokenizer.json).
    model_dir: PathBuf,
    /// Text to score (tokenized with the directory's tokenizer.json, or --tokenizer).
    #[arg(long, conflicts_with = "ids")]
    text: Option<String>,
    /// Token ids to score, comma-separated, one sequence.
    #[arg(long, value_delimiter = ',')]
    ids: Vec<u32>,
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Also print the logits of every position.
    #[arg(long)]
    logits: bool,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: taominer_core::config::Device,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    taominer_trainer::alloc::tune_for_training();
    let device = device_for(args.device)?;
    let (cfg, params) = read_model_dir(&args.model_dir, &device)
        .with_context(|| format!("cannot load {}", args.model_dir.display()))?;
    let ids = match &args.text {
        Some(text) => {
            let tok_path = args
                .tokenizer
                .clone()
                .unwrap_or_else(|| args.model_dir.join("tokenizer.json"));
            let tok = Tok::from_file(&tok_path)?;
            tok.check_fits(cfg.vocab_size)?;
            tok.encode(text)?
        }
        None => args.ids.clone(),
    };
    if ids.len() < 2 {
        anyhow::bail!("need at least two tokens to score (got {})", ids.len());
    }
    if let Some(bad) = ids.iter().find(|&&i| i as usize >= cfg.vocab_size) {
        anyhow::bail!("token id {bad} does not fit vocab_size {}", cfg.vocab_size);
    }
    let compute = if device.is_cpu() {
        DType::F32
    } else {
        DType::BF16
    };
    let model = Llama::new(cfg, params, compute)?;
    let n = ids.len();
    let input = Tensor::from_vec(ids.clone(), (1, n), &device)?;
    let loss = model.loss(&input, false)?.to_scalar::<f32>()?;
    let mut out = serde_json::json!({"tokens": n, "loss": loss, "ids": ids, "text": args.text});
    if args.logits {
        let logits = model.forward(&input, false)?.squeeze(0)?.to_vec2::<f32>()?;
        out["logits"] = serde_json::json!(logits);
    }
    println!("{out}");
    Ok(())
}
