//! The `--capture` file: pcapng, which every network tool reads. A
//! section header, one interface description per interface (its name,
//! nanosecond timestamps), then an enhanced packet block per copied
//! packet with its wire length and a comment naming its verdict and the
//! rule, list, ban or trigger behind it. Each block is written whole with
//! one `write`, so a reader sees every block written before xdpstat was
//! killed.

use std::{borrow::Cow, io::Write, time::Duration};

use byteorder::BigEndian;
use pcap_file::{
    DataLink, Endianness,
    pcapng::{
        Block,
        blocks::{
            enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption},
            interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption},
            section_header::{SectionHeaderBlock, SectionHeaderOption},
        },
    },
};

/// A pcapng file being written.
pub struct PcapngWriter<W: Write> {
    out: W,
    /// The interfaces described so far, by name: their ids are positions.
    interfaces: Vec<String>,
    snaplen: u32,
}

impl<W: Write> PcapngWriter<W> {
    /// Starts the file: its section header.
    pub fn new(mut out: W, snaplen: u32) -> std::io::Result<Self> {
        let section = SectionHeaderBlock {
            endianness: Endianness::Big,
            options: vec![SectionHeaderOption::UserApplication(Cow::Owned(format!(
                "xdpstat {}",
                env!("CARGO_PKG_VERSION")
            )))],
            ..SectionHeaderBlock::default()
        };
        write_whole(&mut out, &Block::SectionHeader(section))?;
        Ok(Self {
            out,
            interfaces: Vec::new(),
            snaplen,
        })
    }

    /// The id of `interface`, described first if it is new.
    fn interface(&mut self, interface: &str) -> std::io::Result<u32> {
        if let Some(at) = self.interfaces.iter().position(|name| name == interface) {
            return Ok(at as u32);
        }
        let block = InterfaceDescriptionBlock {
            linktype: DataLink::ETHERNET,
            snaplen: self.snaplen,
            options: vec![
                InterfaceDescriptionOption::IfName(Cow::Owned(interface.to_owned())),
                // Timestamps in nanoseconds.
                InterfaceDescriptionOption::IfTsResol(9),
            ],
        };
        write_whole(&mut self.out, &Block::InterfaceDescription(block))?;
        self.interfaces.push(interface.to_owned());
        Ok(self.interfaces.len() as u32 - 1)
    }

    /// One packet: `data` (cut to the snap length) of `wire_len` bytes on
    /// `interface` at `time` since the epoch, with `comment`.
    pub fn packet(
        &mut self,
        interface: &str,
        time: Duration,
        wire_len: u32,
        data: &[u8],
        comment: &str,
    ) -> std::io::Result<()> {
        let interface_id = self.interface(interface)?;
        let block = EnhancedPacketBlock {
            interface_id,
            timestamp: time,
            original_len: wire_len.max(data.len() as u32),
            data: Cow::Borrowed(data),
            options: vec![EnhancedPacketOption::Comment(Cow::Borrowed(comment))],
        };
        write_whole(&mut self.out, &Block::EnhancedPacket(block))
    }

    /// Pushes what is buffered to the file.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Writes `block` with one `write_all` of its bytes.
fn write_whole<W: Write>(out: &mut W, block: &Block<'_>) -> std::io::Result<()> {
    let mut bytes = Vec::with_capacity(256);
    block.write_to::<BigEndian, _>(&mut bytes)?;
    out.write_all(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_reads_back_with_its_interfaces_comments_and_lengths() {
        let mut file = Vec::new();
        {
            let mut writer = PcapngWriter::new(&mut file, 256).unwrap();
            writer
                .packet(
                    "xs0",
                    Duration::from_nanos(1_796_000_000_123_456_789),
                    1500,
                    &[1; 256],
                    "dropped by rule 198.18.0.0/24 drop",
                )
                .unwrap();
            writer
                .packet(
                    "xs1",
                    Duration::from_secs(2),
                    60,
                    &[2; 60],
                    "limited by ban 198.18.0.7/32 (hand)",
                )
                .unwrap();
            writer
                .packet("xs0", Duration::from_secs(3), 64, &[3; 64], "passed")
                .unwrap();
        }
        let mut reader = pcap_file::pcapng::PcapNgReader::new(&file[..]).unwrap();
        let mut seen = Vec::new();
        while let Some(block) = reader.next_block() {
            if let Block::EnhancedPacket(epb) = block.unwrap() {
                let comment = match &epb.options[..] {
                    [EnhancedPacketOption::Comment(c)] => c.to_string(),
                    other => panic!("{other:?}"),
                };
                seen.push((
                    epb.interface_id,
                    epb.timestamp,
                    epb.original_len,
                    epb.data.len(),
                    comment,
                ));
            }
        }
        assert_eq!(seen.len(), 3);
        assert_eq!(
            seen[0],
            (
                0,
                Duration::from_nanos(1_796_000_000_123_456_789),
                1500,
                256,
                "dropped by rule 198.18.0.0/24 drop".into()
            )
        );
        assert_eq!(seen[1].0, 1, "a second interface, described once");
        assert_eq!(seen[2].0, 0);
        assert_eq!(reader.interfaces().len(), 2);
    }
}
