//! Allocator and thread settings for training on the CPU.
//!
//! Threads: candle 0.11 runs its elementwise ops on a pool of its own ("barrier pool") whose
//! workers spin (25 000 iterations) waiting for work and whose caller spins waiting for them.
//! The trainer's kernels and the matmuls run on rayon's pool, one thread per core, so candle's
//! spinning threads take cores from the threads doing the work: in a profile of the benchmark
//! model on 2 cores, 55% of the samples were these spin-waits, and tokens/s went from 2015 to
//! 6189 with the pool off. `CANDLE_NUM_THREADS=1` means no pool (candle's few remaining
//! elementwise ops run on the calling thread); a value set by the user is kept.
//!
//! A step allocates and frees the same large tensors (scores, activations, gradients of tens of
//! megabytes) over and over. glibc serves blocks above 128 KiB with `mmap` and returns them with
//! `munmap`, so every step pays page faults to map them again and TLB shootdowns across the
//! worker threads to unmap them: in a profile, a fifth of the time was in the kernel. Raising the
//! mmap threshold to its maximum (32 MiB) and keeping freed memory in the heap makes the next step
//! reuse the same pages: about 25–35% more tokens/s measured on the benchmark model. Peak memory
//! is the step's peak either way.

/// Applies the settings (the allocator's on glibc only). Call it first thing, before any
/// tensor op: candle reads `CANDLE_NUM_THREADS` when its pool is first used.
pub fn tune_for_training() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // Set before the first candle op and while no other thread reads the environment.
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before the training threads
    // start allocating large blocks.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 * 1024 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1024 * 1024 * 1024);
        libc::mallopt(libc::M_TOP_PAD, 256 * 1024 * 1024);
    }
}
