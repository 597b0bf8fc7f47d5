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
//!
//! Groups and trajectories are named by a [`Name`]: text, as in trajectory files
//! ([`BatchBuilder::push_trajectory`]), or a number, as in a rollout where groups and their
//! members are counted ([`BatchBuilder::push_numbered`]; nothing to format):
//!
//! ```
//! use gigpo_core::{BatchBuilder, StepInput};
//! let mut b = BatchBuilder::new();
//! for member in 0..2 {
//!     b.push_numbered(7, member, [StepInput::new("start", 0.0)]).unwrap();
//! }
//! assert_eq!(b.build().groups()[0].name.to_string(), "7");
//! ```

use crate::error::AdvantageError;
use crate::ids::{ActionId, AnchorId, GroupId, Index, TrajId};
use std::collections::HashMap;
use std::fmt;
use std::ops::Range;

/// The name of an episode group or of a trajectory within its group.
///
/// Text and numbers are different names even when they print alike; a batch should use one kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Name {
    /// A name given as text.
    Text(String),
    /// A name given as a number.
    Number(u64),
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Name::Text(t) => f.write_str(t),
            Name::Number(n) => write!(f, "{n}"),
        }
    }
}

/// One environment step as stored in a batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// The interned anchor key of the state the action was taken from.
    pub anchor: AnchorId,
    /// The environment's reward for this step.
    pub reward: f64,
    /// Whether the action text could be parsed.
    pub action_valid: bool,
    /// The interned action key, when the caller gave one (used by the diagnostics only).
    pub action: Option<ActionId>,
}

/// One step as given to [`BatchBuilder::push_trajectory`].
#[derive(Debug, Clone, Copy)]
pub struct StepInput<'a> {
    /// The anchor key of the state the action was taken from.
    pub anchor: &'a str,
    /// The environment's reward.
    pub reward: f64,
    /// Whether the action text could be parsed.
    pub action_valid: bool,
    /// The action taken, as a key: equal texts are the same action. The advantages do not use
    /// it; the diagnostics count the step groups whose steps took different actions. `None`
    /// when unknown.
    pub action: Option<&'a str>,
}

impl<'a> StepInput<'a> {
    /// A step with a valid action.
    pub fn new(anchor: &'a str, reward: f64) -> Self {
        Self {
            anchor,
            reward,
            action_valid: true,
            action: None,
        }
    }

    /// A step whose action could not be parsed.
    pub fn invalid(anchor: &'a str, reward: f64) -> Self {
        Self {
            anchor,
            reward,
            action_valid: false,
            action: None,
        }
    }

    /// The same step with its action key.
    ///
    /// ```
    /// use gigpo_core::StepInput;
    /// let s = StepInput::new("room A", -0.1).with_action("up");
    /// assert_eq!(s.action, Some("up"));
    /// ```
    pub fn with_action(self, action: &'a str) -> Self {
        Self {
            action: Some(action),
            ..self
        }
    }
}

/// A trajectory's place in the batch.
#[derive(Debug, Clone)]
pub struct Trajectory {
    /// Its name, unique within its group.
    pub name: Name,
    pub group: GroupId,
    /// Its steps: `batch.steps()[steps]`.
    pub steps: Range<usize>,
}

/// An episode group's place in the batch.
#[derive(Debug, Clone)]
pub struct Group {
    /// Its name, unique within the batch.
    pub name: Name,
    /// Its trajectories, in insertion order.
    pub trajectories: Vec<TrajId>,
}

/// Interned texts (anchor keys, action keys), each numbered by an index type `I`.
#[derive(Debug, Clone)]
pub struct TextTable<I> {
    ids: HashMap<String, I>,
    texts: Vec<String>,
}

/// Interned anchor texts.
pub type AnchorTable = TextTable<AnchorId>;

/// Interned action texts.
pub type ActionTable = TextTable<ActionId>;

impl<I> Default for TextTable<I> {
    fn default() -> Self {
        Self {
            ids: HashMap::new(),
            texts: Vec::new(),
        }
    }
}

impl<I: Index> TextTable<I> {
    /// The id of `text`, adding it when new.
    pub fn intern(&mut self, text: &str) -> I {
        if let Some(&id) = self.ids.get(text) {
            return id;
        }
        let id = I::from_u32(self.texts.len() as u32);
        self.ids.insert(text.to_owned(), id);
        self.texts.push(text.to_owned());
        id
    }

    /// The text of an interned id.
    pub fn text(&self, id: I) -> &str {
        &self.texts[id.index()]
    }

    /// Number of distinct texts.
    pub fn len(&self) -> usize {
        self.texts.len()
    }

    /// Whether no text has been interned.
    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }
}

/// Builds a [`Batch`] one trajectory at a time.
#[derive(Debug, Default)]
pub struct BatchBuilder {
    batch: Batch,
    group_ids: HashMap<Name, GroupId>,
}

impl BatchBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// The id of the group named `name`, declaring it when new. A declared group must receive at
    /// least one trajectory before the batch is used.
    pub fn group(&mut self, name: &str) -> Result<GroupId, AdvantageError> {
        self.group_id(Name::Text(name.to_owned()))
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
        let group = Name::Text(group.to_owned());
        self.push(group, Name::Text(trajectory.to_owned()), steps)
    }

    /// Add trajectory number `member` to group number `group`, for callers that count their
    /// groups and members (a rollout): no names to format. Member numbers must be unique per
    /// group. Numbered groups are other groups than named ones, even when they print alike.
    pub fn push_numbered<'a>(
        &mut self,
        group: usize,
        member: usize,
        steps: impl IntoIterator<Item = StepInput<'a>>,
    ) -> Result<TrajId, AdvantageError> {
        self.push(
            Name::Number(group as u64),
            Name::Number(member as u64),
            steps,
        )
    }

    fn group_id(&mut self, name: Name) -> Result<GroupId, AdvantageError> {
        if let Some(&id) = self.group_ids.get(&name) {
            return Ok(id);
        }
        let id = GroupId(checked_u32(self.batch.groups.len(), "groups")?);
        self.group_ids.insert(name.clone(), id);
        self.batch.groups.push(Group {
            name,
            trajectories: Vec::new(),
        });
        Ok(id)
    }

    fn push<'a>(
        &mut self,
        group: Name,
        trajectory: Name,
        steps: impl IntoIterator<Item = StepInput<'a>>,
    ) -> Result<TrajId, AdvantageError> {
        let gid = self.group_id(group)?;
        let group = &self.batch.groups[gid.index()];
        let duplicate = group
            .trajectories
            .iter()
            .any(|t| self.batch.trajectories[t.index()].name == trajectory);
        if duplicate {
            return Err(AdvantageError::DuplicateTrajectory {
                group: group.name.to_string(),
                trajectory: trajectory.to_string(),
            });
        }
        let tid = TrajId(checked_u32(self.batch.trajectories.len(), "trajectories")?);
        let start = self.batch.steps.len();
        for s in steps {
            let anchor = self.batch.anchors.intern(s.anchor);
            let action = s.action.map(|a| self.batch.actions.intern(a));
            self.batch.steps.push(Step {
                anchor,
                reward: s.reward,
                action_valid: s.action_valid,
                action,
            });
        }
        checked_u32(self.batch.steps.len(), "steps")?;
        let range = start..self.batch.steps.len();
        self.batch.trajectories.push(Trajectory {
            name: trajectory,
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
    actions: ActionTable,
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

    /// The interned action texts.
    pub fn actions(&self) -> &ActionTable {
        &self.actions
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
        let group = self.groups[tr.group.index()].name.to_string();
        (group, tr.name.to_string(), flat_step - tr.steps.start)
    }
}
