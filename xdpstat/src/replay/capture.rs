//! Reads pcap and pcapng captures, as a stream, into the Ethernet frames
//! `xdpstat replay` runs through the XDP program. The block formats are
//! pcap-parser's; this module decides what a replay accepts, the way
//! libpcap (and so tcpdump) reads the same files:
//!
//! - Ethernet only, the FCS cut off where the file says it is there (the
//!   pcap link-type word's FCS length, pcapng's `if_fcslen`).
//! - Timestamps in each pcapng interface's own resolution (`if_tsresol`,
//!   microseconds by default) plus its `if_tsoffset`; pcap in micro- or
//!   nanoseconds by its magic number.
//! - A record longer than the snap length is cut to it and counted, as
//!   libpcap does; one longer than [`MAX_RECORD`] (libpcap's limit) is an
//!   error, because no capture holds such a record.
//! - Blocks and options unknown to us are skipped, as the pcapng spec says;
//!   the obsolete Packet Block is read like an Enhanced Packet Block.
//! - Memory is bounded by the largest record, never by the file.

use std::{io::Read, time::Duration};

use pcap_parser::{
    Block, LegacyPcapReader, PcapBlockOwned, PcapError, PcapNGReader,
    pcapng::{InterfaceDescriptionBlock, UnknownBlock},
    traits::PcapReaderIterator,
};

/// One frame as the capture recorded it.
#[derive(Debug, PartialEq)]
pub struct Frame<'a> {
    /// The captured bytes, FCS removed.
    pub data: &'a [u8],
    /// The frame's length on the wire, FCS removed (more than `data` when
    /// the capture kept only a snap length's worth).
    pub wire_len: u32,
    /// Since the Unix epoch (a time before it reads as the epoch).
    pub timestamp: Duration,
}

/// Why a capture cannot be read (to the end).
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum CaptureError {
    /// Nothing in the file.
    #[error("empty file")]
    Empty,
    /// Neither a pcap nor a pcapng magic number.
    #[error("not a pcap or pcapng capture (magic number {0:#010x})")]
    NotACapture(u32),
    /// A link type other than Ethernet.
    #[error("link type {link} is not Ethernet (1); only Ethernet captures can be replayed")]
    LinkType { link: u32 },
    /// A record or block larger than any capture holds.
    #[error("at byte {offset}: a record longer than {MAX_RECORD} bytes, which no capture holds")]
    RecordTooLong { offset: u64 },
    /// The file ends inside a header or record.
    #[error("at byte {offset}: the file ends inside a record")]
    Truncated { offset: u64 },
    /// Reading stopped at the user's request.
    #[error("at byte {offset}: stopped")]
    Stopped { offset: u64 },
    /// The input could not be read.
    #[error("at byte {offset}: cannot read: {reason}")]
    Read { offset: u64, reason: String },
    /// Anything else the format refuses.
    #[error("at byte {offset}: {reason}")]
    Invalid { offset: u64, reason: String },
}

/// What a read did besides handing out frames.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadStats {
    /// Records longer than their snap length, cut to it.
    pub cut_to_snaplen: u64,
}

/// The longest record libpcap reads (`MAXIMUM_SNAPLEN`, 256 KiB).
pub const MAX_RECORD: usize = 262_144;
/// The reader's buffer starts here and grows to hold the largest record.
const BUFFER: usize = 64 * 1024;
/// The buffer's ceiling: the largest record and its block around it.
const MAX_BUFFER: usize = MAX_RECORD + 64 * 1024;
/// Ethernet's link type.
const ETHERNET: u32 = 1;
/// The obsolete pcapng Packet Block.
const OBSOLETE_PACKET_BLOCK: u32 = 2;

/// Which format a capture is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Pcap,
    PcapNg,
}

/// Tells the format from the first four bytes.
pub fn format_of(magic: [u8; 4]) -> Result<Format, CaptureError> {
    match u32::from_be_bytes(magic) {
        0xA1B2_C3D4 | 0xD4C3_B2A1 | 0xA1B2_3C4D | 0x4D3C_B2A1 | 0xA1B2_CD34 | 0x34CD_B2A1 => {
            Ok(Format::Pcap)
        }
        0x0A0D_0D0A => Ok(Format::PcapNg),
        magic => Err(CaptureError::NotACapture(magic)),
    }
}

/// Hands every frame of the capture `input` holds to `each`, in order,
/// with the number of bytes read so far. On an error after some frames,
/// those frames have been handed out.
pub fn read(
    input: &mut dyn Read,
    each: &mut dyn FnMut(Frame<'_>, u64),
) -> (ReadStats, Result<(), CaptureError>) {
    let mut stats = ReadStats::default();
    let result = read_into(input, each, &mut stats);
    (stats, result)
}

fn read_into(
    input: &mut dyn Read,
    each: &mut dyn FnMut(Frame<'_>, u64),
    stats: &mut ReadStats,
) -> Result<(), CaptureError> {
    // The first block whole, so that the reader (which checks it when it
    // is made, from what one read gives it) sees all of it even from a pipe.
    let mut start = Vec::new();
    fill(input, &mut start, 4)?;
    if start.is_empty() {
        return Err(CaptureError::Empty);
    }
    if start.len() < 4 {
        return Err(CaptureError::Truncated { offset: 0 });
    }
    let format = format_of([start[0], start[1], start[2], start[3]])?;
    let first_block = match format {
        Format::Pcap => 24,
        Format::PcapNg => {
            fill(input, &mut start, 12)?;
            if start.len() < 12 {
                return Err(CaptureError::Truncated { offset: 0 });
            }
            // The byte-order magic tells how to read the block length.
            let length = if start[8..12] == [0x1A, 0x2B, 0x3C, 0x4D] {
                u32::from_be_bytes([start[4], start[5], start[6], start[7]])
            } else {
                u32::from_le_bytes([start[4], start[5], start[6], start[7]])
            } as usize;
            if length > MAX_BUFFER {
                return Err(CaptureError::RecordTooLong { offset: 0 });
            }
            length
        }
    };
    fill(input, &mut start, first_block)?;
    if start.len() < first_block {
        return Err(CaptureError::Truncated { offset: 0 });
    }
    let capacity = BUFFER.max(start.len());
    let mut chained = std::io::Cursor::new(start).chain(input);
    match format {
        Format::Pcap => {
            let reader = LegacyPcapReader::new(capacity, &mut chained)
                .map_err(|e| invalid(0, &format!("{e:?}")))?;
            walk(reader, &mut Pcap::default(), each, stats)
        }
        Format::PcapNg => {
            let reader = PcapNGReader::new(capacity, &mut chained)
                .map_err(|e| invalid(0, &format!("{e:?}")))?;
            walk(reader, &mut PcapNg::default(), each, stats)
        }
    }
}

/// Reads from `input` until `into` holds `len` bytes or the input ends.
fn fill(input: &mut dyn Read, into: &mut Vec<u8>, len: usize) -> Result<(), CaptureError> {
    let mut chunk = [0u8; 4096];
    while into.len() < len {
        let want = (len - into.len()).min(chunk.len());
        match input.read(&mut chunk[..want]) {
            Ok(0) => break,
            Ok(n) => into.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(read_error(into.len() as u64, &e)),
        }
    }
    Ok(())
}

fn read_error(offset: u64, error: &std::io::Error) -> CaptureError {
    if error.kind() == std::io::ErrorKind::Interrupted {
        CaptureError::Stopped { offset }
    } else {
        CaptureError::Read {
            offset,
            reason: error.to_string(),
        }
    }
}

fn invalid(offset: u64, reason: &str) -> CaptureError {
    CaptureError::Invalid {
        offset,
        reason: reason.to_owned(),
    }
}

/// What a format makes of its blocks.
trait Blocks {
    /// Whether the header at the start of `data` (when it is there)
    /// claims a record longer than any capture holds.
    fn claims_too_much(&self, data: &[u8]) -> bool;

    /// Hands out the frame in `block`, if it is one.
    fn take(
        &mut self,
        block: PcapBlockOwned<'_>,
        offset: u64,
        each: &mut dyn FnMut(Frame<'_>, u64),
        stats: &mut ReadStats,
    ) -> Result<(), CaptureError>;
}

/// Runs `reader` to the end of the input, growing its buffer for a large
/// record up to [`MAX_BUFFER`].
fn walk(
    mut reader: impl PcapReaderIterator,
    blocks: &mut dyn Blocks,
    each: &mut dyn FnMut(Frame<'_>, u64),
    stats: &mut ReadStats,
) -> Result<(), CaptureError> {
    let mut capacity = BUFFER;
    loop {
        let offset = reader.consumed() as u64;
        let step = match reader.next() {
            Ok((len, block)) => {
                let end = offset + len as u64;
                let taken = blocks.take(block, offset, &mut |frame, _| each(frame, end), stats);
                reader.consume(len);
                taken?;
                continue;
            }
            Err(PcapError::Eof) => return Ok(()),
            Err(PcapError::UnexpectedEof) => Step::Ended,
            Err(PcapError::Incomplete(_) | PcapError::BufferTooSmall) => Step::NeedMore,
            Err(PcapError::ReadError) => Step::ReadFailed,
            Err(other) => Step::Invalid(describe(&other)),
        };
        // A header claiming more than any capture holds is refused before
        // waiting for (or buffering) its bytes, as libpcap does.
        if matches!(step, Step::Ended | Step::NeedMore) && blocks.claims_too_much(reader.data()) {
            return Err(CaptureError::RecordTooLong { offset });
        }
        match step {
            Step::Ended => return Err(CaptureError::Truncated { offset }),
            Step::ReadFailed => {
                return Err(CaptureError::Read {
                    offset,
                    reason: "read failed".into(),
                });
            }
            Step::Invalid(reason) => return Err(invalid(offset, &reason)),
            Step::NeedMore => {
                if reader.data().len() >= capacity {
                    if capacity >= MAX_BUFFER {
                        return Err(CaptureError::RecordTooLong { offset });
                    }
                    capacity = (capacity * 2).min(MAX_BUFFER);
                    if !reader.grow(capacity) {
                        return Err(CaptureError::RecordTooLong { offset });
                    }
                }
                if reader.refill().is_err() {
                    return Err(CaptureError::Read {
                        offset,
                        reason: "read failed".into(),
                    });
                }
            }
        }
    }
}

/// What the reader could not do, without its borrow of the buffer.
enum Step {
    /// The input ended inside a block.
    Ended,
    /// The block is not all in the buffer yet.
    NeedMore,
    ReadFailed,
    Invalid(String),
}

fn describe(error: &PcapError<&[u8]>) -> String {
    match error {
        PcapError::HeaderNotRecognized => "header not recognized".into(),
        PcapError::NomError(_, kind) => format!("malformed block ({kind:?})"),
        PcapError::OwnedNomError(_, kind) => format!("malformed block ({kind:?})"),
        other => format!("{other:?}"),
    }
}

/// A classic pcap file's header, once read.
#[derive(Default)]
struct Pcap {
    fcs: usize,
    snaplen: usize,
    nanoseconds: bool,
    big_endian: bool,
}

/// The u32 at `at` in `data`, in the given byte order, when it is there.
fn u32_at(data: &[u8], at: usize, big_endian: bool) -> Option<u32> {
    let bytes: [u8; 4] = data.get(at..at + 4)?.try_into().ok()?;
    Some(if big_endian {
        u32::from_be_bytes(bytes)
    } else {
        u32::from_le_bytes(bytes)
    })
}

impl Blocks for Pcap {
    fn claims_too_much(&self, data: &[u8]) -> bool {
        // A record: seconds, fraction, captured length, original length.
        u32_at(data, 8, self.big_endian).is_some_and(|caplen| caplen as usize > MAX_RECORD)
    }

    fn take(
        &mut self,
        block: PcapBlockOwned<'_>,
        offset: u64,
        each: &mut dyn FnMut(Frame<'_>, u64),
        stats: &mut ReadStats,
    ) -> Result<(), CaptureError> {
        match block {
            PcapBlockOwned::LegacyHeader(header) => {
                let (link, fcs) = pcap_link(header.network.0 as u32);
                if link != ETHERNET {
                    return Err(CaptureError::LinkType { link });
                }
                self.fcs = fcs;
                self.snaplen = effective_snaplen(header.snaplen);
                self.nanoseconds = header.is_nanosecond_precision();
                self.big_endian = header.is_bigendian();
                Ok(())
            }
            PcapBlockOwned::Legacy(record) => {
                if record.caplen as usize > MAX_RECORD {
                    return Err(CaptureError::RecordTooLong { offset });
                }
                let fraction = u64::from(record.ts_usec);
                let timestamp = Duration::from_secs(u64::from(record.ts_sec))
                    + if self.nanoseconds {
                        Duration::from_nanos(fraction)
                    } else {
                        Duration::from_micros(fraction)
                    };
                let data = snapped(record.data, self.snaplen, stats);
                each(ethernet_frame(data, record.origlen, self.fcs, timestamp), 0);
                Ok(())
            }
            PcapBlockOwned::NG(_) => Err(invalid(offset, "a pcapng block in a pcap file")),
        }
    }
}

/// One pcapng interface, as its description block says.
struct Interface {
    link: u32,
    fcs: usize,
    snaplen: usize,
    /// Timestamp units per second (`if_tsresol`; a million by default).
    units: u64,
    /// Seconds added to every timestamp (`if_tsoffset`).
    offset: i64,
}

/// What the current pcapng section has said so far.
#[derive(Default)]
struct PcapNg {
    interfaces: Vec<Interface>,
    big_endian: bool,
}

impl PcapNg {
    fn interface(&self, id: u32, offset: u64) -> Result<&Interface, CaptureError> {
        self.interfaces.get(id as usize).ok_or_else(|| {
            invalid(
                offset,
                &format!("packet of interface {id}, which no block describes"),
            )
        })
    }

    fn describe(
        &mut self,
        block: &InterfaceDescriptionBlock<'_>,
        offset: u64,
    ) -> Result<(), CaptureError> {
        let Some(units) = block.ts_resolution() else {
            return Err(invalid(
                offset,
                &format!(
                    "if_tsresol {:#04x} is no usable resolution",
                    block.if_tsresol
                ),
            ));
        };
        // if_fcslen (13): bits of FCS; a value that is not a whole number
        // of bytes is taken as bytes, as some writers mean it.
        let fcs_bits = block
            .options
            .iter()
            .find(|option| option.code.0 == 13)
            .and_then(|option| option.value().first().copied())
            .map(usize::from);
        self.interfaces.push(Interface {
            link: block.linktype.0 as u32,
            fcs: fcs_bits.map_or(0, |v| if v % 8 == 0 { v / 8 } else { v }),
            snaplen: effective_snaplen(block.snaplen),
            units,
            offset: block.ts_offset(),
        });
        Ok(())
    }

    /// Hands out one packet of interface `id`.
    #[expect(clippy::too_many_arguments, reason = "one packet's fields, named")]
    fn packet(
        &self,
        id: u32,
        units: (u32, u32),
        data: &[u8],
        wire_len: u32,
        offset: u64,
        each: &mut dyn FnMut(Frame<'_>, u64),
        stats: &mut ReadStats,
    ) -> Result<(), CaptureError> {
        let interface = self.interface(id, offset)?;
        if interface.link != ETHERNET {
            return Err(CaptureError::LinkType {
                link: interface.link,
            });
        }
        if data.len() > MAX_RECORD {
            return Err(CaptureError::RecordTooLong { offset });
        }
        let ticks = (u64::from(units.0) << 32) | u64::from(units.1);
        let timestamp = timestamp(ticks, interface.units, interface.offset);
        let data = snapped(data, interface.snaplen, stats);
        each(ethernet_frame(data, wire_len, interface.fcs, timestamp), 0);
        Ok(())
    }

    /// The obsolete Packet Block: interface id and drop count (16 bits
    /// each), timestamp high and low, captured and original length (32
    /// bits each), then the data, in the section's byte order.
    fn obsolete_packet(
        &self,
        block: &UnknownBlock<'_>,
        offset: u64,
        each: &mut dyn FnMut(Frame<'_>, u64),
        stats: &mut ReadStats,
    ) -> Result<(), CaptureError> {
        let body = block.data;
        if body.len() < 20 {
            return Err(invalid(offset, "a Packet Block shorter than its header"));
        }
        let word = |at: usize| u32_at(body, at, self.big_endian).unwrap_or_default();
        let interface = if self.big_endian {
            u16::from_be_bytes([body[0], body[1]])
        } else {
            u16::from_le_bytes([body[0], body[1]])
        };
        let captured = word(12) as usize;
        let Some(data) = body.get(20..20 + captured) else {
            return Err(invalid(offset, "a Packet Block's data runs past the block"));
        };
        self.packet(
            u32::from(interface),
            (word(4), word(8)),
            data,
            word(16),
            offset,
            each,
            stats,
        )
    }
}

impl Blocks for PcapNg {
    fn claims_too_much(&self, data: &[u8]) -> bool {
        // A block: type, total length, ...; a section header carries its
        // own byte order, which may differ from the last section's.
        let big_endian = if data.get(..4) == Some(&[0x0A, 0x0D, 0x0D, 0x0A]) {
            data.get(8..12) == Some(&[0x1A, 0x2B, 0x3C, 0x4D])
        } else {
            self.big_endian
        };
        u32_at(data, 4, big_endian).is_some_and(|len| len as usize > MAX_BUFFER)
    }

    fn take(
        &mut self,
        block: PcapBlockOwned<'_>,
        offset: u64,
        each: &mut dyn FnMut(Frame<'_>, u64),
        stats: &mut ReadStats,
    ) -> Result<(), CaptureError> {
        let PcapBlockOwned::NG(block) = block else {
            return Err(invalid(offset, "a pcap record in a pcapng file"));
        };
        match block {
            Block::SectionHeader(header) => {
                // A new section describes its interfaces anew.
                self.interfaces.clear();
                self.big_endian = header.big_endian();
                Ok(())
            }
            Block::InterfaceDescription(description) => self.describe(&description, offset),
            Block::EnhancedPacket(packet) => {
                let captured = (packet.caplen as usize).min(packet.data.len());
                self.packet(
                    packet.if_id,
                    (packet.ts_high, packet.ts_low),
                    &packet.data[..captured],
                    packet.origlen,
                    offset,
                    each,
                    stats,
                )
            }
            Block::SimplePacket(packet) => {
                // No captured length: the data is the original length, or
                // the snap length, whichever is less (the rest is padding).
                let snaplen = self.interface(0, offset)?.snaplen;
                let captured = (packet.origlen as usize)
                    .min(snaplen)
                    .min(packet.data.len());
                self.packet(
                    0,
                    (0, 0),
                    &packet.data[..captured],
                    packet.origlen,
                    offset,
                    each,
                    stats,
                )
            }
            Block::Unknown(unknown) if unknown.block_type == OBSOLETE_PACKET_BLOCK => {
                self.obsolete_packet(&unknown, offset, each, stats)
            }
            // Statistics, name resolution, secrets, custom and unknown
            // blocks say nothing a replay counts.
            _ => Ok(()),
        }
    }
}

/// A snap length of 0 (or beyond libpcap's limit) means libpcap's limit.
fn effective_snaplen(snaplen: u32) -> usize {
    match snaplen as usize {
        0 => MAX_RECORD,
        n => n.min(MAX_RECORD),
    }
}

/// A record's data cut to the snap length (and counted), as libpcap does.
fn snapped<'a>(data: &'a [u8], snaplen: usize, stats: &mut ReadStats) -> &'a [u8] {
    if data.len() > snaplen {
        stats.cut_to_snaplen += 1;
        &data[..snaplen]
    } else {
        data
    }
}

/// `ticks` of `1 / units` seconds, plus `offset` seconds, since the epoch:
/// any value a file holds gives a time (before the epoch reads as the
/// epoch; the report caps what it prints at the year 9999).
pub fn timestamp(ticks: u64, units: u64, offset: i64) -> Duration {
    let units = units.max(1);
    let seconds = i128::from(ticks / units) + i128::from(offset);
    let nanos = (u128::from(ticks % units) * 1_000_000_000 / u128::from(units)) as u32;
    if seconds < 0 {
        return Duration::ZERO;
    }
    Duration::new(u64::try_from(seconds).unwrap_or(u64::MAX), nanos)
}

/// The link type and FCS length (bytes) of a pcap link-type word: the low
/// 16 bits are the link type; when bit 26 is set, bits 28-31 give the FCS
/// length in 16-bit words (libpcap's `LT_FCS_LENGTH`).
fn pcap_link(word: u32) -> (u32, usize) {
    let fcs = if word & 0x0400_0000 != 0 {
        ((word >> 28) as usize) * 2
    } else {
        0
    };
    (word & 0xffff, fcs)
}

/// A frame with its FCS cut off: the last `fcs` bytes of the wire frame,
/// of which the capture kept what its snap length allowed. Bytes beyond
/// the wire length are padding and are dropped.
fn ethernet_frame(data: &[u8], wire_len: u32, fcs: usize, timestamp: Duration) -> Frame<'_> {
    let wire_len = wire_len.max(data.len() as u32);
    let wire_len_without_fcs = wire_len.saturating_sub(fcs as u32);
    let kept = data.len().min(wire_len_without_fcs as usize);
    Frame {
        data: &data[..kept],
        wire_len: wire_len_without_fcs,
        timestamp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_honour_any_resolution_and_offset_and_never_fail() {
        // Microseconds (pcapng's default), nanoseconds, 2^-10 s.
        assert_eq!(
            timestamp(1_700_000_000_123_456, 1_000_000, 0),
            Duration::new(1_700_000_000, 123_456_000)
        );
        assert_eq!(
            timestamp(1_700_000_000_123_456_789, 1_000_000_000, 0),
            Duration::new(1_700_000_000, 123_456_789)
        );
        assert_eq!(
            timestamp(3 * 1024 + 512, 1024, 0),
            Duration::new(3, 500_000_000)
        );
        assert_eq!(timestamp(5_000_000, 1_000_000, 100), Duration::new(105, 0));
        assert_eq!(timestamp(5_000_000, 1_000_000, -100), Duration::ZERO);
        // Whatever the bits, a time (far in the future) and no panic.
        assert!(timestamp(u64::MAX, 1, i64::MAX) > Duration::from_secs(1 << 60));
        assert_eq!(
            timestamp(7, 0, 0),
            Duration::from_secs(7),
            "no division by zero"
        );
    }

    #[test]
    fn a_wire_length_below_the_captured_bytes_is_the_captured_bytes() {
        let data = [0u8; 60];
        let frame = ethernet_frame(&data, 10, 0, Duration::ZERO);
        assert_eq!(frame.wire_len, 60);
        assert_eq!(frame.data.len(), 60);
        let frame = ethernet_frame(&data, 1514, 4, Duration::ZERO);
        assert_eq!((frame.data.len(), frame.wire_len), (60, 1510));
    }
}
