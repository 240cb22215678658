//! Where the program runs: attaching to an interface's XDP hook (native,
//! generic or offload, the plain program or the frags one) or at tc
//! ingress, taking a pinned link over, and detaching.

use super::*;

impl Datapath {
    /// Attaches to `interface` (a name in the calling thread's network
    /// namespace) and reports the mode and link kind that were obtained.
    /// In each mode the plain program is tried first; an interface that
    /// refuses it (a jumbo MTU needs multi-buffer support) gets the frags one.
    pub fn attach(&mut self, interface: &str, mode: AttachMode) -> Result<Attached, XdpstatError> {
        let mut last_refusal = None;
        let mut native_refused = None;
        for &xdp_mode in mode.tries() {
            for variant in [Variant::Linear, Variant::Frags] {
                let program = program_mut(&mut self.ebpf, variant)?;
                match program.attach(interface, xdp_mode) {
                    Ok(id) => {
                        self.link = Some(Attachment::Xdp {
                            interface: interface.to_owned(),
                            variant,
                            id,
                        });
                        self.link_fd = self.own_link();
                        let link = if self.link_fd.is_some() {
                            LinkKind::BpfLink
                        } else if self.program_id().is_some() {
                            LinkKind::Netlink
                        } else {
                            LinkKind::Unknown
                        };
                        return Ok(Attached {
                            interface: interface.to_owned(),
                            mode: ObtainedMode::from(xdp_mode),
                            link,
                            multi_buffer: variant == Variant::Frags,
                            native_refused: native_refused.clone(),
                        });
                    }
                    Err(error) => {
                        let error = attach_error(interface, xdp_mode, mode, error);
                        match error {
                            XdpstatError::ModeRefused {
                                ref why,
                                ref source,
                                ..
                            } => {
                                if xdp_mode == aya::programs::XdpMode::Driver {
                                    // The cause found, else the kernel's answer.
                                    native_refused = Some(why.clone().unwrap_or_else(|| {
                                        crate::error::one_line(source.as_ref())
                                    }));
                                }
                                last_refusal = Some(error);
                            }
                            other => return Err(other),
                        }
                    }
                }
            }
        }
        Err(last_refusal.unwrap_or_else(|| XdpstatError::Attach {
            interface: interface.to_owned(),
            source: "no attach mode to try".into(),
        }))
    }

    /// Attaches at tc ingress of `interface` through a tcx link (Linux
    /// 6.6): beside whatever holds the XDP hook, counting what it passed.
    pub fn attach_tcx(&mut self, interface: &str) -> Result<Attached, XdpstatError> {
        let id = tcx_program(&mut self.ebpf)?
            .attach_with_options(
                interface,
                TcAttachType::Ingress,
                TcAttachOptions::TcxOrder(LinkOrder::default()),
            )
            .map_err(|error| match error {
                ProgramError::UnknownInterface { .. } => XdpstatError::UnknownInterface {
                    interface: interface.to_owned(),
                },
                ProgramError::TcError(aya::programs::tc::TcError::IoError(ref io))
                    if io.kind() == std::io::ErrorKind::NotFound =>
                {
                    XdpstatError::UnknownInterface {
                        interface: interface.to_owned(),
                    }
                }
                other => XdpstatError::Attach {
                    interface: interface.to_owned(),
                    source: other.into(),
                },
            })?;
        self.link = Some(Attachment::Tcx {
            interface: interface.to_owned(),
            id,
        });
        self.link_fd = self.own_link();
        Ok(Attached {
            interface: interface.to_owned(),
            mode: ObtainedMode::Tcx,
            link: if self.link_fd.is_some() {
                LinkKind::BpfLink
            } else {
                LinkKind::Unknown
            },
            multi_buffer: false,
            native_refused: None,
        })
    }

    /// Detaches from the interface, if attached. An interface that is gone
    /// took the attachment with it: nothing to fail then. A persisted
    /// datapath stays attached: its pins hold it.
    pub fn detach(&mut self) -> Result<(), XdpstatError> {
        if self.persisted.is_some() {
            self.link_fd = None;
            return Ok(());
        }
        let gone = self.interface_gone();
        let Some(attachment) = self.link.take() else {
            return Ok(());
        };
        // Our copy of the link's descriptor would keep it attached.
        self.link_fd = None;
        if gone {
            return Ok(());
        }
        let interface = attachment.interface().to_owned();
        let detached = match attachment {
            Attachment::Xdp { variant, id, .. } => program_mut(&mut self.ebpf, variant)?.detach(id),
            Attachment::Tcx { id, .. } => tcx_program(&mut self.ebpf)?.detach(id),
        };
        detached.map_err(|e| XdpstatError::Detach {
            interface,
            source: e.into(),
        })
    }

    /// Replaces the program of the link pinned at `link` with this one's
    /// (one BPF_LINK_UPDATE: no packet goes uncounted) and takes the
    /// attachment over. `meta` is the pinned record: how it is attached.
    pub fn take_over(
        &mut self,
        interface: &str,
        link: &Path,
        meta: &Meta,
    ) -> Result<Attached, XdpstatError> {
        let failed = |e: Cause| XdpstatError::Attach {
            interface: interface.to_owned(),
            source: e,
        };
        let mode = meta::attach_mode(meta.attach).ok_or_else(|| {
            failed(format!("unknown attachment {} in the record", meta.attach).into())
        })?;
        let pinned = FdLink::from(PinnedLink::from_pin(link).map_err(|e| failed(e.into()))?);
        let multi_buffer = meta.multi_buffer != 0;
        self.link = Some(if mode == ObtainedMode::Tcx {
            let link = SchedClassifierLink::try_from(pinned).map_err(|e| failed(e.into()))?;
            let id = tcx_program(&mut self.ebpf)?
                .attach_to_link(link)
                .map_err(|e| failed(e.into()))?;
            Attachment::Tcx {
                interface: interface.to_owned(),
                id,
            }
        } else {
            let variant = if multi_buffer {
                Variant::Frags
            } else {
                Variant::Linear
            };
            let link = XdpLink::try_from(pinned).map_err(|e| failed(e.into()))?;
            let id = program_mut(&mut self.ebpf, variant)?
                .attach_to_link(link)
                .map_err(|e| failed(e.into()))?;
            Attachment::Xdp {
                interface: interface.to_owned(),
                variant,
                id,
            }
        });
        self.link_fd = self.own_link();
        Ok(Attached {
            interface: interface.to_owned(),
            mode,
            link: LinkKind::BpfLink,
            multi_buffer,
            native_refused: None,
        })
    }

    /// Our own descriptor of the BPF link holding our attachment (which
    /// the kernel detaches when xdpstat dies), or `None` for a netlink
    /// attachment (which stays behind).
    pub(super) fn own_link(&self) -> Option<OwnedFd> {
        crate::kernel::bpf_sys::own_link(self.program_id()?)
    }

    /// Whether the interface this datapath was attached to has been
    /// removed. Asked of the BPF link, so it holds whichever network
    /// namespace the interface was in; for a netlink attachment, the name
    /// is looked up in the calling thread's namespace.
    pub fn interface_gone(&self) -> bool {
        let Some(attachment) = &self.link else {
            return false;
        };
        match &self.link_fd {
            Some(link) => matches!(crate::kernel::bpf_sys::link_ifindex(link.as_fd()), Ok(None)),
            // Only "no such device": a lookup that failed for want of a
            // descriptor (its socket) says nothing of the interface.
            None => matches!(
                nix::net::if_::if_nametoindex(attachment.interface()),
                Err(nix::errno::Errno::ENODEV)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    /// What `interface_gone` takes for a removed interface (a netlink
    /// attachment): the lookup's "no such device", not any error.
    #[test]
    fn a_missing_interface_is_no_such_device() {
        assert_eq!(
            nix::net::if_::if_nametoindex("xdpstat-none0"),
            Err(nix::errno::Errno::ENODEV)
        );
    }
}
