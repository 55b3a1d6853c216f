//! Payload construction and the cheap scans the receivers use on the hot path.
//!
//! A payload is `{"seq":N,"ts":T,"pad":"xxx..."}`, padded to the requested size. The
//! receivers never build a JSON tree: they look for `"seq":` and `"ts":` with a substring
//! search and parse the digits that follow (the pad is only `x`, so it cannot match).

use std::sync::OnceLock;
use std::time::{Instant, SystemTime};

/// The clock origin: a monotonic instant and the wall-clock time read right after it.
static BASE: OnceLock<(Instant, SystemTime)> = OnceLock::new();

fn base() -> &'static (Instant, SystemTime) {
    BASE.get_or_init(|| (Instant::now(), SystemTime::now()))
}

/// Fixes the clock origin shared by publishers and receivers (same process).
pub fn init_clock() -> Instant {
    base().0
}

/// Microseconds since the shared origin.
#[inline]
pub fn now_us() -> u64 {
    init_clock().elapsed().as_micros() as u64
}

/// A wall-clock time (e.g. a kernel receive timestamp) on the shared clock, in
/// microseconds since the origin (0 if it is before the origin). Runs are seconds long, so
/// the drift between the wall clock and the monotonic clock does not matter.
pub fn wall_to_clock_us(t: SystemTime) -> u64 {
    t.duration_since(base().1)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Appends a payload of (at least) `size` bytes to `out`.
pub fn build_payload(out: &mut Vec<u8>, seq: u64, ts: u64, size: usize) {
    use std::io::Write;
    let start = out.len();
    let _ = write!(out, "{{\"seq\":{seq},\"ts\":{ts},\"pad\":\"");
    // The closing `"}` takes two bytes.
    let used = out.len() - start + 2;
    if size > used {
        out.resize(out.len() + (size - used), b'x');
    }
    out.extend_from_slice(b"\"}");
}

/// Position of the first `byte` in `hay` (8 bytes at a time).
#[inline]
pub fn memchr(byte: u8, hay: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let rep = LO.wrapping_mul(u64::from(byte));
    let mut i = 0;
    while i + 8 <= hay.len() {
        let mut w = [0u8; 8];
        w.copy_from_slice(&hay[i..i + 8]);
        let x = u64::from_le_bytes(w) ^ rep;
        // The lowest flagged byte is always a real match (little-endian order).
        let t = x.wrapping_sub(LO) & !x & HI;
        if t != 0 {
            return Some(i + (t.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    hay[i..].iter().position(|&b| b == byte).map(|p| i + p)
}

/// Iterates over the `\n`-separated lines of a frame.
pub fn lines(frame: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(frame);
    std::iter::from_fn(move || {
        let r = rest?;
        match memchr(b'\n', r) {
            Some(p) => {
                rest = Some(&r[p + 1..]);
                Some(&r[..p])
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}

/// Position of `needle` in `hay`.
#[inline]
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let first = *needle.first()?;
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        match memchr(first, &hay[i..hay.len() - needle.len() + 1]) {
            None => return None,
            Some(p) => {
                let at = i + p;
                if &hay[at..at + needle.len()] == needle {
                    return Some(at);
                }
                i = at + 1;
            }
        }
    }
    None
}

/// Parses the unsigned integer right after `key` (e.g. `"seq":`).
#[inline]
pub fn number_after(hay: &[u8], key: &[u8]) -> Option<u64> {
    let at = find(hay, key)? + key.len();
    let mut v: u64 = 0;
    let mut n = 0;
    for &b in &hay[at..] {
        if b.is_ascii_digit() {
            v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
            n += 1;
        } else {
            break;
        }
    }
    (n > 0).then_some(v)
}

/// `seq` and `ts` of a payload (anywhere inside `hay`).
#[inline]
pub fn seq_ts(hay: &[u8]) -> Option<(u64, u64)> {
    Some((
        number_after(hay, b"\"seq\":")?,
        number_after(hay, b"\"ts\":")?,
    ))
}

/// Digits at the start of `b`: (value, digits consumed).
#[inline]
fn leading_number(b: &[u8]) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    let mut n = 0;
    for &c in b {
        if !c.is_ascii_digit() {
            break;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
        n += 1;
    }
    (n > 0).then_some((v, n))
}

/// `seq` and `ts` of a payload that starts with our own `{"seq":N,"ts":T` (the usual
/// case: the broker passes the data through), else found anywhere in `data`.
#[inline]
pub fn payload_seq_ts(data: &[u8]) -> Option<(u64, u64)> {
    const SEQ: &[u8] = b"{\"seq\":";
    const TS: &[u8] = b",\"ts\":";
    if let Some(rest) = data.strip_prefix(SEQ)
        && let Some((seq, n)) = leading_number(rest)
        && let Some(rest) = rest[n..].strip_prefix(TS)
        && let Some((ts, _)) = leading_number(rest)
    {
        return Some((seq, ts));
    }
    seq_ts(data)
}

/// `(seq, ts)` read from a publication payload.
pub type SeqTs = (u64, u64);

/// Channel, `seq` and `ts` of a Centrifugo publication push line
/// (`{"push":{"channel":"..","pub":{"data":{..}}}}`), with a fast path for the exact
/// layout the broker writes and a general scan otherwise.
#[inline]
pub fn parse_push(line: &[u8]) -> Option<(&[u8], Option<SeqTs>)> {
    const HEAD: &[u8] = b"{\"push\":{\"channel\":\"";
    const DATA: &[u8] = b"\",\"pub\":{\"data\":";
    if let Some(rest) = line.strip_prefix(HEAD)
        && let Some(end) = rest.iter().position(|&b| b == b'"')
    {
        let channel = &rest[..end];
        let after = &rest[end..];
        let st = match after.strip_prefix(DATA) {
            Some(data) => payload_seq_ts(data),
            None => seq_ts(after),
        };
        return Some((channel, st));
    }
    let channel = push_channel(line)?;
    Some((channel, seq_ts(line)))
}

/// The string value of `"channel":"..."` in a Centrifugo push line.
#[inline]
pub fn push_channel(line: &[u8]) -> Option<&[u8]> {
    const KEY: &[u8] = b"\"channel\":\"";
    let at = find(line, KEY)? + KEY.len();
    let end = line[at..].iter().position(|&b| b == b'"')?;
    Some(&line[at..at + end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_has_size_and_parses() {
        let mut v = Vec::new();
        build_payload(&mut v, 42, 123456, 100);
        assert_eq!(v.len(), 100);
        let j: serde_json::Value = serde_json::from_slice(&v).unwrap();
        assert_eq!(j["seq"], 42);
        assert_eq!(seq_ts(&v), Some((42, 123456)));
        let mut small = Vec::new();
        build_payload(&mut small, 1, 2, 0);
        assert_eq!(&small[..], br#"{"seq":1,"ts":2,"pad":""}"#);
    }

    #[test]
    fn memchr_and_lines() {
        let hay = b"0123456789abcdef\nxyz\n\n";
        for (i, &b) in hay.iter().enumerate() {
            assert_eq!(memchr(b, hay), hay.iter().position(|&c| c == b), "{i}");
        }
        assert_eq!(memchr(b'Q', hay), None);
        assert_eq!(
            memchr(0x80, &[0x7f, 0x80, 0x01, 0, 0, 0, 0, 0, 0x80]),
            Some(1)
        );
        let l: Vec<&[u8]> = lines(hay).collect();
        assert_eq!(l, vec![&b"0123456789abcdef"[..], b"xyz", b"", b""]);
        assert_eq!(lines(b"{}").count(), 1);
    }

    #[test]
    fn scans_a_push() {
        let line = br#"{"push":{"channel":"bench:c3","pub":{"data":{"pad":"xx","seq":7,"ts":99},"offset":1}}}"#;
        assert_eq!(push_channel(line), Some(&b"bench:c3"[..]));
        assert_eq!(seq_ts(line), Some((7, 99)));
        assert_eq!(parse_push(line), Some((&b"bench:c3"[..], Some((7, 99)))));
        let fast = br#"{"push":{"channel":"b:s","pub":{"data":{"seq":12,"ts":345,"pad":"x"}}}}"#;
        assert_eq!(parse_push(fast), Some((&b"b:s"[..], Some((12, 345)))));
        let other = br#"{"push":{"pub":{"data":{"ts":5,"seq":6}},"channel":"q"}}"#;
        assert_eq!(parse_push(other), Some((&b"q"[..], Some((6, 5)))));
        assert_eq!(
            payload_seq_ts(br#"{"seq":1,"ts":2,"pad":""}"#),
            Some((1, 2))
        );
        assert_eq!(
            payload_seq_ts(br#"{"pad":"","ts":2,"seq":1}"#),
            Some((1, 2))
        );
        assert_eq!(find(b"abc", b"abcd"), None);
        assert_eq!(find(b"aab", b"ab"), Some(1));
    }
}
