//! `miner-kernel-check`: checks the fused ops' kernels against a baseline on seeded inputs and
//! prints one JSON line per op × dtype × pass × shape (format: `kernel_check::Line`). Exit 0
//! when every check passes, 1 when one fails, 2 when the device cannot be set up.

use std::process::ExitCode;

use clap::Parser;
use taominer_trainer::kernel_check::{self, CheckDType, Env, Pass, Tested};
use taominer_trainer::train::device_for;

/// Check the trainer's kernels: on `cuda[:N]` the CUDA kernels (f32 and bf16) against the CPU
/// kernels; on `cpu` the CPU kernels against the composed reference.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cuda")]
    device: taominer_core::config::Device,
    /// Only these ops (repeatable): rms_norm, rope, swiglu, causal_lm_loss, …
    #[arg(long)]
    op: Vec<String>,
    /// The inputs' seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Perturb every tested result (proves that a wrong kernel fails).
    #[arg(long, hide = true)]
    perturb: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let tested = match device_for(args.device) {
        Ok(d) if d.is_cuda() => Tested::Cuda(d),
        Ok(_) => Tested::Cpu,
        Err(e) => {
            eprintln!("miner-kernel-check: {e}");
            return ExitCode::from(2);
        }
    };
    let registry = kernel_check::registry();
    if let Some(unknown) = args
        .op
        .iter()
        .find(|o| !registry.iter().any(|c| c.op == o.as_str()))
    {
        eprintln!("miner-kernel-check: no op {unknown}");
        return ExitCode::from(2);
    }
    let (mut checks, mut failed) = (0, 0);
    for op in registry
        .iter()
        .filter(|c| args.op.is_empty() || args.op.iter().any(|o| o == c.op))
    {
        for dtype in CheckDType::ALL {
            let mut env = Env::new(tested.clone(), dtype, args.seed, args.perturb);
            for shape in op.shapes {
                for pass in Pass::ALL {
                    let line = kernel_check::check(&mut env, op, shape, pass);
                    checks += 1;
                    failed += usize::from(!line.ok);
                    match serde_json::to_string(&line) {
                        Ok(s) => println!("{s}"),
                        Err(e) => {
                            eprintln!("miner-kernel-check: {e}");
                            return ExitCode::from(2);
                        }
                    }
                }
            }
        }
    }
    eprintln!("miner-kernel-check: {failed} of {checks} checks failed");
    ExitCode::from(u8::from(failed > 0))
}
