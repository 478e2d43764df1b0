//! The MongoDB wire format: the 16-byte header, OP_MSG (a command document plus document
//! sequences, an optional CRC-32C), and the legacy OP_QUERY / OP_REPLY pair that drivers
//! still use for their first `hello`. Pure functions over bytes: the connection reads a
//! frame whole (bounded by [`MAX_MESSAGE_SIZE`]) and hands it here.

use bson::{Bson, Document, RawDocument};

pub const OP_REPLY: i32 = 1;
pub const OP_QUERY: i32 = 2004;
pub const OP_MSG: i32 = 2013;
pub const HEADER_LEN: usize = 16;
/// `maxMessageSizeBytes` in `hello`: a frame longer than this is refused before it is read.
pub const MAX_MESSAGE_SIZE: usize = 48_000_000;
/// `maxBsonObjectSize` in `hello`.
pub const MAX_BSON_SIZE: usize = 16 * 1024 * 1024;

/// OP_MSG flag bits.
pub const CHECKSUM_PRESENT: u32 = 1;
pub const MORE_TO_COME: u32 = 1 << 1;
pub const EXHAUST_ALLOWED: u32 = 1 << 16;
/// Bits 0–15 are "required": one this server does not know means it cannot read the message.
const KNOWN_REQUIRED: u32 = CHECKSUM_PRESENT | MORE_TO_COME;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("message length {0} is outside {HEADER_LEN}..={MAX_MESSAGE_SIZE}")]
    Length(i32),
    #[error("opcode {0} is not supported")]
    OpCode(i32),
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("the message's checksum does not match")]
    Checksum,
    #[error("unknown required flag bits {0:#x}")]
    Flags(u32),
}

fn malformed(what: impl Into<String>) -> WireError {
    WireError::Malformed(what.into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub length: i32,
    pub request_id: i32,
    pub response_to: i32,
    pub op_code: i32,
}

impl Header {
    pub fn parse(b: &[u8; HEADER_LEN]) -> Header {
        let i = |n: usize| i32::from_le_bytes([b[n], b[n + 1], b[n + 2], b[n + 3]]);
        Header { length: i(0), request_id: i(4), response_to: i(8), op_code: i(12) }
    }

    /// The number of bytes after the header, once the length is within bounds.
    pub fn body_len(&self) -> Result<usize, WireError> {
        match usize::try_from(self.length) {
            Ok(n) if (HEADER_LEN..=MAX_MESSAGE_SIZE).contains(&n) => Ok(n - HEADER_LEN),
            _ => Err(WireError::Length(self.length)),
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        for v in [self.length, self.request_id, self.response_to, self.op_code] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

/// A reader over a message body that fails with what it was reading.
struct Cursor<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], WireError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or_else(|| malformed(format!("{what} runs past the end")))?;
        let s = &self.buf[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn i32(&mut self, what: &str) -> Result<i32, WireError> {
        let b = self.take(4, what)?;
        Ok(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u8(&mut self, what: &str) -> Result<u8, WireError> {
        Ok(self.take(1, what)?[0])
    }

    fn cstring(&mut self, what: &str) -> Result<&'a str, WireError> {
        let rest = &self.buf[self.at..];
        let nul = rest.iter().position(|b| *b == 0).ok_or_else(|| malformed(format!("{what} has no terminator")))?;
        let s = std::str::from_utf8(&rest[..nul]).map_err(|_| malformed(format!("{what} is not UTF-8")))?;
        self.at += nul + 1;
        Ok(s)
    }

    /// One BSON document, bounded by its own length prefix and [`MAX_BSON_SIZE`].
    fn document(&mut self, what: &str) -> Result<Document, WireError> {
        let start = self.at;
        let len = self.i32(what)?;
        let len = usize::try_from(len)
            .ok()
            .filter(|n| (5..=MAX_BSON_SIZE).contains(n))
            .ok_or_else(|| malformed(format!("{what} has length {len}")))?;
        self.at = start;
        let bytes = self.take(len, what)?;
        let raw = RawDocument::from_bytes(bytes).map_err(|e| malformed(format!("{what}: {e}")))?;
        Document::try_from(raw).map_err(|e| malformed(format!("{what}: {e}")))
    }

    fn done(&self) -> bool {
        self.at == self.buf.len()
    }
}

/// An OP_MSG as a command: the body document with each document sequence merged in as
/// an array field of its identifier (`documents`, `updates`, `deletes`), as a command
/// sent inline would have it.
#[derive(Debug, Clone, PartialEq)]
pub struct Msg {
    pub flags: u32,
    pub command: Document,
}

/// Parses an OP_MSG; `message` is the whole frame, header included (the checksum covers it).
pub fn parse_msg(message: &[u8]) -> Result<Msg, WireError> {
    let body = message.get(HEADER_LEN..).ok_or_else(|| malformed("shorter than a header"))?;
    let mut c = Cursor { buf: body, at: 0 };
    let flags = c.i32("flagBits")? as u32;
    if flags & 0xffff & !KNOWN_REQUIRED != 0 {
        return Err(WireError::Flags(flags & 0xffff & !KNOWN_REQUIRED));
    }
    let mut sections_end = body.len();
    if flags & CHECKSUM_PRESENT != 0 {
        sections_end = body.len().checked_sub(4).ok_or_else(|| malformed("no room for the checksum"))?;
        let want = u32::from_le_bytes(body[sections_end..].try_into().expect("4 bytes"));
        let got = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, &message[..message.len() - 4]) as u32;
        if want != got {
            return Err(WireError::Checksum);
        }
    }
    let mut c = Cursor { buf: &body[..sections_end], at: c.at };
    let mut command = None;
    let mut sequences: Vec<(String, Vec<Bson>)> = Vec::new();
    while !c.done() {
        match c.u8("section kind")? {
            0 => {
                if command.is_some() {
                    return Err(malformed("more than one body section"));
                }
                command = Some(c.document("the body section")?);
            }
            1 => {
                let size = c.i32("a document sequence's size")?;
                let size = usize::try_from(size)
                    .ok()
                    .filter(|n| *n >= 4)
                    .ok_or_else(|| malformed(format!("a document sequence's size is {size}")))?;
                let seq = c.take(size - 4, "a document sequence")?;
                let mut s = Cursor { buf: seq, at: 0 };
                let id = s.cstring("a document sequence's identifier")?.to_owned();
                let mut docs = Vec::new();
                while !s.done() {
                    docs.push(Bson::Document(s.document(&format!("a document of sequence {id}"))?));
                }
                if sequences.iter().any(|(other, _)| *other == id) {
                    return Err(malformed(format!("document sequence {id} appears twice")));
                }
                sequences.push((id, docs));
            }
            k => return Err(malformed(format!("unknown section kind {k}"))),
        }
    }
    let mut command = command.ok_or_else(|| malformed("no body section"))?;
    for (id, docs) in sequences {
        if command.contains_key(&id) {
            return Err(malformed(format!("{id} is both in the body and a document sequence")));
        }
        command.insert(id, Bson::Array(docs));
    }
    Ok(Msg { flags, command })
}

/// An OP_MSG reply: flags 0, one body section.
pub fn encode_msg(request_id: i32, response_to: i32, reply: &Document) -> Vec<u8> {
    let doc = reply.to_vec().expect("a reply document serialises");
    let mut out = Vec::with_capacity(HEADER_LEN + 5 + doc.len());
    let length = (HEADER_LEN + 5 + doc.len()) as i32;
    Header { length, request_id, response_to, op_code: OP_MSG }.write(&mut out);
    out.extend_from_slice(&0u32.to_le_bytes());
    out.push(0);
    out.extend_from_slice(&doc);
    out
}

/// A legacy OP_QUERY: the namespace it names (`<db>.$cmd` for a command) and its query.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub namespace: String,
    pub query: Document,
}

pub fn parse_query(message: &[u8]) -> Result<Query, WireError> {
    let body = message.get(HEADER_LEN..).ok_or_else(|| malformed("shorter than a header"))?;
    let mut c = Cursor { buf: body, at: 0 };
    let _flags = c.i32("flags")?;
    let namespace = c.cstring("fullCollectionName")?.to_owned();
    let _skip = c.i32("numberToSkip")?;
    let _return = c.i32("numberToReturn")?;
    let mut query = c.document("the query")?;
    // A wrapped command (`{$query: {...}, $readPreference: ...}`) is the inner document.
    if let Ok(inner) = query.get_document("$query") {
        query = inner.clone();
    }
    Ok(Query { namespace, query })
}

/// An OP_REPLY carrying one document (the answer to an OP_QUERY command).
pub fn encode_reply(request_id: i32, response_to: i32, reply: &Document) -> Vec<u8> {
    let doc = reply.to_vec().expect("a reply document serialises");
    let length = (HEADER_LEN + 20 + doc.len()) as i32;
    let mut out = Vec::with_capacity(length as usize);
    Header { length, request_id, response_to, op_code: OP_REPLY }.write(&mut out);
    out.extend_from_slice(&0i32.to_le_bytes()); // responseFlags
    out.extend_from_slice(&0i64.to_le_bytes()); // cursorID
    out.extend_from_slice(&0i32.to_le_bytes()); // startingFrom
    out.extend_from_slice(&1i32.to_le_bytes()); // numberReturned
    out.extend_from_slice(&doc);
    out
}

#[cfg(test)]
mod tests {
    use super::testing::client_msg;
    use super::*;
    use bson::doc;

    #[test]
    fn sequences_merge_into_the_command() {
        let m = client_msg(0, &doc! {"insert": "c", "$db": "d"}, &[("documents", vec![doc! {"a": 1}, doc! {"a": 2}])]);
        let msg = parse_msg(&m).unwrap();
        assert_eq!(msg.command, doc! {"insert": "c", "$db": "d", "documents": [{"a": 1}, {"a": 2}]});
    }

    #[test]
    fn a_checksum_is_verified() {
        let mut m = client_msg(CHECKSUM_PRESENT, &doc! {"ping": 1, "$db": "admin"}, &[]);
        assert_eq!(parse_msg(&m).unwrap().command, doc! {"ping": 1, "$db": "admin"});
        let n = m.len();
        m[n - 6] ^= 1;
        assert_eq!(parse_msg(&m), Err(WireError::Checksum));
    }

    #[test]
    fn bad_frames_are_refused_with_what_is_wrong() {
        let h = |len: i32| Header { length: len, request_id: 1, response_to: 0, op_code: OP_MSG };
        assert_eq!(h(15).body_len(), Err(WireError::Length(15)));
        assert_eq!(h(48_000_001).body_len(), Err(WireError::Length(48_000_001)));
        assert_eq!(h(-1).body_len(), Err(WireError::Length(-1)));
        assert_eq!(h(21).body_len(), Ok(5));
        let unknown_flag = client_msg(1 << 4, &doc! {"ping": 1}, &[]);
        assert_eq!(parse_msg(&unknown_flag), Err(WireError::Flags(1 << 4)));
        let twice = client_msg(0, &doc! {"insert": "c", "documents": []}, &[("documents", vec![])]);
        assert!(matches!(parse_msg(&twice), Err(WireError::Malformed(m)) if m.contains("documents")));
        let mut truncated = client_msg(0, &doc! {"ping": 1}, &[]);
        truncated.truncate(truncated.len() - 2);
        assert!(matches!(parse_msg(&truncated), Err(WireError::Malformed(_))));
        let mut huge = client_msg(0, &doc! {"ping": 1}, &[]);
        huge[21..25].copy_from_slice(&(MAX_BSON_SIZE as i32 + 1).to_le_bytes());
        assert!(matches!(parse_msg(&huge), Err(WireError::Malformed(m)) if m.contains("length")));
    }

    #[test]
    fn replies_frame_their_documents() {
        let r = encode_msg(5, 7, &doc! {"ok": 1.0});
        let h = Header::parse(r[..16].try_into().unwrap());
        assert_eq!((h.length as usize, h.request_id, h.response_to, h.op_code), (r.len(), 5, 7, OP_MSG));
        assert_eq!(parse_msg(&r).unwrap().command, doc! {"ok": 1.0});
        let r = encode_reply(6, 8, &doc! {"ok": 1.0});
        let h = Header::parse(r[..16].try_into().unwrap());
        assert_eq!((h.length as usize, h.op_code), (r.len(), OP_REPLY));
        assert_eq!(i32::from_le_bytes(r[32..36].try_into().unwrap()), 1, "numberReturned");
    }

    #[test]
    fn a_legacy_query_unwraps_its_command() {
        let mut b = 0i32.to_le_bytes().to_vec();
        b.extend(b"admin.$cmd\0");
        b.extend(0i32.to_le_bytes());
        b.extend((-1i32).to_le_bytes());
        b.extend(doc! {"$query": {"isMaster": 1}, "$readPreference": {"mode": "primary"}}.to_vec().unwrap());
        let mut m = Vec::new();
        Header { length: (16 + b.len()) as i32, request_id: 1, response_to: 0, op_code: OP_QUERY }.write(&mut m);
        m.extend(b);
        let q = parse_query(&m).unwrap();
        assert_eq!(q.namespace, "admin.$cmd");
        assert_eq!(q.query, doc! {"isMaster": 1});
    }
}

/// Building messages as a driver does, for this crate's tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// An OP_MSG as a driver builds it: a body, then document sequences, maybe a checksum.
    pub fn client_msg(flags: u32, body: &Document, seqs: &[(&str, Vec<Document>)]) -> Vec<u8> {
        let mut b = flags.to_le_bytes().to_vec();
        b.push(0);
        b.extend(body.to_vec().unwrap());
        for (id, docs) in seqs {
            let mut s = Vec::new();
            s.extend(id.as_bytes());
            s.push(0);
            for d in docs {
                s.extend(d.to_vec().unwrap());
            }
            b.push(1);
            b.extend(((s.len() + 4) as i32).to_le_bytes());
            b.extend(s);
        }
        let checksum = flags & CHECKSUM_PRESENT != 0;
        let length = HEADER_LEN + b.len() + if checksum { 4 } else { 0 };
        let mut out = Vec::new();
        Header { length: length as i32, request_id: 7, response_to: 0, op_code: OP_MSG }.write(&mut out);
        out.extend(b);
        if checksum {
            let crc = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, &out) as u32;
            out.extend(crc.to_le_bytes());
        }
        out
    }
}
