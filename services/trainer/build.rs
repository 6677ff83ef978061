//! Compiles the trainer's CUDA kernels (`kernels/*.cu`) to PTX when the `cuda` feature is on;
//! without it this does nothing (no nvcc, no cudaforge: the CPU build is not slowed).
//!
//! The PTX goes to OUT_DIR with `ptx.rs`, one `pub const NAME: &str` per `.cu` file (cudaforge's
//! naming: `attention.cu` → `ATTENTION`), which `src/ops/cuda.rs` includes.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    #[cfg(feature = "cuda")]
    if let Err(e) = cuda::build() {
        // A build script's error is its message: say what to do.
        println!("cargo::error=taominer-trainer CUDA kernels: {e}");
        std::process::exit(1);
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use std::path::PathBuf;

    pub fn build() -> Result<(), String> {
        // The whole directory: a change to common.cuh recompiles every kernel.
        println!("cargo::rerun-if-changed=kernels");
        println!("cargo::rerun-if-env-changed=CUDA_COMPUTE_CAP");
        // No default architecture: PTX for the wrong one fails only when loaded on the GPU.
        // With no GPU here (CI, a builder), nvidia-smi cannot say, so the variable must.
        let arch = cudaforge::detect_compute_cap().map_err(|e| {
            format!(
                "no compute capability: set CUDA_COMPUTE_CAP (90 for Hopper H100/H200, 80 for \
                 A100, 89 for L4/L40, 120 for RTX 50xx) or build on the GPU machine ({e})"
            )
        })?;
        let out_dir = PathBuf::from(std::env::var("OUT_DIR").map_err(|e| e.to_string())?);
        cudaforge::KernelBuilder::new()
            .source_dir("kernels")
            .watch(["kernels/common.cuh"])
            .compute_cap_arch(&arch.to_string())
            .arg("-std=c++17")
            .arg("-O3")
            .arg("--expt-relaxed-constexpr")
            .build_ptx()
            .and_then(|ptx| ptx.write(out_dir.join("ptx.rs")))
            .map_err(|e| e.to_string())
    }
}
