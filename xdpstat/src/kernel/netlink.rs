//! What the kernel's netlink interfaces say about a network interface, for
//! `xdpstat doctor`: its link attributes from rtnetlink (state, MTU, kind,
//! lower and controller devices, queues, the XDP program on it), and its
//! XDP features from the netdev generic-netlink family (Linux 6.3).

use std::io;

use netlink_packet_core::{
    DecodeError, Emitable, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload, Nla,
    NlasIterator, ParseableParametrized,
};
use netlink_packet_generic::{
    GenlFamily, GenlHeader, GenlMessage,
    ctrl::{GenlCtrl, GenlCtrlCmd, nlas::GenlCtrlAttrs},
};
use netlink_packet_route::{
    RouteNetlinkMessage,
    link::{LinkAttribute, LinkFlags, LinkInfo, LinkMessage, LinkXdp, XdpAttached},
};
use netlink_sys::{
    Socket, SocketAddr,
    protocols::{NETLINK_GENERIC, NETLINK_ROUTE},
};

/// Where an XDP program sits on an interface, as rtnetlink reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpOnLink {
    /// The program in driver (native) mode, generic mode and offload.
    pub native: Option<u32>,
    pub generic: Option<u32>,
    pub offload: Option<u32>,
}

impl XdpOnLink {
    /// The program holding the hook and its mode, if any.
    pub fn holder(&self) -> Option<(u32, &'static str)> {
        self.native
            .map(|id| (id, "native"))
            .or(self.generic.map(|id| (id, "generic")))
            .or(self.offload.map(|id| (id, "offload")))
    }
}

/// One interface's link attributes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// Administratively up.
    pub up: bool,
    /// The operational state (`up`, `down`, `unknown`, ...).
    pub oper_state: String,
    pub mtu: u32,
    pub max_mtu: Option<u32>,
    /// The link kind (`veth`, `bridge`, `vlan`, ...); `None` for a
    /// physical device.
    pub kind: Option<String>,
    /// The device this one is stacked on (a VLAN's parent).
    pub lower: Option<u32>,
    /// The bridge or bond this one is a port of.
    pub controller: Option<u32>,
    pub rx_queues: Option<u32>,
    pub tx_queues: Option<u32>,
    pub xdp: XdpOnLink,
}

#[cfg(test)]
impl Link {
    /// An `eth0` that is up, of `kind` (a physical device: none) and `mtu`,
    /// for judging recorded answers.
    pub(crate) fn sample(kind: Option<&str>, mtu: u32) -> Self {
        Self {
            index: 7,
            name: "eth0".into(),
            up: true,
            oper_state: "up".into(),
            mtu,
            kind: kind.map(str::to_owned),
            ..Self::default()
        }
    }
}

/// The attributes of interface `name` (in the calling thread's network
/// namespace), or `None` when there is none by that name.
pub fn link(name: &str) -> io::Result<Option<Link>> {
    let mut message = LinkMessage::default();
    message
        .attributes
        .push(LinkAttribute::IfName(name.to_owned()));
    let mut request = NetlinkMessage::new(
        NetlinkHeader::default(),
        NetlinkPayload::from(RouteNetlinkMessage::GetLink(message)),
    );
    request.header.flags = NLM_F_REQUEST;
    request.header.sequence_number = 1;
    request.finalize();
    let socket = open(NETLINK_ROUTE)?;
    let answer = exchange(&socket, &request)?;
    match answer.payload {
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(message)) => {
            Ok(Some(link_of(&message)))
        }
        NetlinkPayload::Error(error) => match error.code {
            Some(code) if code.get() == -libc::ENODEV => Ok(None),
            _ => Err(error.to_io()),
        },
        other => Err(io::Error::other(format!(
            "unexpected rtnetlink answer {other:?}"
        ))),
    }
}

/// The name of the interface with index `index`, if any.
pub fn name_of(index: u32) -> Option<String> {
    nix::net::if_::if_indextoname(index)
        .ok()
        .map(|name| name.to_string_lossy().into_owned())
}

fn link_of(message: &LinkMessage) -> Link {
    let mut link = Link {
        index: message.header.index,
        up: message.header.flags.contains(LinkFlags::Up),
        ..Link::default()
    };
    for attribute in &message.attributes {
        match attribute {
            LinkAttribute::IfName(name) => link.name = name.clone(),
            LinkAttribute::OperState(state) => {
                link.oper_state = format!("{state:?}").to_lowercase();
            }
            LinkAttribute::Mtu(mtu) => link.mtu = *mtu,
            LinkAttribute::MaxMtu(mtu) => link.max_mtu = Some(*mtu),
            LinkAttribute::Link(lower) => link.lower = Some(*lower),
            LinkAttribute::Controller(controller) => link.controller = Some(*controller),
            LinkAttribute::NumRxQueues(n) => link.rx_queues = Some(*n),
            LinkAttribute::NumTxQueues(n) => link.tx_queues = Some(*n),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    if let LinkInfo::Kind(kind) = info {
                        link.kind = Some(kind.to_string());
                    }
                }
            }
            LinkAttribute::Xdp(xdp) => link.xdp = xdp_of(xdp),
            _ => {}
        }
    }
    link
}

fn xdp_of(attributes: &[LinkXdp]) -> XdpOnLink {
    let mut on = XdpOnLink::default();
    let mut attached = XdpAttached::None;
    let mut any = None;
    for attribute in attributes {
        match attribute {
            LinkXdp::Attached(how) => attached = *how,
            LinkXdp::ProgId(id) => any = Some(*id),
            LinkXdp::DrvProgId(id) => on.native = Some(*id),
            LinkXdp::SkbProgId(id) => on.generic = Some(*id),
            LinkXdp::HwProgId(id) => on.offload = Some(*id),
            _ => {}
        }
    }
    // One program: the kernel gives its id once, with the mode apart.
    if let Some(id) = any {
        match attached {
            XdpAttached::Driver => on.native = on.native.or(Some(id)),
            XdpAttached::SocketBuffer => on.generic = on.generic.or(Some(id)),
            XdpAttached::Hardware => on.offload = on.offload.or(Some(id)),
            _ => {}
        }
    }
    on
}

/// Bits of `NETDEV_A_DEV_XDP_FEATURES` (`enum netdev_xdp_act`).
pub mod xdp_feature {
    pub const BASIC: u64 = 1;
    pub const REDIRECT: u64 = 2;
    pub const NDO_XMIT: u64 = 4;
    pub const XSK_ZEROCOPY: u64 = 8;
    pub const HW_OFFLOAD: u64 = 16;
    pub const RX_SG: u64 = 32;
    pub const NDO_XMIT_SG: u64 = 64;
}

/// The native XDP features the driver of interface `index` reports, or
/// `None` when this kernel has no netdev family to ask (before 6.3).
pub fn xdp_features(index: u32) -> io::Result<Option<u64>> {
    let socket = open(NETLINK_GENERIC)?;
    let Some(family) = family_id(&socket, "netdev")? else {
        return Ok(None);
    };
    let mut message = GenlMessage::from_payload(DevGet {
        ifindex: index,
        features: None,
    });
    message.set_resolved_family_id(family);
    let mut request = NetlinkMessage::from(message);
    request.header.flags = NLM_F_REQUEST;
    request.header.sequence_number = 2;
    request.finalize();
    let answer = exchange(&socket, &request)?;
    match answer.payload {
        NetlinkPayload::InnerMessage(message) => Ok(Some(message.payload.features.unwrap_or(0))),
        NetlinkPayload::Error(error) => Err(error.to_io()),
        other => Err(io::Error::other(format!(
            "unexpected netdev answer {other:?}"
        ))),
    }
}

/// The id of generic-netlink family `name`, if the kernel has it.
fn family_id(socket: &Socket, name: &str) -> io::Result<Option<u16>> {
    let mut message = GenlMessage::from_payload(GenlCtrl {
        cmd: GenlCtrlCmd::GetFamily,
        nlas: vec![GenlCtrlAttrs::FamilyName(name.to_owned())],
    });
    message.finalize();
    let mut request = NetlinkMessage::from(message);
    request.header.flags = NLM_F_REQUEST;
    request.header.sequence_number = 1;
    request.finalize();
    let answer = exchange(socket, &request)?;
    match answer.payload {
        NetlinkPayload::InnerMessage(message) => {
            Ok(message.payload.nlas.iter().find_map(|nla| match nla {
                GenlCtrlAttrs::FamilyId(id) => Some(*id),
                _ => None,
            }))
        }
        NetlinkPayload::Error(error) if error.code.map(|c| c.get()) == Some(-libc::ENOENT) => {
            Ok(None)
        }
        NetlinkPayload::Error(error) => Err(error.to_io()),
        other => Err(io::Error::other(format!(
            "unexpected nlctrl answer {other:?}"
        ))),
    }
}

fn open(protocol: isize) -> io::Result<Socket> {
    let mut socket = Socket::new(protocol)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    Ok(socket)
}

/// Sends `request` and returns the one answer.
fn exchange<T>(socket: &Socket, request: &NetlinkMessage<T>) -> io::Result<NetlinkMessage<T>>
where
    T: netlink_packet_core::NetlinkSerializable
        + netlink_packet_core::NetlinkDeserializable
        + std::fmt::Debug,
{
    let mut buffer = vec![0u8; request.buffer_len()];
    request.serialize(&mut buffer);
    socket.send(&buffer, 0)?;
    let mut answer = vec![0u8; 64 * 1024];
    let size = socket.recv(&mut &mut answer[..], 0)?;
    NetlinkMessage::<T>::deserialize(&answer[..size])
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
}

/// `NETDEV_CMD_DEV_GET` for one interface, and its answer.
#[derive(Clone, Debug, PartialEq, Eq)]
struct DevGet {
    ifindex: u32,
    features: Option<u64>,
}

const NETDEV_CMD_DEV_GET: u8 = 1;
const NETDEV_A_DEV_IFINDEX: u16 = 1;
const NETDEV_A_DEV_XDP_FEATURES: u16 = 3;

impl GenlFamily for DevGet {
    fn family_name() -> &'static str {
        "netdev"
    }

    fn command(&self) -> u8 {
        NETDEV_CMD_DEV_GET
    }

    fn version(&self) -> u8 {
        1
    }
}

/// The request's one attribute: the interface index.
struct IfIndex(u32);

impl Nla for IfIndex {
    fn value_len(&self) -> usize {
        4
    }

    fn kind(&self) -> u16 {
        NETDEV_A_DEV_IFINDEX
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        buffer[..4].copy_from_slice(&self.0.to_ne_bytes());
    }
}

impl Emitable for DevGet {
    fn buffer_len(&self) -> usize {
        [IfIndex(self.ifindex)].as_slice().buffer_len()
    }

    fn emit(&self, buffer: &mut [u8]) {
        [IfIndex(self.ifindex)].as_slice().emit(buffer);
    }
}

impl ParseableParametrized<[u8], GenlHeader> for DevGet {
    fn parse_with_param(buffer: &[u8], _header: GenlHeader) -> Result<Self, DecodeError> {
        let mut answer = DevGet {
            ifindex: 0,
            features: None,
        };
        for nla in NlasIterator::new(buffer) {
            let nla = nla?;
            let value = nla.value();
            match nla.kind() {
                NETDEV_A_DEV_IFINDEX if value.len() >= 4 => {
                    answer.ifindex = u32::from_ne_bytes(value[..4].try_into().unwrap_or_default());
                }
                NETDEV_A_DEV_XDP_FEATURES if value.len() >= 8 => {
                    answer.features = Some(u64::from_ne_bytes(
                        value[..8].try_into().unwrap_or_default(),
                    ));
                }
                _ => {}
            }
        }
        Ok(answer)
    }
}
