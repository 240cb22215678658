//! The sources' slots seen from user space: read them into a table, and
//! retire idle ones when few are left so that new senders find room.
//!
//! Each slot holds one source's address and one counter per CPU, in two
//! memory-mapped arrays, so a read of a million sources is a walk through
//! memory. Retiring a slot is exact: its index entry goes first, then a
//! grace period ensures no program still counts into it, then it is
//! cleared and queued for reuse. What it counted after the last read is in
//! the family's settled count but in no slot, so reports show it as
//! unattributed; nothing is lost.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::BorrowedFd,
    sync::atomic::{Ordering, fence},
};

use aya::maps::{HashMap, Map, MapData};
use xdpstat_common::{Counter, FAMILY_V4, FAMILY_V6, Ipv4Key, Ipv6Key, SlotSource};

use crate::{
    bpf_sys::{self, Grace},
    error::{XdpstatError, one_line},
    mapped::MappedArray,
    sources::SourceTable,
};

/// How the slots are found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMethod {
    /// Walk the memory-mapped slot arrays.
    Mapped,
    /// Walk the index hashes one key at a time (get-next-key, then lookup),
    /// the way most tools read BPF hash maps; kept for the benchmarks.
    PerKey,
}

/// One read of every slot.
pub struct SlotsRead {
    pub sources: SourceTable,
    /// What the IPv4 and IPv6 slots hold, summed.
    pub held_v4: Counter,
    pub held_v6: Counter,
    /// Slots holding counts.
    pub in_use: usize,
}

/// The maps user space needs besides the mapped arrays.
pub struct SlotMaps<'a> {
    pub index_v4: &'a Map,
    pub index_v6: &'a Map,
    pub free_slots: BorrowedFd<'a>,
    /// The first slot never handed out.
    pub next_slot: u64,
}

/// The memory-mapped slot arrays and what xdpstat remembers about them.
pub struct Slots {
    sources: MappedArray<SlotSource>,
    counters: MappedArray<Counter>,
    slots: usize,
    cpus: usize,
    method: ReadMethod,
    /// Packets per slot at the last read and the one before: a slot whose
    /// count did not move between them is idle.
    current: Vec<u64>,
    previous: Vec<u64>,
    last_lens: (usize, usize),
    grace: Grace,
}

impl Slots {
    /// Maps the arrays of a datapath with `slots` slots on `cpus` possible
    /// CPUs.
    pub fn open(
        sources: BorrowedFd<'_>,
        counters: BorrowedFd<'_>,
        slots: usize,
        cpus: usize,
    ) -> Result<Self, XdpstatError> {
        let failed = |what: &str, e: std::io::Error| XdpstatError::Map {
            map: "slot arrays",
            reason: format!("{what}: {e}"),
        };
        Ok(Self {
            sources: MappedArray::map(sources, slots).map_err(|e| failed("mapping sources", e))?,
            counters: MappedArray::map(counters, slots * cpus)
                .map_err(|e| failed("mapping counters", e))?,
            slots,
            cpus,
            method: ReadMethod::Mapped,
            current: vec![0; slots],
            previous: vec![0; slots],
            last_lens: (0, 0),
            grace: Grace::new().map_err(|e| failed("creating the grace-period map", e))?,
        })
    }

    pub fn set_method(&mut self, method: ReadMethod) {
        self.method = method;
    }

    pub fn method(&self) -> ReadMethod {
        self.method
    }

    /// Slots that held counts at the last read.
    pub fn in_use(&self) -> usize {
        self.current.iter().filter(|&&packets| packets != 0).count()
    }

    /// A slot's counters summed over CPUs.
    fn total(&self, slot: usize) -> Counter {
        let mut sum = Counter::default();
        for cpu in 0..self.cpus {
            sum.add(&self.counters.get(cpu * self.slots + slot));
        }
        sum
    }

    /// Reads every slot in use into a table. `interface` labels errors.
    pub fn read(
        &mut self,
        maps: &SlotMaps<'_>,
        interface: &str,
    ) -> Result<SlotsRead, XdpstatError> {
        std::mem::swap(&mut self.previous, &mut self.current);
        let (len4, len6) = self.last_lens;
        let mut read = SlotsRead {
            sources: SourceTable::with_capacity(len4 + len4 / 16, len6 + len6 / 16),
            held_v4: Counter::default(),
            held_v6: Counter::default(),
            in_use: 0,
        };
        let handed_out = usize::try_from(maps.next_slot)
            .unwrap_or(usize::MAX)
            .min(self.slots);
        match self.method {
            ReadMethod::Mapped => {
                for slot in 0..handed_out {
                    self.read_slot(slot, None, &mut read);
                }
                self.current[handed_out..].fill(0);
            }
            ReadMethod::PerKey => {
                self.current.fill(0);
                let failed = |map: &'static str, e: &dyn std::error::Error| XdpstatError::MapRead {
                    interface: interface.to_owned(),
                    map,
                    reason: one_line(e),
                };
                let v4: HashMap<&MapData, Ipv4Key, u32> =
                    HashMap::try_from(maps.index_v4).map_err(|e| failed("INDEX_V4", &e))?;
                for entry in v4.iter() {
                    let (address, slot) = entry.map_err(|e| failed("INDEX_V4", &e))?;
                    let mut source = SlotSource {
                        family: FAMILY_V4,
                        ..SlotSource::default()
                    };
                    source.address[..4].copy_from_slice(&address);
                    self.read_slot(slot as usize, Some(source), &mut read);
                }
                let v6: HashMap<&MapData, Ipv6Key, u32> =
                    HashMap::try_from(maps.index_v6).map_err(|e| failed("INDEX_V6", &e))?;
                for entry in v6.iter() {
                    let (address, slot) = entry.map_err(|e| failed("INDEX_V6", &e))?;
                    let source = SlotSource {
                        address,
                        family: FAMILY_V6,
                        _pad: 0,
                    };
                    self.read_slot(slot as usize, Some(source), &mut read);
                }
            }
        }
        self.last_lens = read.sources.family_lens();
        Ok(read)
    }

    /// Adds one slot to `read`; `source` when the caller already knows it.
    fn read_slot(&mut self, slot: usize, source: Option<SlotSource>, read: &mut SlotsRead) {
        if slot >= self.slots {
            return;
        }
        let total = self.total(slot);
        self.current[slot] = total.packets;
        if total.packets == 0 {
            return;
        }
        // The program writes a slot's source before any CPU counts into it:
        // counts seen means the source is there to see.
        fence(Ordering::Acquire);
        let source = source.unwrap_or_else(|| self.sources.get(slot));
        read.in_use += 1;
        match source.family {
            FAMILY_V4 => {
                let address: [u8; 4] = source.address[..4].try_into().expect("4 bytes");
                read.sources.add(Ipv4Addr::from(address).into(), &total);
                read.held_v4.add(&total);
            }
            _ => {
                read.sources
                    .add(Ipv6Addr::from(source.address).into(), &total);
                read.held_v6.add(&total);
            }
        }
    }

    /// When fewer than an eighth of the slots are free after the last read,
    /// retires idle slots (no packet between the last two reads), fewest
    /// packets first, until a quarter (at least one) are free. Returns how
    /// many it retired.
    pub fn retire_idle(
        &mut self,
        maps: &SlotMaps<'_>,
        in_use: usize,
    ) -> Result<usize, XdpstatError> {
        let free = self.slots.saturating_sub(in_use);
        if free * 8 >= self.slots {
            return Ok(0);
        }
        let wanted = (self.slots / 4).max(1).saturating_sub(free);
        let mut idle: Vec<(u64, usize)> = (0..self.slots)
            .filter(|&slot| self.current[slot] != 0 && self.current[slot] == self.previous[slot])
            .map(|slot| (self.current[slot], slot))
            .collect();
        if idle.len() > wanted {
            idle.select_nth_unstable(wanted);
            idle.truncate(wanted);
        }
        let failed = |what: &str, e: std::io::Error| XdpstatError::Map {
            map: "slots",
            reason: format!("retiring idle slots: {what}: {e}"),
        };
        if idle.is_empty() {
            return Ok(0);
        }
        let v4 = index_fd("INDEX_V4", maps.index_v4)?;
        let v6 = index_fd("INDEX_V6", maps.index_v6)?;
        for &(_, slot) in &idle {
            let source = self.sources.get(slot);
            let (map, key) = match source.family {
                FAMILY_V4 => (v4, &source.address[..4]),
                _ => (v6, &source.address[..]),
            };
            bpf_sys::delete(map, key).map_err(|e| failed("deleting an index entry", e))?;
        }
        // From here on no program can reach the retired slots.
        self.grace
            .wait()
            .map_err(|e| failed("waiting for a grace period", e))?;
        for &(_, slot) in &idle {
            for cpu in 0..self.cpus {
                self.counters
                    .set(cpu * self.slots + slot, Counter::default());
            }
            self.sources.set(slot, SlotSource::default());
            self.current[slot] = 0;
            bpf_sys::push(maps.free_slots, slot as u32)
                .map_err(|e| failed("queueing a free slot", e))?;
        }
        Ok(idle.len())
    }
}

fn index_fd<'a>(name: &'static str, map: &'a Map) -> Result<BorrowedFd<'a>, XdpstatError> {
    use std::os::fd::AsFd as _;
    match map {
        Map::HashMap(data) => Ok(data.fd().as_fd()),
        _ => Err(XdpstatError::Map {
            map: name,
            reason: "not a hash map".into(),
        }),
    }
}
