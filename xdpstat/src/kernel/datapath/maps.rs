//! The maps user space reads, taken out of the loaded object once, by the
//! names `xdpstat_common` gives them and with their types checked then: a
//! map missing or of another type fails the load, not a read later. (The
//! rule maps are taken the same way, into `RuleMaps`.)

use std::os::fd::{AsFd as _, BorrowedFd};

use aya::{
    Ebpf,
    maps::{Map, MapData, PerCpuArray},
};
use xdpstat_common::{
    COMPACT_CONTROL_MAP, COMPACTED_MAP, CPU_STATE_MAP, Counter, CpuState, META_MAP, MIXED_V4_MAP,
    MIXED_V6_MAP, PAGES_V4_MAP, PAGES_V6_MAP, SOURCES_V4_MAP, SOURCES_V6_MAP,
    kinds::{PORTS, PORTS_MAP, side::SIDES},
    rules::{BUCKETS_V4_MAP, BUCKETS_V6_MAP, ROWS_V4_MAP, ROWS_V6_MAP},
    sketch::{HEAVY_V4_MAP, HEAVY_V6_MAP, Heavy, SKETCH_V4_MAP, SKETCH_V6_MAP},
};

use crate::{
    error::XdpstatError,
    kernel::{compacted::Copies, mapped::MappedArray, memory::possible_cpus, meta::Record},
};

/// One datapath's maps, by family where they come in two (IPv4, IPv6).
pub(super) struct Maps {
    /// The source tables, as arrays (read through memory or key by key).
    pub sources: [Map; 2],
    /// Their page flags.
    pub pages: [MapData; 2],
    /// The rows beside the table entries, and their sources' buckets.
    pub rows: [MapData; 2],
    pub buckets: [MapData; 2],
    /// The packets of other protocols than each source's first, beside
    /// the table entries.
    pub mixed: [MapData; 2],
    /// Each CPU's runs and class counters.
    pub cpu_state: PerCpuArray<MapData, CpuState>,
    /// The prefix sketches, a section per CPU (see `kernel::sections`),
    /// and their heavy-hitter tables.
    pub sketch: [MapData; 2],
    pub heavy: [PerCpuArray<MapData, Heavy>; 2],
    /// Packets and bytes per port and side, a section per CPU, mapped;
    /// and the map itself, held as the other maps are.
    pub ports: MappedArray<Counter>,
    _ports_map: MapData,
    /// Possible CPUs: the sections of `ports`.
    pub cpus: usize,
    /// Where the kernel copies the tables' sources for a read, mapped;
    /// and the maps themselves.
    pub copies: Copies,
    _copies_maps: [MapData; 2],
}

fn missing(map: &'static str) -> XdpstatError {
    XdpstatError::Map {
        map,
        source: "not in the object file".into(),
    }
}

fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<Map, XdpstatError> {
    ebpf.take_map(name).ok_or_else(|| missing(name))
}

fn array_data(ebpf: &mut Ebpf, name: &'static str) -> Result<MapData, XdpstatError> {
    match take(ebpf, name)? {
        Map::Array(data) => Ok(data),
        _ => Err(not_an_array(name)),
    }
}

fn not_an_array(map: &'static str) -> XdpstatError {
    XdpstatError::Map {
        map,
        source: "not an array in the object file".into(),
    }
}

fn typed<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, XdpstatError>
where
    T: TryFrom<Map, Error = aya::maps::MapError>,
{
    T::try_from(take(ebpf, name)?).map_err(|e| XdpstatError::Map {
        map: name,
        source: e.into(),
    })
}

impl Maps {
    /// Takes the maps out of `ebpf`, and the record, which goes to the
    /// tables.
    pub fn take(ebpf: &mut Ebpf) -> Result<(Self, Record), XdpstatError> {
        let record = Record::open(array_data(ebpf, META_MAP)?).map_err(|e| XdpstatError::Map {
            map: META_MAP,
            source: e.into(),
        })?;
        let ports_map = array_data(ebpf, PORTS_MAP)?;
        let copies_maps = [
            array_data(ebpf, COMPACT_CONTROL_MAP)?,
            array_data(ebpf, COMPACTED_MAP)?,
        ];
        let copies = Copies::open(copies_maps[0].fd().as_fd(), copies_maps[1].fd().as_fd())
            .map_err(|e| XdpstatError::Map {
                map: COMPACTED_MAP,
                source: e.into(),
            })?;
        let maps = Self {
            sources: [take(ebpf, SOURCES_V4_MAP)?, take(ebpf, SOURCES_V6_MAP)?],
            pages: [
                array_data(ebpf, PAGES_V4_MAP)?,
                array_data(ebpf, PAGES_V6_MAP)?,
            ],
            rows: [
                array_data(ebpf, ROWS_V4_MAP)?,
                array_data(ebpf, ROWS_V6_MAP)?,
            ],
            buckets: [
                array_data(ebpf, BUCKETS_V4_MAP)?,
                array_data(ebpf, BUCKETS_V6_MAP)?,
            ],
            mixed: [
                array_data(ebpf, MIXED_V4_MAP)?,
                array_data(ebpf, MIXED_V6_MAP)?,
            ],
            cpu_state: typed(ebpf, CPU_STATE_MAP)?,
            sketch: [
                array_data(ebpf, SKETCH_V4_MAP)?,
                array_data(ebpf, SKETCH_V6_MAP)?,
            ],
            heavy: [typed(ebpf, HEAVY_V4_MAP)?, typed(ebpf, HEAVY_V6_MAP)?],
            ports: mapped_ports(&ports_map)?,
            _ports_map: ports_map,
            cpus: possible_cpus() as usize,
            copies,
            _copies_maps: copies_maps,
        };
        array(SOURCES_V4_MAP, &maps.sources[0])?;
        array(SOURCES_V6_MAP, &maps.sources[1])?;
        Ok((maps, record))
    }

    /// The descriptor of the source table of family `v6`.
    pub fn sources_fd(&self, v6: bool) -> Result<BorrowedFd<'_>, XdpstatError> {
        let name = if v6 { SOURCES_V6_MAP } else { SOURCES_V4_MAP };
        Ok(array(name, &self.sources[usize::from(v6)])?.fd().as_fd())
    }

    /// The kernel's ids of the tables and their page flags (IPv4, IPv6,
    /// pages IPv4, pages IPv6), for the record.
    pub fn record_ids(&self) -> Result<[u32; 4], XdpstatError> {
        let id = |name: &'static str, map: &MapData| -> Result<u32, XdpstatError> {
            map.info()
                .map(|info| info.id())
                .map_err(|e| XdpstatError::Map {
                    map: name,
                    source: e.into(),
                })
        };
        Ok([
            id(SOURCES_V4_MAP, array(SOURCES_V4_MAP, &self.sources[0])?)?,
            id(SOURCES_V6_MAP, array(SOURCES_V6_MAP, &self.sources[1])?)?,
            id(PAGES_V4_MAP, &self.pages[0])?,
            id(PAGES_V6_MAP, &self.pages[1])?,
        ])
    }
}

/// The port counters, mapped into memory.
fn mapped_ports(map: &MapData) -> Result<MappedArray<Counter>, XdpstatError> {
    let len = possible_cpus() as usize * (SIDES * PORTS) as usize;
    MappedArray::map(map.fd().as_fd(), len).map_err(|e| XdpstatError::Map {
        map: PORTS_MAP,
        source: e.into(),
    })
}

/// `map`'s data when it is an array.
fn array<'a>(name: &'static str, map: &'a Map) -> Result<&'a MapData, XdpstatError> {
    match map {
        Map::Array(data) => Ok(data),
        _ => Err(not_an_array(name)),
    }
}
