//! Range checks shared by the configuration sections; each error names the field.

use crate::error::{Result, TrainError};

/// `value` must be at least 1.
pub fn at_least_one(field: &str, value: usize) -> Result<()> {
    if value == 0 {
        return Err(TrainError::config(field, "must be at least 1"));
    }
    Ok(())
}

/// `value` must be at most `limit` (sizes that allocate in proportion: checked before anything
/// is allocated, so that an absurd value is an error naming the field instead of an aborted
/// process).
pub fn at_most(field: &str, value: usize, limit: usize) -> Result<()> {
    if value > limit {
        return Err(TrainError::config(
            field,
            format!("{value} is too large; at most {limit}"),
        ));
    }
    Ok(())
}

/// `value` must be finite and ≥ 0.
pub fn finite_non_negative(field: &str, value: f64) -> Result<()> {
    if !(value >= 0.0 && value.is_finite()) {
        return Err(TrainError::config(
            field,
            format!("{value} must be finite and >= 0"),
        ));
    }
    Ok(())
}

/// `value` must be finite and > 0.
pub fn positive(field: &str, value: f64) -> Result<()> {
    if !(value > 0.0 && value.is_finite()) {
        return Err(TrainError::config(field, format!("{value} must be > 0")));
    }
    Ok(())
}

/// The sampling fields of the section `section`: temperature ≥ 0, 0 < top_p ≤ 1.
pub fn sampling(section: &str, temperature: f64, top_p: f64) -> Result<()> {
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(TrainError::config(
            format!("{section}.top_p"),
            format!("{top_p} must be in (0, 1]"),
        ));
    }
    if temperature.is_nan() || temperature < 0.0 {
        return Err(TrainError::config(
            format!("{section}.temperature"),
            format!("{temperature} must be >= 0"),
        ));
    }
    Ok(())
}
