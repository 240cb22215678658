//! Reads the source maps into a [`SourceTable`]: with batch lookups where
//! the kernel has them (a few system calls for the whole map), one key at a
//! time where it does not (two system calls per source).

use std::os::fd::{AsFd as _, BorrowedFd};

use aya::maps::{Map, MapData, PerCpuHashMap};
use xdpstat_common::{Counter, Ipv4Key, Ipv6Key};

use crate::{
    batch::{BatchReader, Outcome},
    error::{XdpstatError, one_line},
    sources::SourceTable,
};

/// Entries per batch system call. The buffers hold this many keys and this
/// many values per possible CPU (about 200 KiB on 2 CPUs, 4 MiB on 64).
const BATCH_ENTRIES: usize = 4096;

/// How the source maps are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMethod {
    /// BPF_MAP_LOOKUP_BATCH (Linux 5.6).
    Batch,
    /// Get-next-key, then lookup, per entry: what kernels without batch
    /// lookups allow, and what most tools do.
    PerKey,
}

/// What one read of both source maps found.
pub struct SourcesRead {
    pub sources: SourceTable,
    /// The sum of the IPv4 map's entries.
    pub held_v4: Counter,
    /// The sum of the IPv6 map's entries.
    pub held_v6: Counter,
}

/// Reusable buffers and the read method, kept between reads.
pub struct SourceReader {
    method: ReadMethod,
    v4: BatchReader<Ipv4Key, Counter>,
    v6: BatchReader<Ipv6Key, Counter>,
    /// Sizes of the last read, to size the next table without rehashing.
    last_lens: (usize, usize),
}

/// One source map, as the object file names it.
pub struct SourceMap<'a> {
    pub name: &'static str,
    pub map: &'a Map,
    pub max_entries: usize,
}

impl SourceMap<'_> {
    /// The map's file descriptor, for system calls aya does not make.
    pub fn fd(&self) -> Result<BorrowedFd<'_>, XdpstatError> {
        Ok(map_data(self)?.fd().as_fd())
    }
}

impl SourceReader {
    /// A reader that uses `method`, falling back to per-key reads if the
    /// kernel turns out to lack batch lookups.
    pub fn new(method: ReadMethod) -> Result<Self, XdpstatError> {
        Self::with_batch_entries(method, BATCH_ENTRIES)
    }

    /// Like [`SourceReader::new`] with `entries` per batch call (it grows
    /// when a hash bucket holds more).
    pub fn with_batch_entries(method: ReadMethod, entries: usize) -> Result<Self, XdpstatError> {
        let cpus = aya::util::nr_cpus().map_err(|(path, e)| XdpstatError::Map {
            map: "source maps",
            reason: format!("cannot count the possible CPUs from {path}: {e}"),
        })?;
        Ok(Self {
            method,
            v4: BatchReader::new(cpus, entries),
            v6: BatchReader::new(cpus, entries),
            last_lens: (0, 0),
        })
    }

    /// The method the last read used.
    pub fn method(&self) -> ReadMethod {
        self.method
    }

    /// Reads both maps. `interface` only labels errors.
    pub fn read(
        &mut self,
        v4: SourceMap<'_>,
        v6: SourceMap<'_>,
        interface: &str,
    ) -> Result<SourcesRead, XdpstatError> {
        let (len4, len6) = self.last_lens;
        let mut sources = SourceTable::with_capacity(len4 + len4 / 16, len6 + len6 / 16);
        read_map(&mut self.method, &mut self.v4, &v4, interface, |k, c| {
            sources.insert_v4(k, c)
        })?;
        read_map(&mut self.method, &mut self.v6, &v6, interface, |k, c| {
            sources.insert_v6(k, c)
        })?;
        self.last_lens = sources.family_lens();
        // Summed from the table, where a key met twice counts once.
        let (held_v4, held_v6) = sources.family_sums();
        Ok(SourcesRead {
            sources,
            held_v4,
            held_v6,
        })
    }
}

/// Reads one map, handing each source's CPU sum to `insert` (insert, not
/// add: should a per-key walk restart and meet a source twice, it still
/// counts once).
fn read_map<K: aya::Pod>(
    method: &mut ReadMethod,
    batch: &mut BatchReader<K, Counter>,
    source: &SourceMap<'_>,
    interface: &str,
    mut insert: impl FnMut(K, Counter),
) -> Result<(), XdpstatError> {
    let failed = |reason: String| XdpstatError::MapRead {
        interface: interface.to_owned(),
        map: source.name,
        reason,
    };
    let data = map_data(source)?;
    if *method == ReadMethod::Batch {
        let outcome = batch
            .read(data.fd().as_fd(), source.max_entries, |key, values| {
                insert(*key, sum_cpus(values));
            })
            .map_err(|e| failed(format!("batch lookup: {e}")))?;
        match outcome {
            Outcome::Read { .. } => return Ok(()),
            Outcome::Unsupported => *method = ReadMethod::PerKey,
        }
    }
    let map: PerCpuHashMap<&MapData, K, Counter> =
        PerCpuHashMap::try_from(source.map).map_err(|e| failed(one_line(&e)))?;
    for entry in map.iter() {
        let (key, values) = entry.map_err(|e| failed(one_line(&e)))?;
        insert(key, sum_cpus(&values));
    }
    Ok(())
}

fn map_data<'a>(source: &SourceMap<'a>) -> Result<&'a MapData, XdpstatError> {
    match source.map {
        Map::PerCpuLruHashMap(data) | Map::PerCpuHashMap(data) => Ok(data),
        _ => Err(XdpstatError::Map {
            map: source.name,
            reason: "not a per-CPU hash map".into(),
        }),
    }
}

pub(crate) fn sum_cpus(values: &[Counter]) -> Counter {
    let mut sum = Counter::default();
    for value in values {
        sum.add(value);
    }
    sum
}
