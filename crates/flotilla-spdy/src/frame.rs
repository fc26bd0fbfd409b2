//! The SPDY/3 frame codec: framing, the control frames spdystream reads and writes, and the
//! zlib-compressed header blocks.
//!
//! Both ends of a session use it: the server session in [`crate::session`] decodes with a
//! [`FrameDecoder`] and encodes with a [`FrameEncoder`]; a client (the crate's tests, or any
//! tool that wants to speak to the server) does the same with the roles swapped.
//!
//! Wire format (SPDY/3 draft, section 2.2), all integers big-endian:
//!
//! ```text
//! control: |1| version(15) | type(16) | flags(8) | length(24) | payload…
//! data:    |0| stream id(31)           | flags(8) | length(24) | payload…
//! ```
//!
//! Header blocks (SYN_STREAM, SYN_REPLY, HEADERS) are `u32 count, (u32 len, name, u32 len,
//! value)*`, compressed with one zlib stream per direction per session, primed with
//! [`crate::dictionary::DICTIONARY`] and sync-flushed after each block. Because the stream is
//! stateful, every header block must be inflated in order, even for a stream that is then
//! refused; an undecodable block leaves the session unusable (so it ends with GOAWAY).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::dictionary::{DICTIONARY, DICTIONARY_ADLER32};

/// The protocol version in every control frame.
pub const VERSION: u16 = 3;

/// Frame header size, control or data.
pub const HEADER_LEN: usize = 8;

/// The largest payload the 24-bit length field can carry.
pub const MAX_PAYLOAD_LEN: usize = (1 << 24) - 1;

/// FIN on a control frame (SYN_STREAM, SYN_REPLY, HEADERS) or a data frame.
pub const FLAG_FIN: u8 = 0x01;
/// UNIDIRECTIONAL on a SYN_STREAM.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;

/// Control frame types.
pub mod control_type {
    /// SYN_STREAM.
    pub const SYN_STREAM: u16 = 1;
    /// SYN_REPLY.
    pub const SYN_REPLY: u16 = 2;
    /// RST_STREAM.
    pub const RST_STREAM: u16 = 3;
    /// SETTINGS.
    pub const SETTINGS: u16 = 4;
    /// PING.
    pub const PING: u16 = 6;
    /// GOAWAY.
    pub const GOAWAY: u16 = 7;
    /// HEADERS.
    pub const HEADERS: u16 = 8;
    /// WINDOW_UPDATE.
    pub const WINDOW_UPDATE: u16 = 9;
}

/// RST_STREAM status codes (SPDY/3 section 2.6.3; spdystream's `RstStreamStatus`).
pub mod rst_status {
    /// PROTOCOL_ERROR.
    pub const PROTOCOL_ERROR: u32 = 1;
    /// INVALID_STREAM.
    pub const INVALID_STREAM: u32 = 2;
    /// REFUSED_STREAM.
    pub const REFUSED_STREAM: u32 = 3;
    /// UNSUPPORTED_VERSION.
    pub const UNSUPPORTED_VERSION: u32 = 4;
    /// CANCEL: what spdystream's `Stream.Reset` sends, and so what kubelet's stream handler
    /// rejection and kubectl's reset of a finished data stream send.
    pub const CANCEL: u32 = 5;
    /// INTERNAL_ERROR.
    pub const INTERNAL_ERROR: u32 = 6;
    /// FLOW_CONTROL_ERROR.
    pub const FLOW_CONTROL_ERROR: u32 = 7;
    /// STREAM_IN_USE.
    pub const STREAM_IN_USE: u32 = 8;
    /// STREAM_ALREADY_CLOSED.
    pub const STREAM_ALREADY_CLOSED: u32 = 9;
    /// FRAME_TOO_LARGE.
    pub const FRAME_TOO_LARGE: u32 = 11;
}

/// GOAWAY status codes.
pub mod goaway_status {
    /// OK: a normal close.
    pub const OK: u32 = 0;
    /// PROTOCOL_ERROR.
    pub const PROTOCOL_ERROR: u32 = 1;
    /// INTERNAL_ERROR.
    pub const INTERNAL_ERROR: u32 = 2;
}

/// A header block: lower-case names, each with one or more values, in arrival order.
///
/// On the wire a name carries its values joined with NUL; here each value is its own entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    /// An empty block.
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// Adds a value (the name is lower-cased, as SPDY requires).
    pub fn push(&mut self, name: &str, value: &str) {
        self.0.push((name.to_ascii_lowercase(), value.to_owned()));
    }

    /// The first value of `name` (compared case-insensitively), as Go's `http.Header.Get`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// All (name, value) entries.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// Number of entries (values, not distinct names).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there is no entry.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a> FromIterator<(&'a str, &'a str)> for Headers {
    fn from_iter<T: IntoIterator<Item = (&'a str, &'a str)>>(iter: T) -> Self {
        let mut h = Headers::new();
        for (n, v) in iter {
            h.push(n, v);
        }
        h
    }
}

/// One SETTINGS entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// FLAG_SETTINGS_PERSIST_VALUE (1) / FLAG_SETTINGS_PERSISTED (2).
    pub flags: u8,
    /// 24-bit id (4 = MAX_CONCURRENT_STREAMS, 7 = INITIAL_WINDOW_SIZE, …).
    pub id: u32,
    /// The value.
    pub value: u32,
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// SYN_STREAM: the peer opens a stream.
    SynStream {
        /// The new stream's id (odd from a client).
        stream_id: u32,
        /// Associated-to stream id (0 for none).
        associated_to: u32,
        /// 3-bit priority.
        priority: u8,
        /// Credential slot.
        slot: u8,
        /// FIN / UNIDIRECTIONAL.
        flags: u8,
        /// The headers.
        headers: Headers,
    },
    /// SYN_REPLY: the answer to a SYN_STREAM.
    SynReply {
        /// The stream.
        stream_id: u32,
        /// FIN.
        flags: u8,
        /// The headers.
        headers: Headers,
    },
    /// RST_STREAM.
    RstStream {
        /// The stream.
        stream_id: u32,
        /// One of [`rst_status`].
        status: u32,
    },
    /// SETTINGS.
    Settings {
        /// CLEAR_SETTINGS (1).
        flags: u8,
        /// Entries.
        entries: Vec<Setting>,
    },
    /// PING (odd ids from the client, even from the server).
    Ping {
        /// The id, echoed in the answer.
        id: u32,
    },
    /// GOAWAY.
    GoAway {
        /// The last stream id the sender accepted.
        last_good_stream_id: u32,
        /// One of [`goaway_status`].
        status: u32,
    },
    /// HEADERS: more headers on an open stream.
    Headers {
        /// The stream.
        stream_id: u32,
        /// FIN.
        flags: u8,
        /// The headers.
        headers: Headers,
    },
    /// WINDOW_UPDATE (stream 0: the SPDY/3.1 session window).
    WindowUpdate {
        /// The stream, or 0.
        stream_id: u32,
        /// The window increment (31 bits).
        delta: u32,
    },
    /// DATA.
    Data {
        /// The stream.
        stream_id: u32,
        /// FIN.
        flags: u8,
        /// The payload.
        data: Bytes,
    },
    /// A control frame of a type SPDY/3 does not define: skipped, as the spec asks.
    Unknown {
        /// Its type.
        frame_type: u16,
    },
}

/// A frame that breaks the protocol or a limit. Any of these ends the session: the header
/// compression state can no longer be trusted, or the peer is misbehaving.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The control frame's version is not 3.
    #[error("unsupported SPDY version {0}")]
    UnsupportedVersion(u16),
    /// The payload is longer than allowed.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    FrameTooLarge {
        /// The announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A control frame whose length or fields do not fit its type.
    #[error("invalid {frame} frame: {reason}")]
    InvalidControlFrame {
        /// Frame type name.
        frame: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// A frame naming stream 0 where a stream is required.
    #[error("{0} frame on stream 0")]
    ZeroStreamId(&'static str),
    /// The decompressed header block is bigger than allowed.
    #[error("header block exceeds {0} bytes decompressed")]
    HeaderBlockTooLarge(usize),
    /// More header entries than allowed.
    #[error("header block has {count} entries, more than the limit of {max}")]
    TooManyHeaders {
        /// Announced count.
        count: u64,
        /// The limit.
        max: usize,
    },
    /// The decompressed header block does not parse.
    #[error("malformed header block: {0}")]
    MalformedHeaderBlock(&'static str),
    /// zlib refused the compressed header block.
    #[error("header block decompression failed: {0}")]
    Decompression(String),
    /// zlib failed compressing (local; not the peer's fault).
    #[error("header block compression failed: {0}")]
    Compression(String),
}

/// What a [`FrameDecoder`] accepts.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest DATA payload (at most [`MAX_PAYLOAD_LEN`]).
    pub max_data_frame_len: usize,
    /// Largest control frame payload. Header blocks arrive whole in one frame, so this also
    /// bounds the compressed block.
    pub max_control_frame_len: usize,
    /// Largest decompressed header block.
    pub max_header_block: usize,
    /// Most header entries (name/value pairs, before NUL-splitting) in one block.
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_data_frame_len: MAX_PAYLOAD_LEN,
            max_control_frame_len: 256 * 1024 + 1024,
            max_header_block: 256 * 1024,
            max_headers: 256,
        }
    }
}

/// Decodes frames from a byte buffer, inflating header blocks with the session's shared
/// zlib stream.
#[derive(Debug)]
pub struct FrameDecoder {
    limits: Limits,
    inflate: Decompress,
}

impl FrameDecoder {
    /// A decoder for one direction of one session.
    pub fn new(limits: Limits) -> Self {
        Self { limits, inflate: Decompress::new(true) }
    }

    /// Decodes the next frame if `buf` holds all of it, consuming its bytes; `Ok(None)` if
    /// more bytes are needed. The length is checked against the limits as soon as the
    /// 8-byte header is there, so a caller never buffers more than one allowed frame.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let word0 = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let word1 = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
        let flags = (word1 >> 24) as u8;
        let len = (word1 & 0x00ff_ffff) as usize;
        let control = word0 & 0x8000_0000 != 0;
        if control {
            let version = ((word0 >> 16) & 0x7fff) as u16;
            if version != VERSION {
                return Err(FrameError::UnsupportedVersion(version));
            }
            if len > self.limits.max_control_frame_len {
                return Err(FrameError::FrameTooLarge { len, max: self.limits.max_control_frame_len });
            }
        } else if len > self.limits.max_data_frame_len {
            return Err(FrameError::FrameTooLarge { len, max: self.limits.max_data_frame_len });
        }
        if buf.len() < HEADER_LEN + len {
            buf.reserve(HEADER_LEN + len - buf.len());
            return Ok(None);
        }
        buf.advance(HEADER_LEN);
        let payload = buf.split_to(len).freeze();
        if !control {
            let stream_id = word0 & 0x7fff_ffff;
            if stream_id == 0 {
                return Err(FrameError::ZeroStreamId("DATA"));
            }
            return Ok(Some(Frame::Data { stream_id, flags, data: payload }));
        }
        let frame_type = (word0 & 0xffff) as u16;
        self.control(frame_type, flags, payload).map(Some)
    }

    fn control(&mut self, frame_type: u16, flags: u8, mut p: Bytes) -> Result<Frame, FrameError> {
        use control_type as t;
        let invalid = |frame, reason| FrameError::InvalidControlFrame { frame, reason };
        Ok(match frame_type {
            t::SYN_STREAM => {
                if p.len() < 10 {
                    return Err(invalid("SYN_STREAM", "shorter than 10 bytes"));
                }
                let stream_id = p.get_u32() & 0x7fff_ffff;
                let associated_to = p.get_u32() & 0x7fff_ffff;
                let priority = p.get_u8() >> 5;
                let slot = p.get_u8();
                // Inflate before any other check: the zlib stream must stay in step.
                let headers = self.header_block(&p)?;
                if stream_id == 0 {
                    return Err(FrameError::ZeroStreamId("SYN_STREAM"));
                }
                Frame::SynStream { stream_id, associated_to, priority, slot, flags, headers }
            }
            t::SYN_REPLY | t::HEADERS => {
                let name = if frame_type == t::SYN_REPLY { "SYN_REPLY" } else { "HEADERS" };
                if p.len() < 4 {
                    return Err(invalid(name, "shorter than 4 bytes"));
                }
                let stream_id = p.get_u32() & 0x7fff_ffff;
                let headers = self.header_block(&p)?;
                if stream_id == 0 {
                    return Err(FrameError::ZeroStreamId(name));
                }
                if frame_type == t::SYN_REPLY {
                    Frame::SynReply { stream_id, flags, headers }
                } else {
                    Frame::Headers { stream_id, flags, headers }
                }
            }
            t::RST_STREAM => {
                if p.len() != 8 {
                    return Err(invalid("RST_STREAM", "length is not 8"));
                }
                let stream_id = p.get_u32() & 0x7fff_ffff;
                let status = p.get_u32();
                if stream_id == 0 {
                    return Err(FrameError::ZeroStreamId("RST_STREAM"));
                }
                if status == 0 {
                    return Err(invalid("RST_STREAM", "status 0"));
                }
                Frame::RstStream { stream_id, status }
            }
            t::SETTINGS => {
                if p.len() < 4 {
                    return Err(invalid("SETTINGS", "shorter than 4 bytes"));
                }
                let count = p.get_u32() as usize;
                if count.checked_mul(8) != Some(p.len()) {
                    return Err(invalid("SETTINGS", "length does not match the entry count"));
                }
                let entries = (0..count)
                    .map(|_| {
                        let w = p.get_u32();
                        Setting { flags: (w >> 24) as u8, id: w & 0x00ff_ffff, value: p.get_u32() }
                    })
                    .collect();
                Frame::Settings { flags, entries }
            }
            t::PING => {
                if p.len() != 4 {
                    return Err(invalid("PING", "length is not 4"));
                }
                Frame::Ping { id: p.get_u32() }
            }
            t::GOAWAY => {
                if p.len() != 8 {
                    return Err(invalid("GOAWAY", "length is not 8"));
                }
                Frame::GoAway { last_good_stream_id: p.get_u32() & 0x7fff_ffff, status: p.get_u32() }
            }
            t::WINDOW_UPDATE => {
                if p.len() != 8 {
                    return Err(invalid("WINDOW_UPDATE", "length is not 8"));
                }
                let stream_id = p.get_u32() & 0x7fff_ffff;
                let delta = p.get_u32() & 0x7fff_ffff;
                if delta == 0 {
                    return Err(invalid("WINDOW_UPDATE", "delta 0"));
                }
                Frame::WindowUpdate { stream_id, delta }
            }
            other => Frame::Unknown { frame_type: other },
        })
    }

    fn header_block(&mut self, compressed: &[u8]) -> Result<Headers, FrameError> {
        let raw = self.inflate_block(compressed)?;
        parse_header_block(&raw, self.limits.max_headers)
    }

    /// Inflates one sync-flushed block, all of `input`, into at most `max_header_block` bytes.
    fn inflate_block(&mut self, input: &[u8]) -> Result<Vec<u8>, FrameError> {
        let max = self.limits.max_header_block;
        // One byte of headroom tells "exactly max" from "more than max".
        let cap = max.saturating_add(1);
        let mut out: Vec<u8> = Vec::with_capacity(cap.min(4096));
        let mut pos = 0usize;
        loop {
            if out.len() == out.capacity() {
                if out.len() >= cap {
                    return Err(FrameError::HeaderBlockTooLarge(max));
                }
                let grow = out.capacity().max(4096).min(cap - out.len());
                out.reserve_exact(grow);
            }
            let in_before = self.inflate.total_in();
            let out_before = out.len();
            let res = self.inflate.decompress_vec(&input[pos..], &mut out, FlushDecompress::Sync);
            let consumed = usize::try_from(self.inflate.total_in() - in_before)
                .map_err(|_| FrameError::Decompression("counter overflow".into()))?;
            pos += consumed;
            match res {
                Ok(Status::Ok | Status::BufError | Status::StreamEnd) => {}
                Err(e) => match e.needs_dictionary() {
                    Some(DICTIONARY_ADLER32) => {
                        self.inflate
                            .set_dictionary(DICTIONARY)
                            .map_err(|e| FrameError::Decompression(e.to_string()))?;
                        continue;
                    }
                    Some(_) => return Err(FrameError::Decompression("unknown preset dictionary".into())),
                    None => return Err(FrameError::Decompression(e.to_string())),
                },
            }
            if out.len() > max {
                return Err(FrameError::HeaderBlockTooLarge(max));
            }
            let done = pos == input.len() && out.len() < out.capacity();
            if done {
                return Ok(out);
            }
            if consumed == 0 && out.len() == out_before && out.len() < out.capacity() {
                // No progress with room to spare: the input is truncated mid-block.
                return Err(FrameError::Decompression("truncated header block".into()));
            }
        }
    }
}

fn parse_header_block(raw: &[u8], max_headers: usize) -> Result<Headers, FrameError> {
    let mut p = raw;
    let take_u32 = |p: &mut &[u8]| -> Result<u32, FrameError> {
        if p.len() < 4 {
            return Err(FrameError::MalformedHeaderBlock("truncated length"));
        }
        Ok(p.get_u32())
    };
    let take_str = |p: &mut &[u8], len: u32| -> Result<String, FrameError> {
        let len = len as usize;
        if p.len() < len {
            return Err(FrameError::MalformedHeaderBlock("truncated name or value"));
        }
        let (s, rest) = p.split_at(len);
        *p = rest;
        String::from_utf8(s.to_vec()).map_err(|_| FrameError::MalformedHeaderBlock("name or value is not UTF-8"))
    };
    let count = take_u32(&mut p)?;
    if count as usize > max_headers {
        return Err(FrameError::TooManyHeaders { count: u64::from(count), max: max_headers });
    }
    // Each entry takes at least 8 bytes: no allocation from a lying count.
    if (count as usize).saturating_mul(8) > p.len() {
        return Err(FrameError::MalformedHeaderBlock("entry count exceeds the block"));
    }
    let mut headers = Headers::new();
    for _ in 0..count {
        let n = take_u32(&mut p)?;
        let name = take_str(&mut p, n)?;
        if name.is_empty() {
            return Err(FrameError::MalformedHeaderBlock("empty header name"));
        }
        let v = take_u32(&mut p)?;
        let value = take_str(&mut p, v)?;
        let name = name.to_ascii_lowercase();
        for part in value.split('\0') {
            headers.0.push((name.clone(), part.to_owned()));
        }
    }
    if headers.len() > max_headers {
        return Err(FrameError::TooManyHeaders { count: headers.len() as u64, max: max_headers });
    }
    if !p.is_empty() {
        return Err(FrameError::MalformedHeaderBlock("trailing bytes after the last entry"));
    }
    Ok(headers)
}

/// Encodes frames, deflating header blocks with the session's shared zlib stream (so frames
/// must be written in the order they are encoded).
#[derive(Debug)]
pub struct FrameEncoder {
    deflate: Compress,
}

impl FrameEncoder {
    /// An encoder for one direction of one session.
    pub fn new() -> Result<Self, FrameError> {
        let mut deflate = Compress::new(Compression::default(), true);
        deflate.set_dictionary(DICTIONARY).map_err(|e| FrameError::Compression(e.to_string()))?;
        Ok(Self { deflate })
    }

    /// Appends `frame` to `dst`. Fails on a payload longer than the 24-bit length allows or
    /// a zlib failure.
    pub fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        use control_type as t;
        match frame {
            Frame::SynStream { stream_id, associated_to, priority, slot, flags, headers } => {
                let block = self.header_block(headers)?;
                control_header(dst, t::SYN_STREAM, *flags, 10 + block.len())?;
                dst.put_u32(stream_id & 0x7fff_ffff);
                dst.put_u32(associated_to & 0x7fff_ffff);
                dst.put_u8((priority & 0x7) << 5);
                dst.put_u8(*slot);
                dst.put_slice(&block);
            }
            Frame::SynReply { stream_id, flags, headers } | Frame::Headers { stream_id, flags, headers } => {
                let ty = if matches!(frame, Frame::SynReply { .. }) { t::SYN_REPLY } else { t::HEADERS };
                let block = self.header_block(headers)?;
                control_header(dst, ty, *flags, 4 + block.len())?;
                dst.put_u32(stream_id & 0x7fff_ffff);
                dst.put_slice(&block);
            }
            Frame::RstStream { stream_id, status } => {
                control_header(dst, t::RST_STREAM, 0, 8)?;
                dst.put_u32(stream_id & 0x7fff_ffff);
                dst.put_u32(*status);
            }
            Frame::Settings { flags, entries } => {
                control_header(dst, t::SETTINGS, *flags, 4 + 8 * entries.len())?;
                dst.put_u32(entries.len() as u32);
                for e in entries {
                    dst.put_u32(u32::from(e.flags) << 24 | (e.id & 0x00ff_ffff));
                    dst.put_u32(e.value);
                }
            }
            Frame::Ping { id } => {
                control_header(dst, t::PING, 0, 4)?;
                dst.put_u32(*id);
            }
            Frame::GoAway { last_good_stream_id, status } => {
                control_header(dst, t::GOAWAY, 0, 8)?;
                dst.put_u32(last_good_stream_id & 0x7fff_ffff);
                dst.put_u32(*status);
            }
            Frame::WindowUpdate { stream_id, delta } => {
                control_header(dst, t::WINDOW_UPDATE, 0, 8)?;
                dst.put_u32(stream_id & 0x7fff_ffff);
                dst.put_u32(delta & 0x7fff_ffff);
            }
            Frame::Data { stream_id, flags, data } => {
                data_header(dst, *stream_id, *flags, data.len())?;
                dst.put_slice(data);
            }
            Frame::Unknown { frame_type } => control_header(dst, *frame_type, 0, 0)?,
        }
        Ok(())
    }

    /// Serialises and deflates a header block, values of one name joined with NUL (spdystream
    /// rejects a block naming a header twice).
    fn header_block(&mut self, headers: &Headers) -> Result<Vec<u8>, FrameError> {
        let mut names: Vec<&str> = Vec::new();
        for (n, _) in headers.iter() {
            if !names.contains(&n) {
                names.push(n);
            }
        }
        let mut raw = Vec::new();
        raw.put_u32(names.len() as u32);
        for name in names {
            let values: Vec<&str> = headers.iter().filter(|(n, _)| *n == name).map(|(_, v)| v).collect();
            let value = values.join("\0");
            raw.put_u32(name.len() as u32);
            raw.put_slice(name.as_bytes());
            raw.put_u32(value.len() as u32);
            raw.put_slice(value.as_bytes());
        }
        let mut out = Vec::with_capacity(raw.len() / 2 + 64);
        let mut pos = 0usize;
        loop {
            if out.len() == out.capacity() {
                out.reserve(out.capacity().max(64));
            }
            let before = self.deflate.total_in();
            self.deflate
                .compress_vec(&raw[pos..], &mut out, FlushCompress::Sync)
                .map_err(|e| FrameError::Compression(e.to_string()))?;
            pos += usize::try_from(self.deflate.total_in() - before)
                .map_err(|_| FrameError::Compression("counter overflow".into()))?;
            // With room left in the output after a sync flush, the flush is complete.
            if pos == raw.len() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

fn control_header(dst: &mut BytesMut, ty: u16, flags: u8, len: usize) -> Result<(), FrameError> {
    if len > MAX_PAYLOAD_LEN {
        return Err(FrameError::FrameTooLarge { len, max: MAX_PAYLOAD_LEN });
    }
    dst.reserve(HEADER_LEN + len);
    dst.put_u16(0x8000 | VERSION);
    dst.put_u16(ty);
    dst.put_u32(u32::from(flags) << 24 | len as u32);
    Ok(())
}

fn data_header(dst: &mut BytesMut, stream_id: u32, flags: u8, len: usize) -> Result<(), FrameError> {
    if len > MAX_PAYLOAD_LEN {
        return Err(FrameError::FrameTooLarge { len, max: MAX_PAYLOAD_LEN });
    }
    dst.reserve(HEADER_LEN + len);
    dst.put_u32(stream_id & 0x7fff_ffff);
    dst.put_u32(u32::from(flags) << 24 | len as u32);
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn dictionary_matches_the_spec_checksum() {
        let mut a: u32 = 1;
        let mut b: u32 = 0;
        for &x in DICTIONARY.iter() {
            a = (a + u32::from(x)) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!((b << 16) | a, DICTIONARY_ADLER32);
        assert_eq!(DICTIONARY.len(), 1423);
    }

    /// Chromium's net/spdy framer test vector "SYN_REPLY frame, no FIN" (SPDY/3, compressed):
    /// headers bar=foo, foo=bar on stream 1, deflated by another implementation.
    #[test]
    fn golden_chromium_syn_reply_decodes() {
        let bytes: &[u8] = &[
            0x80, 0x03, 0x00, 0x02, 0x00, 0x00, 0x00, 0x31, 0x00, 0x00, 0x00, 0x01, 0x38, 0xea, 0xe3, 0xc6, 0xa7, 0xc2,
            0x02, 0xe5, 0x0e, 0x50, 0xc2, 0x4b, 0x4a, 0x04, 0xe5, 0x0b, 0x66, 0x80, 0x00, 0x4a, 0xcb, 0xcf, 0x07, 0x08,
            0x20, 0x10, 0x95, 0x96, 0x9f, 0x0f, 0xa2, 0x00, 0x02, 0x28, 0x29, 0xb1, 0x08, 0x20, 0x80, 0x00, 0x00, 0x00,
            0x00, 0xff, 0xff,
        ];
        let mut dec = FrameDecoder::new(Limits::default());
        let mut buf = BytesMut::from(bytes);
        let frame = dec.decode(&mut buf).unwrap().unwrap();
        assert!(buf.is_empty());
        let expected: Headers = [("bar", "foo"), ("foo", "bar")].into_iter().collect();
        assert_eq!(frame, Frame::SynReply { stream_id: 1, flags: 0, headers: expected });
    }

    #[test]
    fn round_trips_every_frame_type_with_one_compression_context() {
        let headers: Headers =
            [("streamtype", "data"), ("port", "80"), ("requestid", "0"), ("multi", "a"), ("multi", "b")]
                .into_iter()
                .collect();
        let frames = vec![
            Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 0,
                slot: 0,
                flags: 0,
                headers: headers.clone(),
            },
            Frame::SynStream { stream_id: 3, associated_to: 0, priority: 7, slot: 0, flags: FLAG_FIN, headers },
            Frame::SynReply { stream_id: 1, flags: 0, headers: Headers::new() },
            Frame::Headers { stream_id: 1, flags: FLAG_FIN, headers: [("x", "y")].into_iter().collect() },
            Frame::RstStream { stream_id: 3, status: rst_status::CANCEL },
            Frame::Settings { flags: 0, entries: vec![Setting { flags: 1, id: 7, value: 65536 }] },
            Frame::Ping { id: 1 },
            Frame::GoAway { last_good_stream_id: 3, status: goaway_status::OK },
            Frame::WindowUpdate { stream_id: 1, delta: 4096 },
            Frame::Data { stream_id: 1, flags: FLAG_FIN, data: Bytes::from_static(b"hello") },
        ];
        let mut enc = FrameEncoder::new().unwrap();
        let mut wire = BytesMut::new();
        for f in &frames {
            enc.encode(f, &mut wire).unwrap();
        }
        let mut dec = FrameDecoder::new(Limits::default());
        // Feed byte by byte: frames must not depend on read boundaries.
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in wire.iter() {
            buf.put_u8(*b);
            while let Some(f) = dec.decode(&mut buf).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, frames);
    }

    #[test]
    fn oversized_header_block_is_refused() {
        let big = "a".repeat(300 * 1024);
        let headers: Headers = [("big", big.as_str())].into_iter().collect();
        let mut enc = FrameEncoder::new().unwrap();
        let mut wire = BytesMut::new();
        let f = Frame::SynStream { stream_id: 1, associated_to: 0, priority: 0, slot: 0, flags: 0, headers };
        enc.encode(&f, &mut wire).unwrap();
        let mut dec = FrameDecoder::new(Limits::default());
        assert_eq!(dec.decode(&mut wire), Err(FrameError::HeaderBlockTooLarge(256 * 1024)));
    }

    #[test]
    fn too_many_headers_are_refused() {
        let names: Vec<String> = (0..300).map(|i| format!("h{i}")).collect();
        let headers: Headers = names.iter().map(|n| (n.as_str(), "v")).collect();
        let mut enc = FrameEncoder::new().unwrap();
        let mut wire = BytesMut::new();
        enc.encode(&Frame::SynReply { stream_id: 1, flags: 0, headers }, &mut wire).unwrap();
        let mut dec = FrameDecoder::new(Limits::default());
        assert!(matches!(dec.decode(&mut wire), Err(FrameError::TooManyHeaders { count: 300, .. })));
    }

    #[test]
    fn oversized_frames_are_refused_from_the_header_alone() {
        let limits = Limits { max_data_frame_len: 1024, ..Limits::default() };
        let mut dec = FrameDecoder::new(limits);
        let mut buf = BytesMut::from(&[0, 0, 0, 1, 0, 0, 0x04, 0x01][..]);
        assert!(matches!(dec.decode(&mut buf), Err(FrameError::FrameTooLarge { len: 1025, .. })));
        let mut buf = BytesMut::from(&[0x80, 3, 0, 1, 0, 0xff, 0xff, 0xff][..]);
        assert!(matches!(dec.decode(&mut buf), Err(FrameError::FrameTooLarge { .. })));
    }

    #[test]
    fn garbage_never_panics() {
        // A simple deterministic generator: frames with random types, lengths and payloads.
        let mut seed: u64 = 0x1234_5678_9abc_def0;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..2000 {
            let mut dec = FrameDecoder::new(Limits::default());
            let mut buf = BytesMut::new();
            let len = (next() % 64) as usize;
            let control = next() % 2 == 0;
            if control {
                buf.put_u16(0x8003);
                buf.put_u16((next() % 12) as u16);
            } else {
                buf.put_u32((next() % 8) as u32);
            }
            buf.put_u32(((next() % 4) as u32) << 24 | len as u32);
            for _ in 0..len {
                buf.put_u8(next() as u8);
            }
            let _ = dec.decode(&mut buf);
        }
    }
}
