//! A persisted datapath's pins: its link pinned, its pin directory kept
//! locked, and the record that lets a later xdpstat pick it up.

use super::*;

impl Datapath {
    /// Pins the BPF link of this datapath's attachment at `path`.
    pub fn pin_link(&self, path: &Path) -> Result<(), XdpstatError> {
        let link = self.link_fd.as_ref().ok_or_else(|| {
            XdpstatError::Usage(
                "--persist needs a BPF link, and this kernel attached through netlink".into(),
            )
        })?;
        crate::kernel::bpf_sys::pin(link.as_fd(), path).map_err(|e| XdpstatError::Pins {
            dir: path.to_owned(),
            source: e.into(),
        })
    }

    /// Keeps the datapath attached past the process: its pins, in `dir`
    /// (locked until this datapath is dropped), hold it.
    pub fn keep_pinned(&mut self, dir: PinDir) {
        self.persisted = Some(dir);
    }

    /// The pin directory, when persisted.
    pub fn pin_dir(&self) -> Option<&Path> {
        self.persisted.as_ref().map(PinDir::path)
    }

    /// Writes what this datapath is to its record, for `xdpstat status`
    /// and for the xdpstat that picks persisted pins up later; the layout
    /// goes in last, in the same write, marking the record complete.
    pub fn write_record(
        &self,
        attached: &Attached,
        since: SystemTime,
        persisted: bool,
    ) -> Result<(), XdpstatError> {
        let failed = |e: Cause| XdpstatError::Map {
            map: META_MAP,
            source: e,
        };
        let ids = self.maps.record_ids()?;
        let link = match &self.link_fd {
            Some(link) => {
                crate::kernel::bpf_sys::link_facts(link.as_fd()).map_err(|e| failed(e.into()))?
            }
            None => crate::kernel::bpf_sys::LinkFacts {
                link_type: 0,
                id: 0,
                prog_id: 0,
                ifindex: nix::net::if_::if_nametoindex(attached.interface.as_str()).unwrap_or(0),
            },
        };
        let netns = crate::kernel::pins::netns_inode().map_err(|e| failed(e.into()))?;
        let mut tables = self.lock_tables();
        let entries = tables.entries() as u32;
        tables
            .record_mut()
            .update(|meta| {
                meta.attach = meta::attach_code(attached.mode);
                meta.multi_buffer = u32::from(attached.multi_buffer);
                meta.persisted = u32::from(persisted);
                meta.max_sources = self.max_sources;
                meta.table_entries = entries;
                meta.ifindex = link.ifindex;
                meta.link_id = link.id;
                [
                    meta.sources_v4_id,
                    meta.sources_v6_id,
                    meta.pages_v4_id,
                    meta.pages_v6_id,
                ] = ids;
                meta.hash_seed = self.seed;
                meta.prefix_v4 = u32::from(self.lens.v4);
                meta.prefix_v6 = u32::from(self.lens.v6);
                meta.netns = netns;
                meta.since_ns = meta::nanos(since);
                meta.interface = meta::field(&attached.interface);
                meta.version = meta::field(env!("CARGO_PKG_VERSION"));
                meta.layout = PIN_LAYOUT;
            })
            .map_err(|e| failed(e.into()))
    }

    /// Finishes a retirement a persisted xdpstat died in the middle of
    /// (see `Tables::finish_retiring`).
    pub fn finish_retiring(&self) -> Result<(), XdpstatError> {
        self.lock_tables().finish_retiring()
    }
}
