//! TensorBoard event files for scalars, written by hand.
//!
//! A file is a sequence of TFRecords: `u64 length (LE)`, `u32 masked CRC-32C of the length
//! bytes`, the data, `u32 masked CRC-32C of the data`, where
//! `masked(c) = ((c >> 15) | (c << 17)) + 0xa282ead8`. Each record holds one `tensorflow.Event`
//! protobuf. We encode only the fields scalars need:
//!
//! | message | field | number | wire type |
//! |---|---|---|---|
//! | Event | `wall_time` (double) | 1 | 64-bit |
//! | Event | `step` (int64) | 2 | varint |
//! | Event | `file_version` (string) | 3 | length-delimited |
//! | Event | `summary` (Summary) | 5 | length-delimited |
//! | Summary | `value` (repeated Value) | 1 | length-delimited |
//! | Summary.Value | `tag` (string) | 1 | length-delimited |
//! | Summary.Value | `simple_value` (float) | 2 | 32-bit |
//!
//! The first record of a file is an Event with `file_version = "brain.Event:2"`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{Result, TrainError};

/// The CRC mask of the TFRecord format.
pub fn masked_crc(data: &[u8]) -> u32 {
    let c = crc32c::crc32c(data);
    (c.rotate_right(15)).wrapping_add(0xa282_ead8)
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn key(field: u32, wire: u8, out: &mut Vec<u8>) {
    varint(((field as u64) << 3) | wire as u64, out);
}

fn bytes_field(field: u32, data: &[u8], out: &mut Vec<u8>) {
    key(field, 2, out);
    varint(data.len() as u64, out);
    out.extend_from_slice(data);
}

/// The protobuf encoding of an Event holding scalar summaries (or the file version when
/// `file_version` is set).
pub fn encode_event(
    wall_time: f64,
    step: i64,
    file_version: Option<&str>,
    scalars: &[(&str, f32)],
) -> Vec<u8> {
    let mut out = Vec::new();
    key(1, 1, &mut out);
    out.extend_from_slice(&wall_time.to_le_bytes());
    key(2, 0, &mut out);
    varint(step as u64, &mut out);
    if let Some(v) = file_version {
        bytes_field(3, v.as_bytes(), &mut out);
    }
    if !scalars.is_empty() {
        let mut summary = Vec::new();
        for (tag, value) in scalars {
            let mut v = Vec::new();
            bytes_field(1, tag.as_bytes(), &mut v);
            key(2, 5, &mut v);
            v.extend_from_slice(&value.to_le_bytes());
            bytes_field(1, &v, &mut summary);
        }
        bytes_field(5, &summary, &mut out);
    }
    out
}

/// One TFRecord around `data`.
pub fn frame(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

/// Appends scalar events to one event file.
#[derive(Debug)]
pub struct EventWriter {
    file: BufWriter<File>,
    path: PathBuf,
}

impl EventWriter {
    /// A new file `events.out.tfevents.<seconds>.gigpo.<pid>` in `dir`, starting with the
    /// file-version event.
    pub fn create(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
        let now = wall_time();
        let path = dir.join(format!(
            "events.out.tfevents.{}.gigpo.{}",
            now as u64,
            std::process::id()
        ));
        let file = File::create(&path).map_err(|e| TrainError::io(&path, e))?;
        let mut w = Self {
            file: BufWriter::new(file),
            path,
        };
        w.write_record(&encode_event(now, 0, Some("brain.Event:2"), &[]))?;
        w.flush()?;
        Ok(w)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one event with `scalars` at `step` and flushes it to disk.
    pub fn scalars(&mut self, step: i64, scalars: &[(&str, f32)]) -> Result<()> {
        self.write_record(&encode_event(wall_time(), step, None, scalars))?;
        self.flush()
    }

    fn write_record(&mut self, data: &[u8]) -> Result<()> {
        self.file
            .write_all(&frame(data))
            .map_err(|e| TrainError::io(&self.path, e))
    }

    fn flush(&mut self) -> Result<()> {
        self.file
            .flush()
            .map_err(|e| TrainError::io(&self.path, e))?;
        self.file
            .get_ref()
            .sync_data()
            .map_err(|e| TrainError::io(&self.path, e))
    }
}

fn wall_time() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A decoded scalar event: step and (tag, value) pairs.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalarEvent {
    pub step: i64,
    pub file_version: Option<String>,
    pub scalars: Vec<(String, f32)>,
}

/// Reads an event file back, checking every CRC (for tests and tools).
pub fn read_events(bytes: &[u8]) -> std::result::Result<Vec<ScalarEvent>, String> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let header = bytes.get(at..at + 12).ok_or("truncated header")?;
        let len_bytes = &header[..8];
        if masked_crc(len_bytes) != u32::from_le_bytes(header[8..12].try_into().unwrap()) {
            return Err(format!("bad length CRC at byte {at}"));
        }
        let len = u64::from_le_bytes(len_bytes.try_into().unwrap()) as usize;
        let data = bytes.get(at + 12..at + 12 + len).ok_or("truncated data")?;
        let crc = bytes
            .get(at + 12 + len..at + 16 + len)
            .ok_or("truncated data CRC")?;
        if masked_crc(data) != u32::from_le_bytes(crc.try_into().unwrap()) {
            return Err(format!("bad data CRC at byte {at}"));
        }
        out.push(decode_event(data)?);
        at += 16 + len;
    }
    Ok(out)
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> std::result::Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.b.get(self.at).ok_or("truncated varint")?;
            self.at += 1;
            v |= ((byte & 0x7f) as u64) << shift;
            if byte < 0x80 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }

    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let s = self.b.get(self.at..self.at + n).ok_or("truncated field")?;
        self.at += n;
        Ok(s)
    }

    fn done(&self) -> bool {
        self.at >= self.b.len()
    }
}

fn decode_event(data: &[u8]) -> std::result::Result<ScalarEvent, String> {
    let mut r = Reader { b: data, at: 0 };
    let mut ev = ScalarEvent {
        step: 0,
        file_version: None,
        scalars: Vec::new(),
    };
    while !r.done() {
        let k = r.varint()?;
        match (k >> 3, k & 7) {
            (1, 1) => {
                r.take(8)?;
            }
            (2, 0) => ev.step = r.varint()? as i64,
            (3, 2) => {
                let n = r.varint()? as usize;
                ev.file_version = Some(String::from_utf8_lossy(r.take(n)?).into_owned());
            }
            (5, 2) => {
                let n = r.varint()? as usize;
                let mut s = Reader {
                    b: r.take(n)?,
                    at: 0,
                };
                while !s.done() {
                    if s.varint()? != (1 << 3) | 2 {
                        return Err("unexpected Summary field".into());
                    }
                    let n = s.varint()? as usize;
                    ev.scalars.push(decode_value(s.take(n)?)?);
                }
            }
            other => return Err(format!("unexpected Event field {other:?}")),
        }
    }
    Ok(ev)
}

fn decode_value(data: &[u8]) -> std::result::Result<(String, f32), String> {
    let mut r = Reader { b: data, at: 0 };
    let (mut tag, mut value) = (String::new(), f32::NAN);
    while !r.done() {
        match r.varint()? {
            0x0a => {
                let n = r.varint()? as usize;
                tag = String::from_utf8_lossy(r.take(n)?).into_owned();
            }
            0x15 => value = f32::from_le_bytes(r.take(4)?.try_into().unwrap()),
            k => return Err(format!("unexpected Value key {k}")),
        }
    }
    Ok((tag, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_reference_value() {
        // CRC-32C("123456789") = 0xE3069283 (RFC 3720 check value).
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
        // ((c >> 15) | (c << 17)) + 0xa282ead8, worked out by hand.
        assert_eq!(masked_crc(b"123456789"), 0xC78A_B0E5);
    }

    #[test]
    fn encoding_matches_hand_bytes() {
        let e = encode_event(0.0, 3, None, &[("a", 1.0)]);
        let mut want = vec![0x09];
        want.extend_from_slice(&0f64.to_le_bytes());
        want.extend_from_slice(&[0x10, 3, 0x2a, 10, 0x0a, 8, 0x0a, 1, b'a', 0x15]);
        want.extend_from_slice(&1f32.to_le_bytes());
        assert_eq!(e, want);
    }

    #[test]
    fn written_files_parse_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EventWriter::create(dir.path()).unwrap();
        w.scalars(1, &[("train/success_rate", 0.25), ("loss/total", -1.5)])
            .unwrap();
        w.scalars(300, &[("eval/success_rate", 0.5)]).unwrap();
        let bytes = std::fs::read(w.path()).unwrap();
        let events = read_events(&bytes).unwrap();
        assert_eq!(events.len(), 3);
        assert_eq!(events[0].file_version.as_deref(), Some("brain.Event:2"));
        assert_eq!(events[1].step, 1);
        assert_eq!(
            events[1].scalars,
            vec![
                ("train/success_rate".to_string(), 0.25),
                ("loss/total".to_string(), -1.5)
            ]
        );
        assert_eq!(events[2].step, 300);
        // A flipped byte is caught by the CRC.
        let mut bad = bytes.clone();
        let n = bad.len();
        bad[n - 6] ^= 1;
        assert!(read_events(&bad).is_err());
    }
}
