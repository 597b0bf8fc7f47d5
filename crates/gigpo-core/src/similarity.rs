//! The similarity ratio of Python's `difflib.SequenceMatcher(None, a, b).ratio()`, character for
//! character, including its "autojunk" rule, so thresholds tuned in Python carry over.
//!
//! ratio = 2·M / (|a| + |b|), where M is the number of characters in the matching blocks found by
//! recursively taking the longest common block (earliest in `a`, then in `b`, on ties) and
//! recursing left and right of it. When `b` has at least 200 characters, characters that occur
//! more than `|b|/100 + 1` times in `b` are "popular": they never start a match but may extend one.
//!
//! ```
//! use gigpo_core::similarity::ratio;
//! assert_eq!(ratio("abcd", "bcde"), 0.75);
//! assert_eq!(ratio("", ""), 1.0);
//! ```

use std::collections::HashMap;

/// `SequenceMatcher(None, a, b).ratio()`.
pub fn ratio(a: &str, b: &str) -> f64 {
    let a: Vec<char> = a.chars().collect();
    Matcher::new(b.chars().collect()).ratio(&a)
}

/// An upper bound of [`ratio`] from the lengths alone (`real_quick_ratio`).
pub fn length_bound(len_a: usize, len_b: usize) -> f64 {
    let total = len_a + len_b;
    if total == 0 {
        1.0
    } else {
        2.0 * len_a.min(len_b) as f64 / total as f64
    }
}

/// A prepared second sequence `b`, compared against many `a`.
pub struct Matcher {
    b: Vec<char>,
    /// Positions of each non-popular character of `b`, ascending.
    positions: HashMap<char, Vec<usize>>,
}

impl Matcher {
    /// Index `b` as difflib does (with autojunk).
    pub fn new(b: Vec<char>) -> Self {
        let mut positions: HashMap<char, Vec<usize>> = HashMap::new();
        for (j, &c) in b.iter().enumerate() {
            positions.entry(c).or_default().push(j);
        }
        if b.len() >= 200 {
            let limit = b.len() / 100 + 1;
            positions.retain(|_, js| js.len() <= limit);
        }
        Self { b, positions }
    }

    /// Length of `b` in characters.
    pub fn len(&self) -> usize {
        self.b.len()
    }

    /// Whether `b` is empty.
    pub fn is_empty(&self) -> bool {
        self.b.is_empty()
    }

    /// The ratio of `a` against the prepared `b`.
    pub fn ratio(&self, a: &[char]) -> f64 {
        let total = a.len() + self.b.len();
        if total == 0 {
            return 1.0;
        }
        2.0 * self.matches(a) as f64 / total as f64
    }

    /// Total size of the matching blocks.
    fn matches(&self, a: &[char]) -> usize {
        let mut total = 0;
        let mut queue = vec![(0, a.len(), 0, self.b.len())];
        while let Some((alo, ahi, blo, bhi)) = queue.pop() {
            let (i, j, k) = self.longest_match(a, alo, ahi, blo, bhi);
            if k == 0 {
                continue;
            }
            total += k;
            if alo < i && blo < j {
                queue.push((alo, i, blo, j));
            }
            if i + k < ahi && j + k < bhi {
                queue.push((i + k, ahi, j + k, bhi));
            }
        }
        total
    }

    /// difflib's `find_longest_match` with no junk function: `(i, j, size)`.
    fn longest_match(
        &self,
        a: &[char],
        alo: usize,
        ahi: usize,
        blo: usize,
        bhi: usize,
    ) -> (usize, usize, usize) {
        let b = &self.b;
        let (mut best_i, mut best_j, mut best) = (alo, blo, 0usize);
        // run[j] = length of the match ending at a[i-1], b[j] (previous row), kept sparse.
        let mut run: HashMap<usize, usize> = HashMap::new();
        let mut next: HashMap<usize, usize> = HashMap::new();
        for (i, c) in a.iter().enumerate().take(ahi).skip(alo) {
            next.clear();
            if let Some(js) = self.positions.get(c) {
                for &j in js {
                    if j < blo {
                        continue;
                    }
                    if j >= bhi {
                        break;
                    }
                    let k = j
                        .checked_sub(1)
                        .and_then(|p| run.get(&p))
                        .copied()
                        .unwrap_or(0)
                        + 1;
                    next.insert(j, k);
                    if k > best {
                        best_i = i + 1 - k;
                        best_j = j + 1 - k;
                        best = k;
                    }
                }
            }
            std::mem::swap(&mut run, &mut next);
        }
        // Extend with equal (popular) characters on both sides, as difflib does.
        while best_i > alo && best_j > blo && a[best_i - 1] == b[best_j - 1] {
            best_i -= 1;
            best_j -= 1;
            best += 1;
        }
        while best_i + best < ahi && best_j + best < bhi && a[best_i + best] == b[best_j + best] {
            best += 1;
        }
        (best_i, best_j, best)
    }
}
