//! The GiGPO advantage engine: pure functions over plain data, no tensors, no I/O.
//!
//! A [`Batch`] holds episode groups (trajectories that started from the same state), each
//! trajectory a list of steps with an anchor key, a reward, an `action_valid` flag and,
//! optionally, an action key (for the diagnostics only). [`compute`]
//! returns, for every step, the combined advantage and its episode and step parts, the discounted
//! return, and [`Diagnostics`] about the step groups. The estimators are GiGPO
//! (arXiv 2505.10978), GRPO and RLOO, chosen by [`Estimator`]; every formula, option and default
//! is described in docs/advantages.md.
//!
//! ```
//! use gigpo_core::{compute, AdvantageConfig, BatchBuilder, StepInput};
//! let mut b = BatchBuilder::new();
//! for (name, last) in [("a", 10.0), ("b", -0.1)] {
//!     b.push_trajectory("level-7", name, [StepInput::new("start", -0.1), StepInput::new("mid", last)])
//!         .unwrap();
//! }
//! let adv = compute(&b.build(), &AdvantageConfig::default()).unwrap();
//! assert_eq!(adv.diagnostics.step_groups, 2);
//! assert!(adv.steps[1].advantage > adv.steps[3].advantage);
//! ```

pub mod batch;
pub mod config;
pub mod diagnostics;
pub mod error;
pub mod estimate;
pub mod grouping;
pub mod ids;
pub mod jsonl;
pub mod normalize;
pub mod similarity;

pub use batch::{
    ActionTable, AnchorTable, Batch, BatchBuilder, Group, Name, Step, StepInput, TextTable,
    Trajectory,
};
pub use config::{AdvantageConfig, Combine, Convention, Estimator, Levels, Norm};
pub use diagnostics::{Diagnostics, SIZE_BINS};
pub use error::AdvantageError;
pub use estimate::{compute, Advantages, StepAdvantage};
pub use ids::{ActionId, AnchorId, GroupId, StepGroupId, TrajId};
pub use jsonl::{read_trajectories, StepLine, TrajectoryFileError, TrajectoryLine};
