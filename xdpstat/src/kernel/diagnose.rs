//! Why the kernel refused native XDP on an interface: the kernel answers
//! a refused attach with one errno, so the cause is looked for where it
//! lies (LRO, the driver's XDP features, an MTU past one page, a stacked
//! device). The attach error names it; `doctor` shows the same facts as
//! checks.

use crate::kernel::{
    ethtool,
    netlink::{self, Link, xdp_feature},
};

/// The largest MTU whose frames fit the plain program on every common
/// driver: one 4 KiB page less the XDP headroom and `skb_shared_info`.
pub const ONE_PAGE_MTU: u32 = 3498;

/// What is found behind a refusal of native mode on `name`, if anything.
pub fn refusal_cause(name: &str) -> Option<String> {
    let link = netlink::link(name).ok()??;
    let features = netlink::xdp_features(link.index).ok().flatten();
    cause(&link, features, ethtool::lro(name).unwrap_or(false))
}

/// The first cause `link`, its XDP `features` and `lro` show.
pub fn cause(link: &Link, features: Option<u64>, lro: bool) -> Option<String> {
    if lro {
        return Some("hardware LRO is on".into());
    }
    if let Some(features) = features {
        if features & xdp_feature::BASIC == 0 {
            return Some("the driver has no native XDP".into());
        }
        if link.mtu > ONE_PAGE_MTU && features & xdp_feature::RX_SG == 0 {
            return Some(format!(
                "MTU {} is longer than a page, and the driver has no multi-buffer XDP",
                link.mtu
            ));
        }
    }
    match link.kind.as_deref() {
        Some(
            kind @ ("vlan" | "macvlan" | "ipvlan" | "macsec" | "bond" | "team" | "bridge" | "tun"
            | "tap"),
        ) => Some(format!("a {kind} device")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(kind: Option<&str>, mtu: u32) -> Link {
        Link::sample(kind, mtu)
    }

    #[test]
    fn a_refusal_is_put_down_to_the_first_cause_found() {
        let eth = link(None, 1500);
        assert_eq!(
            cause(&eth, Some(xdp_feature::BASIC), true).as_deref(),
            Some("hardware LRO is on")
        );
        assert_eq!(
            cause(&eth, Some(0), false).as_deref(),
            Some("the driver has no native XDP")
        );
        let jumbo = link(None, 9000);
        assert!(
            cause(&jumbo, Some(xdp_feature::BASIC), false)
                .unwrap()
                .contains("MTU 9000")
        );
        assert_eq!(
            cause(&jumbo, Some(xdp_feature::BASIC | xdp_feature::RX_SG), false),
            None
        );
        assert_eq!(
            cause(&link(Some("vlan"), 1500), None, false).as_deref(),
            Some("a vlan device")
        );
        assert_eq!(cause(&eth, None, false), None);
    }
}
