//! A batch of episode groups, trajectories and steps, stored flat.
//!
//! Steps of all trajectories live in one array; a trajectory is a range of it. Anchor keys are
//! interned once when a step is added, so the advantage computation compares integers. Interning
//! uses a hash map keyed by the full text: equal text decides, a hash alone never does.
//!
//! ```
//! use gigpo_core::{BatchBuilder, StepInput};
//! let mut b = BatchBuilder::new();
//! b.push_trajectory("g0", "t0", [StepInput::new("room A", -0.1), StepInput::new("room B", 10.0)])
//!     .unwrap();
//! b.push_trajectory("g0", "t1", [StepInput::new("room A", -0.1)]).unwrap();
//! let batch = b.build();
//! assert_eq!(batch.num_steps(), 3);
//! assert_eq!(batch.steps()[0].anchor, batch.steps()[2].anchor);
//! ```

use crate::error::AdvantageError;
use crate::ids::{AnchorId, GroupId, TrajId};
use std::collections::HashMap;
use std::ops::Range;

/// One environment step as stored in a batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// The interned anchor key of the state the action was taken from.
    pub anchor: AnchorId,
    /// The environment's reward for this step.
    pub reward: f64,
    /// Whether the action text could be parsed.
    pub action_valid: bool,
}

/// One step as given to [`BatchBuilder::push_trajectory`].
#[derive(Debug, Clone, Copy)]
pub struct StepInput<'a> {
    pub anchor: &'a str,
    pub reward: f64,
    pub action_valid: bool,
}

impl<'a> StepInput<'a> {
    /// A step with a valid action.
    pub fn new(anchor: &'a str, reward: f64) -> Self {
        Self {
            anchor,
            reward,
            action_valid: true,
        }
    }

    /// A step whose action could not be parsed.
    pub fn invalid(anchor: &'a str, reward: f64) -> Self {
        Self {
            anchor,
            reward,
            action_valid: false,
        }
    }
}

/// A trajectory's place in the batch.
#[derive(Debug, Clone)]
pub struct Trajectory {
    pub name: String,
    pub group: GroupId,
    /// Its steps: `batch.steps()[steps]`.
    pub steps: Range<usize>,
}

/// An episode group's place in the batch.
#[derive(Debug, Clone)]
pub struct Group {
    pub name: String,
    /// Its trajectories, in insertion order.
    pub trajectories: Vec<TrajId>,
}

/// Interned anchor texts.
#[derive(Debug, Clone, Default)]
pub struct AnchorTable {
    ids: HashMap<String, AnchorId>,
    texts: Vec<String>,
}

impl AnchorTable {
    /// The id of `text`, adding it when new.
    pub fn intern(&mut self, text: &str) -> AnchorId {
        if let Some(&id) = self.ids.get(text) {
            return id;
        }
        let id = AnchorId(self.texts.len() as u32);
        self.ids.insert(text.to_owned(), id);
        self.texts.push(text.to_owned());
        id
    }

    /// The text of an interned anchor.
    pub fn text(&self, id: AnchorId) -> &str {
        &self.texts[id.index()]
    }

    /// Number of distinct anchors.
    pub fn len(&self) -> usize {
        self.texts.len()
    }

    /// Whether no anchor has been interned.
    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }
}

/// Builds a [`Batch`] one trajectory at a time.
#[derive(Debug, Default)]
pub struct BatchBuilder {
    batch: Batch,
    group_ids: HashMap<String, GroupId>,
}

impl BatchBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// The id of the group named `name`, declaring it when new. A declared group must receive at
    /// least one trajectory before the batch is used.
    pub fn group(&mut self, name: &str) -> Result<GroupId, AdvantageError> {
        if let Some(&id) = self.group_ids.get(name) {
            return Ok(id);
        }
        let id = GroupId(checked_u32(self.batch.groups.len(), "groups")?);
        self.batch.groups.push(Group {
            name: name.to_owned(),
            trajectories: Vec::new(),
        });
        self.group_ids.insert(name.to_owned(), id);
        Ok(id)
    }

    /// Intern an anchor text ahead of time.
    pub fn intern(&mut self, anchor: &str) -> AnchorId {
        self.batch.anchors.intern(anchor)
    }

    /// Add a trajectory to the group named `group`. Trajectory names must be unique per group.
    pub fn push_trajectory<'a>(
        &mut self,
        group: &str,
        trajectory: &str,
        steps: impl IntoIterator<Item = StepInput<'a>>,
    ) -> Result<TrajId, AdvantageError> {
        let gid = self.group(group)?;
        let duplicate = self.batch.groups[gid.index()]
            .trajectories
            .iter()
            .any(|t| self.batch.trajectories[t.index()].name == trajectory);
        if duplicate {
            return Err(AdvantageError::DuplicateTrajectory {
                group: group.to_owned(),
                trajectory: trajectory.to_owned(),
            });
        }
        let tid = TrajId(checked_u32(self.batch.trajectories.len(), "trajectories")?);
        let start = self.batch.steps.len();
        for s in steps {
            let anchor = self.batch.anchors.intern(s.anchor);
            self.batch.steps.push(Step {
                anchor,
                reward: s.reward,
                action_valid: s.action_valid,
            });
        }
        checked_u32(self.batch.steps.len(), "steps")?;
        let range = start..self.batch.steps.len();
        self.batch.trajectories.push(Trajectory {
            name: trajectory.to_owned(),
            group: gid,
            steps: range,
        });
        self.batch.groups[gid.index()].trajectories.push(tid);
        Ok(tid)
    }

    /// The finished batch.
    pub fn build(self) -> Batch {
        self.batch
    }
}

fn checked_u32(n: usize, what: &'static str) -> Result<u32, AdvantageError> {
    u32::try_from(n).map_err(|_| AdvantageError::TooLarge {
        what,
        limit: u32::MAX as u64,
    })
}

/// Episode groups of trajectories of steps, with interned anchors.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    anchors: AnchorTable,
    groups: Vec<Group>,
    trajectories: Vec<Trajectory>,
    steps: Vec<Step>,
}

impl Batch {
    /// All steps, trajectory after trajectory in insertion order.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// All trajectories in insertion order.
    pub fn trajectories(&self) -> &[Trajectory] {
        &self.trajectories
    }

    /// All groups in order of first appearance.
    pub fn groups(&self) -> &[Group] {
        &self.groups
    }

    /// The interned anchor texts.
    pub fn anchors(&self) -> &AnchorTable {
        &self.anchors
    }

    /// Total number of steps.
    pub fn num_steps(&self) -> usize {
        self.steps.len()
    }

    /// The steps of one trajectory.
    pub fn trajectory_steps(&self, t: TrajId) -> &[Step] {
        &self.steps[self.trajectories[t.index()].steps.clone()]
    }

    /// Where step `step` of trajectory `t` lives, for error messages.
    pub(crate) fn locate(&self, flat_step: usize) -> (String, String, usize) {
        let t = self
            .trajectories
            .partition_point(|tr| tr.steps.end <= flat_step)
            .min(self.trajectories.len().saturating_sub(1));
        let tr = &self.trajectories[t];
        let group = self.groups[tr.group.index()].name.clone();
        (group, tr.name.clone(), flat_step - tr.steps.start)
    }
}
