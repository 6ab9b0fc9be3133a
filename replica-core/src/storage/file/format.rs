//! The on-disk encoding of the file store: segment headers, framed log records and the two
//! metadata files. Pure functions over byte slices, so every rule is unit-tested without a disk.
//!
//! ```text
//! segment  = header(32) record*
//! header   = magic "RPLSEG01" | gen u64 | first_index u64 | reserved u32 (0) | crc32 of the 28 bytes before
//! record   = payload_len u32 | payload_crc u32 | batch_first u64 | header_crc u32 | payload
//!            payload     = postcard Entry
//!            payload_crc = crc32(payload)
//!            batch_first = index of the first record of the group-commit batch (the records
//!                          written between two syncs) this record belongs to
//!            header_crc  = crc32 of the 16 header bytes before it, so a damaged length is caught
//!                          before it is trusted
//! metadata = magic (8) | payload_len u64 | crc32(payload) u32 | payload (postcard)
//! ```
//!
//! All integers are little-endian. The checksum is CRC-32 (IEEE).

use crate::types::{Entry, LogIndex, Snapshot};
use serde::{Deserialize, Serialize};

/// Bytes of a segment header.
pub(super) const SEGMENT_HEADER_BYTES: usize = 32;
/// Bytes of a record header.
pub(super) const RECORD_HEADER_BYTES: usize = 20;
const SEGMENT_MAGIC: &[u8; 8] = b"RPLSEG01";
/// Magic of the hard-state file.
pub(super) const HARD_STATE_MAGIC: &[u8; 8] = b"RPLHST01";
/// Magic of the snapshot file.
pub(super) const SNAPSHOT_MAGIC: &[u8; 8] = b"RPLSNP01";
const META_HEADER_BYTES: usize = 20;

/// What a segment header says about its file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct SegmentHeader {
    /// Log generation: bumped by every installed snapshot, so segments of a replaced log are
    /// recognisable (and ignored) whatever their indices.
    pub gen: u64,
    /// Index of the first record in the segment.
    pub first_index: LogIndex,
}

/// The segment file name for `(gen, first_index)`. Zero-padded so names sort like the log.
pub(super) fn segment_file_name(gen: u64, first_index: LogIndex) -> String {
    format!("seg-{gen:010}-{first_index:020}.log")
}

/// The inverse of [`segment_file_name`]; `None` for any other name.
pub(super) fn parse_segment_file_name(name: &str) -> Option<SegmentHeader> {
    let rest = name.strip_prefix("seg-")?.strip_suffix(".log")?;
    let (gen, first) = rest.split_once('-')?;
    if gen.len() != 10 || first.len() != 20 {
        return None;
    }
    if !gen.bytes().chain(first.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(SegmentHeader {
        gen: gen.parse().ok()?,
        first_index: first.parse().ok()?,
    })
}

pub(super) fn encode_segment_header(h: SegmentHeader) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut out = [0u8; SEGMENT_HEADER_BYTES];
    out[0..8].copy_from_slice(SEGMENT_MAGIC);
    out[8..16].copy_from_slice(&h.gen.to_le_bytes());
    out[16..24].copy_from_slice(&h.first_index.to_le_bytes());
    let crc = crc32fast::hash(&out[0..28]);
    out[28..32].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Decode a segment header; the error says what was wrong.
pub(super) fn decode_segment_header(data: &[u8]) -> Result<SegmentHeader, String> {
    let Some(h) = data.get(0..SEGMENT_HEADER_BYTES) else {
        return Err(format!("segment header cut short at {} bytes", data.len()));
    };
    if &h[0..8] != SEGMENT_MAGIC {
        return Err("not a segment file (bad magic)".into());
    }
    if crc32fast::hash(&h[0..28]) != u32_at(h, 28) {
        return Err("segment header checksum mismatch".into());
    }
    Ok(SegmentHeader {
        gen: u64_at(h, 8),
        first_index: u64_at(h, 16),
    })
}

/// Append one framed record holding `entry`, written in the batch that starts at `batch_first`,
/// to `buf`; returns the payload length. On error `buf` is left as it was.
pub(super) fn encode_record(
    entry: &Entry,
    batch_first: LogIndex,
    buf: &mut Vec<u8>,
) -> Result<usize, postcard::Error> {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; RECORD_HEADER_BYTES]);
    if let Err(e) = postcard::to_io(entry, &mut *buf) {
        buf.truncate(start);
        return Err(e);
    }
    let payload_len = buf.len() - start - RECORD_HEADER_BYTES;
    let len32 = u32::try_from(payload_len).unwrap_or(u32::MAX);
    let payload_crc = crc32fast::hash(&buf[start + RECORD_HEADER_BYTES..]);
    let header = &mut buf[start..start + RECORD_HEADER_BYTES];
    header[0..4].copy_from_slice(&len32.to_le_bytes());
    header[4..8].copy_from_slice(&payload_crc.to_le_bytes());
    header[8..16].copy_from_slice(&batch_first.to_le_bytes());
    let header_crc = crc32fast::hash(&header[0..16]);
    header[16..20].copy_from_slice(&header_crc.to_le_bytes());
    Ok(payload_len)
}

/// Why the bytes at an offset are not a valid record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum RecordError {
    /// Fewer bytes than a record header remain.
    ShortHeader,
    /// The header's own checksum fails (or it declares an empty payload).
    BadHeader,
    /// The header is sound but the file ends before its payload does.
    ShortPayload,
    /// The payload's checksum fails.
    BadChecksum,
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RecordError::ShortHeader => "record header cut short",
            RecordError::BadHeader => "record header checksum mismatch",
            RecordError::ShortPayload => "record payload cut short",
            RecordError::BadChecksum => "record payload checksum mismatch",
        })
    }
}

/// A record that passed every check.
#[derive(Debug)]
pub(super) struct Record<'a> {
    /// The encoded entry.
    pub payload: &'a [u8],
    /// First index of the batch the record was written in.
    pub batch_first: LogIndex,
    /// Offset just past the record.
    pub end: usize,
}

/// The record at `off`.
pub(super) fn read_record(data: &[u8], off: usize) -> Result<Record<'_>, RecordError> {
    let header = data
        .get(off..off.saturating_add(RECORD_HEADER_BYTES))
        .ok_or(RecordError::ShortHeader)?;
    let len = u32_at(header, 0);
    let payload_crc = u32_at(header, 4);
    if len == 0 || crc32fast::hash(&header[0..16]) != u32_at(header, 16) {
        return Err(RecordError::BadHeader);
    }
    let start = off + RECORD_HEADER_BYTES;
    let end = start.saturating_add(len as usize);
    let payload = data.get(start..end).ok_or(RecordError::ShortPayload)?;
    if crc32fast::hash(payload) != payload_crc {
        return Err(RecordError::BadChecksum);
    }
    Ok(Record {
        payload,
        batch_first: u64_at(header, 8),
        end,
    })
}

/// The first offset at or after `from` where a whole valid record starts, if any. The header
/// checksum makes the scan cheap: most offsets fail on 16 bytes.
pub(super) fn find_valid_record(data: &[u8], from: usize) -> Option<usize> {
    let last_start = data.len().checked_sub(RECORD_HEADER_BYTES)?;
    (from..=last_start).find(|&off| read_record(data, off).is_ok())
}

/// Whether bad bytes at `off` in the last segment, where the record of index `index` should
/// start, are a write a crash interrupted (true) or damage to data that was synced (false).
///
/// Batches are written one after the other, each only once the previous one was synced, so a
/// crash can only leave the last batch partly on disk: after a process crash, a prefix of it;
/// after a power cut, possibly with holes. Such a batch was never acknowledged. So the bad
/// bytes are a torn tail when nothing valid follows them, or when everything valid that follows
/// belongs to one batch that began at or before `index` (the batch the bad record was part of).
/// Anything else means a synced record was damaged.
pub(super) fn is_torn_tail(data: &[u8], off: usize, index: LogIndex) -> bool {
    let mut batch: Option<LogIndex> = None;
    let mut from = off + 1;
    while let Some(at) = find_valid_record(data, from) {
        let Ok(record) = read_record(data, at) else {
            return false;
        };
        if batch.is_some_and(|b| b != record.batch_first) {
            return false;
        }
        batch = Some(record.batch_first);
        from = record.end;
    }
    batch.is_none_or(|b| b <= index)
}

/// Decode a record payload into an entry; trailing bytes are an error.
pub(super) fn decode_entry(payload: &[u8]) -> Result<Entry, String> {
    match postcard::take_from_bytes::<Entry>(payload) {
        Ok((entry, [])) => Ok(entry),
        Ok((_, rest)) => Err(format!("{} stray bytes after the entry", rest.len())),
        Err(e) => Err(format!("undecodable entry: {e}")),
    }
}

/// Frame a metadata payload (hard state or snapshot file).
pub(super) fn encode_meta(magic: &[u8; 8], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(META_HEADER_BYTES + payload.len());
    out.extend_from_slice(magic);
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Check a metadata file's framing and return its payload.
pub(super) fn decode_meta<'a>(magic: &[u8; 8], data: &'a [u8]) -> Result<&'a [u8], String> {
    let Some(header) = data.get(0..META_HEADER_BYTES) else {
        return Err(format!("file cut short at {} bytes", data.len()));
    };
    if &header[0..8] != magic {
        return Err("bad magic".into());
    }
    let len = u64_at(header, 8);
    let payload = &data[META_HEADER_BYTES..];
    if payload.len() as u64 != len {
        return Err(format!(
            "payload is {} bytes, header says {len}",
            payload.len()
        ));
    }
    if crc32fast::hash(payload) != u32_at(header, 16) {
        return Err("checksum mismatch".into());
    }
    Ok(payload)
}

/// What the snapshot file holds besides the snapshot: where the log stands relative to it.
#[derive(Serialize)]
pub(super) struct SnapshotFileRef<'a> {
    /// Log generation of the segments that go with this snapshot.
    pub gen: u64,
    /// Entries below this index are covered by the snapshot and ignored; the log is contiguous
    /// from here.
    pub log_start: LogIndex,
    /// The snapshot.
    pub snapshot: &'a Snapshot,
}

/// Owned form of [`SnapshotFileRef`] (same encoding).
#[derive(Deserialize)]
pub(super) struct SnapshotFile {
    pub gen: u64,
    pub log_start: LogIndex,
    pub snapshot: Snapshot,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // test code: a failure should panic
mod tests {
    use super::*;
    use crate::types::Payload;
    use bytes::Bytes;
    use uuid::Uuid;

    fn entry(index: u64, len: usize) -> Entry {
        Entry {
            index,
            lamport: index * 2,
            epoch: 1,
            id: Uuid::from_u128(u128::from(index) << 64 | 7),
            payload: Payload::Command(Bytes::from(vec![index as u8; len])),
        }
    }

    /// Framed records of `entries`, each batch starting at the given index, and their offsets.
    fn records(entries: &[Entry]) -> (Vec<u8>, Vec<usize>) {
        batched(entries, |e| e.index)
    }

    fn batched(entries: &[Entry], batch_of: impl Fn(&Entry) -> u64) -> (Vec<u8>, Vec<usize>) {
        let mut buf = Vec::new();
        let mut starts = Vec::new();
        for e in entries {
            starts.push(buf.len());
            encode_record(e, batch_of(e), &mut buf).unwrap();
        }
        (buf, starts)
    }

    #[test]
    fn segment_names_round_trip_and_reject_strangers() {
        let h = SegmentHeader {
            gen: 3,
            first_index: 12_345,
        };
        assert_eq!(
            parse_segment_file_name(&segment_file_name(3, 12_345)),
            Some(h)
        );
        for bad in [
            "seg-1-2.log",
            "seg-0000000003-00000000000000012345.tmp",
            "LOCK",
            "snapshot",
            "seg-000000000x-00000000000000012345.log",
            "seg-0000000003-0000000000000001234.log",
        ] {
            assert_eq!(parse_segment_file_name(bad), None, "{bad}");
        }
        // Names sort in log order.
        assert!(segment_file_name(0, 9) < segment_file_name(0, 10));
    }

    #[test]
    fn segment_header_round_trip_and_damage() {
        let h = SegmentHeader {
            gen: 7,
            first_index: 42,
        };
        let bytes = encode_segment_header(h);
        assert_eq!(decode_segment_header(&bytes), Ok(h));
        assert!(decode_segment_header(&bytes[..31]).is_err());
        for i in 0..SEGMENT_HEADER_BYTES {
            let mut b = bytes;
            b[i] ^= 0x01;
            assert!(decode_segment_header(&b).is_err(), "flip at {i} undetected");
        }
    }

    #[test]
    fn records_round_trip() {
        let entries: Vec<_> = (1..=5).map(|i| entry(i, i as usize * 10)).collect();
        let (buf, _) = records(&entries);
        let mut off = 0;
        for e in &entries {
            let record = read_record(&buf, off).unwrap();
            assert_eq!(&decode_entry(record.payload).unwrap(), e);
            assert_eq!(record.batch_first, e.index);
            off = record.end;
        }
        assert_eq!(off, buf.len());
    }

    /// Every cut of a record is reported as short, never as a valid record.
    #[test]
    fn every_cut_of_a_record_is_short() {
        let (buf, _) = records(&[entry(1, 40)]);
        for cut in 0..buf.len() {
            let err = read_record(&buf[..cut], 0).unwrap_err();
            let want = if cut < RECORD_HEADER_BYTES {
                RecordError::ShortHeader
            } else {
                RecordError::ShortPayload
            };
            assert_eq!(err, want, "cut at {cut}");
        }
    }

    /// Every single-bit flip anywhere in a record is detected.
    #[test]
    fn every_bit_flip_is_detected() {
        let (buf, _) = records(&[entry(1, 40)]);
        for i in 0..buf.len() {
            for bit in 0..8 {
                let mut b = buf.clone();
                b[i] ^= 1 << bit;
                assert!(
                    read_record(&b, 0).is_err(),
                    "flip of bit {bit} at {i} undetected"
                );
            }
        }
    }

    #[test]
    fn find_valid_record_skips_damage() {
        let entries: Vec<_> = (1..=3).map(|i| entry(i, 30)).collect();
        let (mut buf, starts) = records(&entries);
        buf[starts[1] + RECORD_HEADER_BYTES + 3] ^= 0xff;
        assert_eq!(find_valid_record(&buf, starts[1]), Some(starts[2]));
        assert_eq!(find_valid_record(&buf, starts[2] + 1), None);
        assert_eq!(
            find_valid_record(&[0u8; 100], 0),
            None,
            "zeros are not a record"
        );
        assert_eq!(find_valid_record(&[], 0), None);
    }

    /// The torn-tail rule, table-driven: two batches (1..=4 synced, then 5..=8), one record
    /// damaged, sometimes the file cut after it.
    #[test]
    fn torn_tail_is_damage_inside_the_last_batch_only() {
        let entries: Vec<_> = (1..=8).map(|i| entry(i, 20)).collect();
        let (clean, starts) = batched(&entries, |e| if e.index <= 4 { 1 } else { 5 });
        let cases: [(u64, Option<u64>, bool, &str); 6] = [
            (8, None, true, "last record of the last batch"),
            (
                6,
                None,
                true,
                "inside the last batch, later records of it intact (a power cut)",
            ),
            (5, None, true, "first record of the last batch"),
            (4, None, false, "last record of a synced batch"),
            (2, None, false, "inside a synced batch"),
            (
                2,
                Some(4),
                true,
                "inside what is now the last batch: nothing valid follows",
            ),
        ];
        for (damaged, cut_after, torn, what) in cases {
            let at = starts[damaged as usize - 1];
            let mut data = clean.clone();
            data[at + RECORD_HEADER_BYTES + 2] ^= 0xff;
            if let Some(keep) = cut_after {
                data.truncate(starts[keep as usize]);
            }
            assert!(read_record(&data, at).is_err());
            assert_eq!(is_torn_tail(&data, at, damaged), torn, "{what}");
        }
    }

    #[test]
    fn decode_entry_rejects_trailing_bytes_and_garbage() {
        let e = entry(9, 5);
        let mut bytes = postcard::to_stdvec(&e).unwrap();
        assert_eq!(decode_entry(&bytes), Ok(e));
        bytes.push(0);
        assert!(decode_entry(&bytes).is_err());
        assert!(decode_entry(&[0xff; 3]).is_err());
    }

    #[test]
    fn meta_round_trip_and_damage() {
        let framed = encode_meta(HARD_STATE_MAGIC, b"hello");
        assert_eq!(decode_meta(HARD_STATE_MAGIC, &framed), Ok(&b"hello"[..]));
        assert!(
            decode_meta(SNAPSHOT_MAGIC, &framed).is_err(),
            "wrong kind of file"
        );
        for cut in 0..framed.len() {
            assert!(
                decode_meta(HARD_STATE_MAGIC, &framed[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        for i in 0..framed.len() {
            let mut b = framed.clone();
            b[i] ^= 0x10;
            assert!(decode_meta(HARD_STATE_MAGIC, &b).is_err(), "flip at {i}");
        }
    }
}
