//! libFuzzer entry for `taominer_fuzz::targets::config_set` (docs/fuzzing.md): coverage-guided runs of
//! the target the stable driver runs in CI.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = taominer_fuzz::targets::config_set(data);
});
