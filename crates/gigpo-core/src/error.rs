//! Errors of the advantage computation. Each names what is wrong and where.

/// Bad input or configuration for an advantage computation.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AdvantageError {
    /// A reward that is NaN or infinite.
    #[error("group {group:?}, trajectory {trajectory:?}, step {step}: reward is {value}, must be finite")]
    NonFiniteReward {
        group: String,
        trajectory: String,
        step: usize,
        value: f64,
    },
    /// A trajectory whose finite rewards sum past the range of `f64`.
    #[error("group {group:?}, trajectory {trajectory:?}: the sum of its rewards is {value} (overflows f64); rewards must be smaller in magnitude")]
    ScoreOverflow {
        group: String,
        trajectory: String,
        value: f64,
    },
    /// A result that is not finite although every input is (it exceeds the range of `f64`,
    /// e.g. a return summing huge rewards or a division by a tiny `fixed_norm`).
    #[error("group {group:?}, trajectory {trajectory:?}, step {step}: {quantity} is {value}, not a finite number (the result exceeds the range of f64; use smaller rewards or a larger fixed_norm)")]
    NonFiniteResult {
        group: String,
        trajectory: String,
        step: usize,
        quantity: &'static str,
        value: f64,
    },
    /// A group declared with no trajectory in it.
    #[error("group {group:?} has no trajectories")]
    EmptyGroup { group: String },
    /// A trajectory with no steps.
    #[error("group {group:?}, trajectory {trajectory:?}: trajectory has no steps")]
    EmptyTrajectory { group: String, trajectory: String },
    /// The same trajectory name twice in one group.
    #[error("group {group:?}, trajectory {trajectory:?}: trajectory appears twice in the group")]
    DuplicateTrajectory { group: String, trajectory: String },
    /// A configuration value outside its allowed range.
    #[error("{field} = {value}: {requirement}")]
    InvalidConfig {
        field: &'static str,
        value: f64,
        requirement: &'static str,
    },
    /// An option whose value does not go with another option's.
    #[error("{field} = {value}: {requirement}")]
    ConflictingOptions {
        field: &'static str,
        value: String,
        requirement: &'static str,
    },
    /// An option name that is not one of the allowed values.
    #[error("unknown {option} {value:?}; expected one of: {expected}")]
    UnknownOption {
        option: &'static str,
        value: String,
        expected: &'static str,
    },
    /// A batch too large for 32-bit indices.
    #[error("batch too large: more than {limit} {what}")]
    TooLarge { what: &'static str, limit: u64 },
}
