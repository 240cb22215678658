//! Reads pcap and pcapng captures into the Ethernet frames `xdpstat replay`
//! runs through the XDP program. The formats are pcap-file's; this module
//! decides what a replay accepts: Ethernet only (FCS stripped where the
//! file says it is there), records no longer than the snap length or the
//! rest of the file, and an offset for whatever is wrong.

use std::{borrow::Cow, time::Duration};

use byteorder::{BigEndian, ByteOrder, LittleEndian};
use pcap_file::{
    Endianness, PcapError, TsResolution,
    pcap::{PcapHeader, PcapParser},
    pcapng::{Block, PcapNgParser, blocks::interface_description::InterfaceDescriptionOption},
};

/// One frame as the capture recorded it.
#[derive(Debug, PartialEq)]
pub struct Frame<'a> {
    /// The captured bytes, FCS removed.
    pub data: Cow<'a, [u8]>,
    /// The frame's length on the wire, FCS removed (more than `data` when
    /// the capture kept only a snap length's worth).
    pub wire_len: u32,
    /// Since the Unix epoch.
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
    /// A record longer than the snap length.
    #[error("at byte {offset}: record of {len} bytes is longer than the snap length {snaplen}")]
    RecordTooLong {
        offset: usize,
        len: u32,
        snaplen: u32,
    },
    /// The file ends inside a header or record.
    #[error("at byte {offset}: the file ends inside a record")]
    Truncated { offset: usize },
    /// Anything else the format parser refuses.
    #[error("at byte {offset}: {reason}")]
    Invalid { offset: usize, reason: String },
}

/// Which format a capture is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Pcap,
    PcapNg,
}

/// Tells the format from the first four bytes.
pub fn format_of(bytes: &[u8]) -> Result<Format, CaptureError> {
    if bytes.is_empty() {
        return Err(CaptureError::Empty);
    }
    if bytes.len() < 4 {
        return Err(CaptureError::Truncated { offset: 0 });
    }
    match BigEndian::read_u32(bytes) {
        0xA1B2_C3D4 | 0xD4C3_B2A1 | 0xA1B2_3C4D | 0x4D3C_B2A1 => Ok(Format::Pcap),
        0x0A0D_0D0A => Ok(Format::PcapNg),
        magic => Err(CaptureError::NotACapture(magic)),
    }
}

/// Hands every frame of the capture in `bytes` to `each`, in order.
/// On an error after some frames, those frames have been handed out.
pub fn read(bytes: &[u8], each: impl FnMut(Frame<'_>)) -> Result<(), CaptureError> {
    match format_of(bytes)? {
        Format::Pcap => read_pcap(bytes, each),
        Format::PcapNg => read_pcapng(bytes, each),
    }
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

const ETHERNET: u32 = 1;

fn read_pcap(bytes: &[u8], mut each: impl FnMut(Frame<'_>)) -> Result<(), CaptureError> {
    let offset = |rest: &[u8]| bytes.len() - rest.len();
    let (mut rest, parser) = PcapParser::new(bytes).map_err(|e| pcap_error(e, 0))?;
    let header: PcapHeader = parser.header();
    let (link, fcs) = pcap_link(u32::from(header.datalink));
    if link != ETHERNET {
        return Err(CaptureError::LinkType { link });
    }
    let read_u32 = |at: &[u8]| match header.endianness {
        Endianness::Big => BigEndian::read_u32(at),
        Endianness::Little => LittleEndian::read_u32(at),
    };
    while !rest.is_empty() {
        let at = offset(rest);
        if rest.len() >= 16 {
            let len = read_u32(&rest[8..12]);
            if header.snaplen != 0 && len > header.snaplen {
                return Err(CaptureError::RecordTooLong {
                    offset: at,
                    len,
                    snaplen: header.snaplen,
                });
            }
        }
        let (next, packet) = parser
            .next_raw_packet(rest)
            .map_err(|e| pcap_error(e, at))?;
        let fraction = match header.ts_resolution {
            TsResolution::MicroSecond => Duration::from_micros(u64::from(packet.ts_frac)),
            TsResolution::NanoSecond => Duration::from_nanos(u64::from(packet.ts_frac)),
        };
        each(ethernet_frame(
            packet.data,
            packet.orig_len,
            fcs,
            Duration::from_secs(u64::from(packet.ts_sec)) + fraction,
        ));
        rest = next;
    }
    Ok(())
}

fn read_pcapng(bytes: &[u8], mut each: impl FnMut(Frame<'_>)) -> Result<(), CaptureError> {
    let offset = |rest: &[u8]| bytes.len() - rest.len();
    let (mut rest, mut parser) = PcapNgParser::new(bytes).map_err(|e| pcap_error(e, 0))?;
    while !rest.is_empty() {
        let at = offset(rest);
        let (next, block) = parser.next_block(rest).map_err(|e| pcap_error(e, at))?;
        let interface = |id: u32| -> Result<(u32, usize, u32), CaptureError> {
            let Some(interface) = parser.interfaces().get(id as usize) else {
                return Err(CaptureError::Invalid {
                    offset: at,
                    reason: format!("packet of interface {id}, which no block describes"),
                });
            };
            let fcs_bits = interface.options.iter().find_map(|option| match option {
                InterfaceDescriptionOption::IfFcsLen(bits) => Some(usize::from(*bits)),
                _ => None,
            });
            Ok((
                u32::from(interface.linktype),
                // if_fcslen is in bits; a value that is not a whole number
                // of bytes is taken as bytes, as some writers mean it.
                fcs_bits.map_or(0, |v| if v % 8 == 0 { v / 8 } else { v }),
                interface.snaplen,
            ))
        };
        let packet = match block {
            Block::EnhancedPacket(packet) => {
                let (link, fcs, snaplen) = interface(packet.interface_id)?;
                Some((
                    packet.data,
                    packet.original_len,
                    packet.timestamp,
                    link,
                    fcs,
                    snaplen,
                ))
            }
            Block::SimplePacket(packet) => {
                let (link, fcs, snaplen) = interface(0)?;
                Some((
                    packet.data,
                    packet.original_len,
                    Duration::ZERO,
                    link,
                    fcs,
                    snaplen,
                ))
            }
            Block::Packet(packet) => {
                let (link, fcs, snaplen) = interface(u32::from(packet.interface_id))?;
                // The obsolete Packet Block counts microseconds by default.
                let timestamp = Duration::from_micros(packet.timestamp);
                Some((
                    packet.data,
                    packet.original_len,
                    timestamp,
                    link,
                    fcs,
                    snaplen,
                ))
            }
            // Section headers and interface descriptions are the parser's;
            // statistics, names and blocks unknown to us are skipped.
            _ => None,
        };
        if let Some((data, wire_len, timestamp, link, fcs, snaplen)) = packet {
            if link != ETHERNET {
                return Err(CaptureError::LinkType { link });
            }
            if snaplen != 0 && data.len() > snaplen as usize {
                return Err(CaptureError::RecordTooLong {
                    offset: at,
                    len: data.len() as u32,
                    snaplen,
                });
            }
            each(ethernet_frame(data, wire_len, fcs, timestamp));
        }
        rest = next;
    }
    Ok(())
}

/// A frame with its FCS cut off: the last `fcs` bytes of the wire frame,
/// of which the capture kept what its snap length allowed. Bytes beyond
/// the wire length are block padding (a pcapng simple packet block does not
/// record how much it captured) and are dropped.
fn ethernet_frame(
    data: Cow<'_, [u8]>,
    wire_len: u32,
    fcs: usize,
    timestamp: Duration,
) -> Frame<'_> {
    let wire_len_without_fcs = wire_len.saturating_sub(fcs as u32);
    let kept = data.len().min(wire_len_without_fcs as usize);
    let data = match data {
        Cow::Borrowed(bytes) => Cow::Borrowed(&bytes[..kept]),
        Cow::Owned(mut bytes) => {
            bytes.truncate(kept);
            Cow::Owned(bytes)
        }
    };
    Frame {
        data,
        wire_len: wire_len_without_fcs,
        timestamp,
    }
}

fn pcap_error(error: PcapError, offset: usize) -> CaptureError {
    match error {
        PcapError::IncompleteBuffer => CaptureError::Truncated { offset },
        other => CaptureError::Invalid {
            offset,
            reason: other.to_string(),
        },
    }
}
