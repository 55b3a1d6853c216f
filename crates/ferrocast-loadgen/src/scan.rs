//! Payload construction and the cheap scans the receivers use on the hot path.
//!
//! A payload is `{"seq":N,"ts":T,"pad":"xxx..."}`, padded to the requested size. The
//! receivers never build a JSON tree: they look for `"seq":` and `"ts":` with a substring
//! search and parse the digits that follow (the pad is only `x`, so it cannot match).

use std::sync::OnceLock;
use std::time::Instant;

static BASE: OnceLock<Instant> = OnceLock::new();

/// Fixes the clock origin shared by publishers and receivers (same process).
pub fn init_clock() -> Instant {
    *BASE.get_or_init(Instant::now)
}

/// Microseconds since the shared origin.
#[inline]
pub fn now_us() -> u64 {
    init_clock().elapsed().as_micros() as u64
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

/// Position of `needle` in `hay`.
#[inline]
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let first = *needle.first()?;
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        match hay[i..hay.len() - needle.len() + 1]
            .iter()
            .position(|&b| b == first)
        {
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
    fn scans_a_push() {
        let line = br#"{"push":{"channel":"bench:c3","pub":{"data":{"pad":"xx","seq":7,"ts":99},"offset":1}}}"#;
        assert_eq!(push_channel(line), Some(&b"bench:c3"[..]));
        assert_eq!(seq_ts(line), Some((7, 99)));
        assert_eq!(find(b"abc", b"abcd"), None);
        assert_eq!(find(b"aab", b"ab"), Some(1));
    }
}
