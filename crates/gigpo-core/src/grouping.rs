//! Anchor-state grouping (arXiv 2505.10978 Eq. 6; docs/advantages.md, step 5).
//!
//! Within one episode group only, steps whose anchor keys are equal form a step group. Time is
//! not part of the key, so a state revisited inside one trajectory joins the same group.
//!
//! Exact grouping is linear in the number of steps: anchors are already interned, so a group's
//! steps are bucketed through a scratch table indexed by anchor id.
//!
//! Similarity grouping (`anchor_similarity = s`) clusters the distinct anchor texts of each
//! episode group greedily, in trajectory-then-time order of first appearance, against each
//! cluster's first member, joining the first cluster whose [`ratio`](crate::similarity::ratio)
//! is ≥ s. Cost per episode group: O(D · C · L²) in the worst case for D distinct anchors, C
//! clusters and anchors of L characters (length bounds skip most comparisons); equal texts are
//! compared once.

use crate::batch::Batch;
use crate::ids::StepGroupId;
use crate::similarity::{length_bound, Matcher};

/// The step group of every step of `batch` (indexed like `batch.steps()`), and the group count.
/// Step group ids are numbered in episode-group, then trajectory, then time order.
pub fn step_groups(batch: &Batch, similarity: Option<f64>) -> (Vec<StepGroupId>, usize) {
    let mut assign = vec![StepGroupId(0); batch.num_steps()];
    let mut slot = vec![u32::MAX; batch.anchors().len()];
    let mut touched: Vec<u32> = Vec::new();
    let mut next = 0u32;
    for group in batch.groups() {
        let mut clusters: Vec<Matcher> = Vec::new();
        let mut cluster_ids: Vec<u32> = Vec::new();
        for &t in &group.trajectories {
            let range = batch.trajectories()[t.index()].steps.clone();
            for s in range {
                let a = batch.steps()[s].anchor.index();
                if slot[a] == u32::MAX {
                    slot[a] = match similarity {
                        None => take(&mut next),
                        Some(threshold) => {
                            let text: Vec<char> = batch
                                .anchors()
                                .text(batch.steps()[s].anchor)
                                .chars()
                                .collect();
                            match find_cluster(&clusters, &text, threshold) {
                                Some(c) => cluster_ids[c],
                                None => {
                                    clusters.push(Matcher::new(text));
                                    cluster_ids.push(take(&mut next));
                                    *cluster_ids.last().unwrap()
                                }
                            }
                        }
                    };
                    touched.push(a as u32);
                }
                assign[s] = StepGroupId(slot[a]);
            }
        }
        for a in touched.drain(..) {
            slot[a as usize] = u32::MAX;
        }
    }
    (assign, next as usize)
}

fn take(next: &mut u32) -> u32 {
    let id = *next;
    *next += 1;
    id
}

/// The first cluster whose representative is similar enough to `text`, as difflib compares
/// `SequenceMatcher(None, text, representative)`.
fn find_cluster(clusters: &[Matcher], text: &[char], threshold: f64) -> Option<usize> {
    clusters.iter().position(|rep| {
        length_bound(text.len(), rep.len()) >= threshold && rep.ratio(text) >= threshold
    })
}
