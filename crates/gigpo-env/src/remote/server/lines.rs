//! Reading input line by line under a size limit.

use std::io::BufRead;

/// One line of input, or the length of one that was too long (and was skipped).
pub(super) enum Line {
    Text(String),
    TooLong(usize),
}

/// Reads lines without ever holding more than the size limit in memory.
pub(super) struct LimitedLines<R> {
    input: R,
    max: usize,
}

impl<R: BufRead> LimitedLines<R> {
    pub(super) fn new(input: R, max: usize) -> Self {
        LimitedLines { input, max }
    }

    pub(super) fn next_line(&mut self) -> std::io::Result<Option<Line>> {
        let mut buf = Vec::new();
        let mut total = 0usize;
        loop {
            let available = self.input.fill_buf()?;
            if available.is_empty() {
                return Ok(match (total, buf.is_empty()) {
                    (0, _) => None,
                    (n, true) if n > self.max => Some(Line::TooLong(n)),
                    _ => Some(Line::Text(String::from_utf8_lossy(&buf).into_owned())),
                });
            }
            let (chunk, done) = match available.iter().position(|&b| b == b'\n') {
                Some(i) => (&available[..i], Some(i + 1)),
                None => (available, None),
            };
            total += chunk.len();
            if total <= self.max {
                buf.extend_from_slice(chunk);
            } else {
                buf.clear();
            }
            let used = done.unwrap_or(chunk.len());
            self.input.consume(used);
            if done.is_some() {
                return Ok(Some(if total > self.max {
                    Line::TooLong(total)
                } else {
                    Line::Text(String::from_utf8_lossy(&buf).into_owned())
                }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limited_lines_skips_long_lines() {
        let input = b"short\nthis line is too long\nok\nlast-no-newline".as_slice();
        let mut lines = LimitedLines::new(input, 15);
        let mut seen = Vec::new();
        while let Some(line) = lines.next_line().unwrap() {
            seen.push(match line {
                Line::Text(t) => t,
                Line::TooLong(n) => format!("<{n}>"),
            });
        }
        assert_eq!(seen, vec!["short", "<21>", "ok", "last-no-newline"]);
    }
}
