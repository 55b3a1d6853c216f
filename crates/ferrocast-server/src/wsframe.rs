//! Server-to-client WebSocket frames written straight to the socket.
//!
//! Frames from the server are never masked, so a frame is a 2-10 byte header followed by
//! the payload. The writer sends the header and the shared payload bytes with one
//! vectored write: no per-connection write buffer, no copy of the payload, no UTF-8
//! re-validation (every JSON payload is serde_json output). How queued frames join into
//! one message depends on the protocol ([`Framing`]).

use bytes::Bytes;
use std::io::IoSlice;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Opcodes of the frames the server sends.
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PONG: u8 = 0xA;
/// FIN bit: every frame sent is a whole message.
const FIN: u8 = 0x80;

/// Largest WebSocket message the writer builds when joining queued frames.
pub const MAX_BATCH_MESSAGE: usize = 16 * 1024;

/// Slices handed to one `writev` at most (Linux IOV_MAX is 1024).
const MAX_IOVECS: usize = 512;

/// How a connection's queued frames become WebSocket messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framing {
    opcode: u8,
    separator: &'static [u8],
}

impl Framing {
    /// JSON: text messages, frames joined with `\n`.
    pub const JSON: Framing = Framing {
        opcode: TEXT,
        separator: b"\n",
    };
    /// Protobuf: binary messages, length-prefixed records simply concatenated.
    pub const PROTOBUF: Framing = Framing {
        opcode: BINARY,
        separator: b"",
    };

    /// The framing of a protocol.
    pub fn of(protocol: ferrocast_protocol::Protocol) -> Framing {
        match protocol {
            ferrocast_protocol::Protocol::Json => Framing::JSON,
            ferrocast_protocol::Protocol::Protobuf => Framing::PROTOBUF,
        }
    }
}

/// A frame header: up to 10 bytes.
#[derive(Clone, Copy)]
pub struct Header {
    bytes: [u8; 10],
    len: u8,
}

impl Header {
    /// The header of an unmasked frame with `opcode` and a payload of `len` bytes.
    pub fn new(opcode: u8, len: usize) -> Header {
        let mut bytes = [0u8; 10];
        bytes[0] = FIN | opcode;
        let used = if len < 126 {
            bytes[1] = len as u8;
            2
        } else if len <= u16::MAX as usize {
            bytes[1] = 126;
            bytes[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            4
        } else {
            bytes[1] = 127;
            bytes[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            10
        };
        Header { bytes, len: used }
    }

    /// The encoded header.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

/// Groups queued frames into messages of at most [`MAX_BATCH_MESSAGE`] bytes (a frame
/// larger than that is a message of its own): returns (first frame, frame count, payload
/// length with the separators of `sep` bytes) per message.
pub fn group(frames: &[Bytes], sep: usize) -> Vec<(usize, usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut len = 0;
    for (i, f) in frames.iter().enumerate() {
        if i > start && len + sep + f.len() > MAX_BATCH_MESSAGE {
            out.push((start, i - start, len));
            start = i;
            len = 0;
        }
        len += if i > start { sep + f.len() } else { f.len() };
    }
    if start < frames.len() {
        out.push((start, frames.len() - start, len));
    }
    out
}

/// Writes every slice, however the kernel splits the writes.
async fn write_all_vectored<W: AsyncWrite + Unpin>(
    w: &mut W,
    mut slices: &mut [IoSlice<'_>],
) -> std::io::Result<()> {
    while !slices.is_empty() {
        let end = slices.len().min(MAX_IOVECS);
        let n = w.write_vectored(&slices[..end]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut slices, n);
    }
    Ok(())
}

/// Writes an optional pong and then the queued frames, consecutive ones joined into one
/// message as `framing` says (JSON: `\n`-separated; Protobuf: concatenated records).
pub async fn write_frames<W: AsyncWrite + Unpin>(
    w: &mut W,
    pong: Option<&Bytes>,
    frames: &[Bytes],
    framing: Framing,
) -> std::io::Result<()> {
    if let (None, [single]) = (pong, frames) {
        // The usual case at low rates: one frame, no allocation.
        let header = Header::new(framing.opcode, single.len());
        let mut slices = [IoSlice::new(header.as_slice()), IoSlice::new(single)];
        return write_all_vectored(w, &mut slices).await;
    }
    let groups = group(frames, framing.separator.len());
    let pong_header = pong.map(|p| Header::new(PONG, p.len().min(125)));
    let headers: Vec<Header> = groups
        .iter()
        .map(|(_, _, len)| Header::new(framing.opcode, *len))
        .collect();
    let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(2 + frames.len() * 2 + groups.len());
    if let (Some(h), Some(p)) = (&pong_header, pong) {
        slices.push(IoSlice::new(h.as_slice()));
        slices.push(IoSlice::new(&p[..p.len().min(125)]));
    }
    for ((start, count, _), header) in groups.iter().zip(&headers) {
        slices.push(IoSlice::new(header.as_slice()));
        for (k, f) in frames[*start..start + count].iter().enumerate() {
            if k > 0 && !framing.separator.is_empty() {
                slices.push(IoSlice::new(framing.separator));
            }
            slices.push(IoSlice::new(f));
        }
    }
    write_all_vectored(w, &mut slices).await
}

/// Writes a close frame with `code` and `reason` (cut to the 123 bytes a close frame
/// allows, at a character boundary).
pub async fn write_close<W: AsyncWrite + Unpin>(
    w: &mut W,
    code: u16,
    reason: &str,
) -> std::io::Result<()> {
    let mut cut = reason.len().min(123);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut frame = Vec::with_capacity(4 + cut);
    frame.extend_from_slice(Header::new(CLOSE, 2 + cut).as_slice());
    frame.extend_from_slice(&code.to_be_bytes());
    frame.extend_from_slice(&reason.as_bytes()[..cut]);
    w.write_all(&frame).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lengths() {
        assert_eq!(Header::new(TEXT, 5).as_slice(), &[0x81, 5]);
        assert_eq!(Header::new(TEXT, 126).as_slice(), &[0x81, 126, 0, 126]);
        assert_eq!(
            Header::new(TEXT, 70_000).as_slice(),
            &[0x81, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]
        );
        assert_eq!(Header::new(CLOSE, 2).as_slice(), &[0x88, 2]);
    }

    #[test]
    fn grouping_respects_the_message_bound() {
        let small = Bytes::from(vec![b'a'; 100]);
        let big = Bytes::from(vec![b'b'; MAX_BATCH_MESSAGE + 5]);
        let frames = vec![small.clone(), small.clone(), big, small.clone()];
        assert_eq!(
            group(&frames, 1),
            vec![(0, 2, 201), (2, 1, MAX_BATCH_MESSAGE + 5), (3, 1, 100)]
        );
        assert_eq!(group(&frames[..2], 0), vec![(0, 2, 200)]);
        assert!(group(&[], 1).is_empty());
    }

    #[tokio::test]
    async fn frames_on_the_wire() {
        let mut out: Vec<u8> = Vec::new();
        let frames = vec![Bytes::from_static(b"{}"), Bytes::from_static(b"[1]")];
        let pong = Bytes::from_static(b"hi");
        write_frames(&mut out, Some(&pong), &frames, Framing::JSON)
            .await
            .unwrap();
        assert_eq!(out, b"\x8a\x02hi\x81\x06{}\n[1]");
        let mut one: Vec<u8> = Vec::new();
        write_frames(&mut one, None, &frames[..1], Framing::JSON)
            .await
            .unwrap();
        assert_eq!(one, b"\x81\x02{}");
        let records = vec![Bytes::from_static(b"\x00"), Bytes::from_static(b"\x01\x08")];
        let mut pb: Vec<u8> = Vec::new();
        write_frames(&mut pb, None, &records, Framing::PROTOBUF)
            .await
            .unwrap();
        assert_eq!(pb, b"\x82\x03\x00\x01\x08");
        let mut close: Vec<u8> = Vec::new();
        write_close(&mut close, 3001, "shutdown").await.unwrap();
        assert_eq!(close, b"\x88\x0a\x0b\xb9shutdown");
    }
}
