//! miner-kernel-check: compares the fused kernels with a baseline (in progress).

fn main() {}
