//! The frame codec. Every bincode call of the project is in the two functions
//! [`encode_payload`] and [`decode_payload`]; everything else works on
//! frames.
//!
//! A frame is a big-endian `u32` length, then that many payload bytes. The
//! length is checked against [`MAX_FRAME`] before a byte of payload is
//! buffered, and decoding is limited to the payload, so a hostile peer can
//! make us hold at most one maximum frame.

use std::collections::HashMap;
use std::io::{Read, Write};

use bincode::Options;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{Bind, ListenerSpec, ProtocolError, MAX_FRAME, MAX_LISTENERS};

/// Length of the frame header.
pub const HEADER_LEN: usize = 4;

fn options() -> impl Options {
    // Fixed-width integers: the encoding is easy to read in a hex dump and
    // the golden-bytes test; the size limit bounds every length prefix the
    // payload declares (a `Vec` of 2^62 elements fails before allocating).
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
        .with_limit(u64::from(MAX_FRAME))
        .reject_trailing_bytes()
}

/// Encodes `msg` as a payload (no header).
pub fn encode_payload<T: Serialize>(msg: &T) -> Result<Vec<u8>, ProtocolError> {
    options()
        .serialize(msg)
        .map_err(|e| ProtocolError::Encode(e.to_string()))
}

/// Decodes one payload (no header). Trailing bytes are an error.
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, ProtocolError> {
    if payload.len() > MAX_FRAME as usize {
        return Err(ProtocolError::FrameTooLarge {
            len: u32::try_from(payload.len()).unwrap_or(u32::MAX),
        });
    }
    options().deserialize(payload).map_err(|e| match *e {
        bincode::ErrorKind::Custom(ref s) if s.contains("bytes remaining") => {
            ProtocolError::TrailingBytes
        }
        other => ProtocolError::Decode(other.to_string()),
    })
}

/// Encodes `msg` as a whole frame, header included.
pub fn encode_frame<T: Serialize>(msg: &T) -> Result<Vec<u8>, ProtocolError> {
    let payload = encode_payload(msg)?;
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|&l| l <= MAX_FRAME)
        .ok_or(ProtocolError::Encode(format!(
            "message of {} bytes exceeds the maximum frame of {MAX_FRAME} bytes",
            payload.len()
        )))?;
    let mut frame = Vec::with_capacity(HEADER_LEN + payload.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&payload);
    Ok(frame)
}

/// Checks a frame header: the declared payload length, if acceptable.
pub fn check_header(header: [u8; HEADER_LEN]) -> Result<usize, ProtocolError> {
    let len = u32::from_be_bytes(header);
    if len == 0 {
        return Err(ProtocolError::EmptyFrame);
    }
    if len > MAX_FRAME {
        return Err(ProtocolError::FrameTooLarge { len });
    }
    Ok(len as usize)
}

/// Accumulates bytes from a nonblocking stream and yields whole payloads.
///
/// The buffer never holds more than one header plus one maximum frame: the
/// header is checked as soon as its four bytes are in, and a caller feeds at
/// most [`FrameBuf::wanted`] bytes at a time.
#[derive(Debug, Default)]
pub struct FrameBuf {
    buf: Vec<u8>,
}

impl FrameBuf {
    pub fn new() -> Self {
        FrameBuf::default()
    }

    /// How many more bytes complete the current header or frame: read at
    /// most this many so no more than one frame is ever buffered. An error
    /// means the buffered header is bad; drop the connection.
    pub fn wanted(&self) -> Result<usize, ProtocolError> {
        if self.buf.len() < HEADER_LEN {
            return Ok(HEADER_LEN - self.buf.len());
        }
        let len = check_header(self.header())?;
        Ok(HEADER_LEN + len - self.buf.len())
    }

    /// Appends bytes read from the peer. Bytes past [`FrameBuf::wanted`] are
    /// kept too, but the caller should not offer them.
    pub fn extend(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next whole payload, if one is buffered.
    pub fn next_payload(&mut self) -> Result<Option<Vec<u8>>, ProtocolError> {
        if self.buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let len = check_header(self.header())?;
        if self.buf.len() < HEADER_LEN + len {
            return Ok(None);
        }
        let rest = self.buf.split_off(HEADER_LEN + len);
        let mut frame = std::mem::replace(&mut self.buf, rest);
        frame.drain(..HEADER_LEN);
        Ok(Some(frame))
    }

    /// The payload length the buffered header declares (unchecked), once
    /// its four bytes are in.
    pub fn declared(&self) -> Option<usize> {
        (self.buf.len() >= HEADER_LEN).then(|| u32::from_be_bytes(self.header()) as usize)
    }

    /// Bytes buffered that do not yet make a whole frame.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    fn header(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h.copy_from_slice(&self.buf[..HEADER_LEN]);
        h
    }
}

/// Reads one whole payload from a blocking stream. `Ok(None)` means the
/// peer closed the stream cleanly before a new frame began.
pub fn read_payload<R: Read>(r: &mut R) -> Result<Option<Vec<u8>>, ProtocolError> {
    let mut header = [0u8; HEADER_LEN];
    let got = read_full(r, &mut header)?;
    if got == 0 {
        return Ok(None);
    }
    if got < HEADER_LEN {
        return Err(ProtocolError::Truncated {
            expected: HEADER_LEN,
            got,
        });
    }
    let len = check_header(header)?;
    let mut payload = vec![0u8; len];
    let got = read_full(r, &mut payload)?;
    if got < len {
        return Err(ProtocolError::Truncated { expected: len, got });
    }
    Ok(Some(payload))
}

/// Reads and decodes one message from a blocking stream; a clean close is
/// an error here (the caller expected an answer).
pub fn read_message<T: DeserializeOwned, R: Read>(r: &mut R) -> Result<T, ProtocolError> {
    match read_payload(r)? {
        Some(p) => decode_payload(&p),
        None => Err(ProtocolError::Io("connection closed by peer".into())),
    }
}

/// Encodes and writes one message to a blocking stream.
pub fn write_message<T: Serialize, W: Write>(w: &mut W, msg: &T) -> Result<(), ProtocolError> {
    let frame = encode_frame(msg)?;
    w.write_all(&frame)
        .and_then(|()| w.flush())
        .map_err(|e| ProtocolError::Io(e.to_string()))
}

fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> Result<usize, ProtocolError> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ProtocolError::Io(e.to_string())),
        }
    }
    Ok(got)
}

/// The checks that make an `Apply` malformed as a whole (trust rule 1):
/// too many listeners, two with the same bind key, or two unix listeners
/// on one path whatever their socket types (the second bind would unlink
/// the first one's socket). Per-listener validation is the core's, and
/// refuses only that listener.
pub fn check_apply(listeners: &[ListenerSpec]) -> Result<(), ProtocolError> {
    if listeners.len() > MAX_LISTENERS {
        return Err(ProtocolError::TooManyListeners {
            count: listeners.len(),
        });
    }
    let mut seen = HashMap::with_capacity(listeners.len());
    let mut paths = HashMap::new();
    for (i, l) in listeners.iter().enumerate() {
        if let Some(first) = seen.insert(l.key(), i) {
            return Err(ProtocolError::DuplicateBindKey { first, second: i });
        }
        if let Bind::Unix { path } = &l.bind {
            if let Some(first) = paths.insert(path.as_str(), i) {
                return Err(ProtocolError::SharedUnixPath { first, second: i });
            }
        }
    }
    Ok(())
}
