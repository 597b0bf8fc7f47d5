//! The proptest settings of the fuzz targets, shared by `crates/gigpo-core/tests/fuzz.rs` and
//! `crates/gigpo-env/tests/fuzz.rs`.

use proptest::test_runner::Config;

/// `GIGPO_FUZZ_CASES` cases per target (default 256), and no failure files written.
pub fn config() -> Config {
    let cases = std::env::var("GIGPO_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}
