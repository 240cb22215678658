//! Traffic per network prefix: the answer to "which networks?" when a
//! flood of small sources overwhelms the tables. Exact for what xdpstat
//! has the facts of (sources the tables hold and sources it retired),
//! estimated from the datapath's sketch for what no entry ever held, with
//! the estimate's bound.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use ipnet::IpNet;

use crate::counts::sources::SourceTable;
use xdpstat_common::{
    Counter,
    sketch::{DEFAULT_PREFIX_V4, DEFAULT_PREFIX_V6, PrefixKey},
};

/// The prefix length per family (`--prefix-len 24,48`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrefixLens {
    pub v4: u8,
    pub v6: u8,
}

impl Default for PrefixLens {
    fn default() -> Self {
        Self {
            v4: DEFAULT_PREFIX_V4,
            v6: DEFAULT_PREFIX_V6,
        }
    }
}

impl FromStr for PrefixLens {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (v4, v6) = text
            .split_once(',')
            .ok_or_else(|| format!("`{text}`: give an IPv4 and an IPv6 length, e.g. 24,48"))?;
        let length = |part: &str, max: u8, family: &str| {
            part.trim()
                .parse::<u8>()
                .ok()
                .filter(|&n| (1..=max).contains(&n))
                .ok_or_else(|| format!("`{part}` is not an {family} prefix length (1 to {max})"))
        };
        Ok(Self {
            v4: length(v4, 32, "IPv4")?,
            v6: length(v6, 128, "IPv6")?,
        })
    }
}

impl std::fmt::Display for PrefixLens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{},{}", self.v4, self.v6)
    }
}

impl PrefixLens {
    /// The prefix `address` is in.
    pub fn of(&self, address: IpAddr) -> IpNet {
        let len = match address {
            IpAddr::V4(_) => self.v4,
            IpAddr::V6(_) => self.v6,
        };
        IpNet::new(address, len)
            .map(|net| net.trunc())
            .unwrap_or_else(|_| IpNet::from(address))
    }

    /// The IPv4 mask as the datapath applies it to a native read of the
    /// wire bytes.
    pub fn v4_mask(&self) -> u32 {
        let mask = u32::MAX.checked_shl(32 - u32::from(self.v4)).unwrap_or(0);
        u32::from_ne_bytes(mask.to_be_bytes())
    }

    /// The IPv6 mask as two native reads of the wire bytes.
    pub fn v6_mask(&self) -> [u64; 2] {
        let mask = u128::MAX.checked_shl(128 - u32::from(self.v6)).unwrap_or(0);
        let bytes = mask.to_be_bytes();
        [
            u64::from_ne_bytes(bytes[..8].try_into().unwrap_or_default()),
            u64::from_ne_bytes(bytes[8..].try_into().unwrap_or_default()),
        ]
    }

    /// The sketch key of `prefix` (its network address's wire bytes as
    /// the datapath reads them).
    pub fn key_of(prefix: &IpNet) -> PrefixKey {
        match prefix.network() {
            IpAddr::V4(address) => [u64::from(u32::from_ne_bytes(address.octets())), 0],
            IpAddr::V6(address) => {
                let octets = address.octets();
                [
                    u64::from_ne_bytes(octets[..8].try_into().unwrap_or_default()),
                    u64::from_ne_bytes(octets[8..].try_into().unwrap_or_default()),
                ]
            }
        }
    }

    /// The prefix a sketch key of family `v6` stands for.
    pub fn of_key(&self, key: &PrefixKey, v6: bool) -> IpNet {
        if v6 {
            let mut bytes = [0u8; 16];
            bytes[..8].copy_from_slice(&key[0].to_ne_bytes());
            bytes[8..].copy_from_slice(&key[1].to_ne_bytes());
            self.of(Ipv6Addr::from(bytes).into())
        } else {
            let bytes = (key[0] as u32).to_ne_bytes();
            self.of(Ipv4Addr::from(bytes).into())
        }
    }
}

/// One prefix's counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrefixCount {
    /// What xdpstat has the facts of.
    pub exact: Counter,
    /// The sketch's estimate for packets no entry held: never below the
    /// truth, above it by at most `error_packets` (probability 1 − δ).
    pub estimated: Counter,
    pub error_packets: u64,
}

impl PrefixCount {
    pub fn total(&self) -> Counter {
        let mut total = self.exact;
        total.add(&self.estimated);
        total
    }
}

/// Every prefix of one read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Prefixes {
    pub rows: HashMap<IpNet, PrefixCount>,
    /// What no entry held: counted into the sketches, or in runs about to
    /// be (both families).
    pub sketched: Counter,
    /// What retired entries counted that no prefix holds: retired before
    /// this process began reading (a persisted interface's earlier
    /// processes), or past the most prefixes xdpstat keeps.
    pub unkept: Counter,
}

impl Prefixes {
    pub fn add_exact(&mut self, prefix: IpNet, counter: &Counter) {
        self.rows.entry(prefix).or_default().exact.add(counter);
    }

    /// Adds the sources of `held` to their prefixes' exact parts. Sources
    /// come in address order, so a prefix's are consecutive: one map
    /// update per prefix, not per source (a million sources is a few
    /// thousand prefixes).
    pub fn add_held(&mut self, lens: &PrefixLens, held: &SourceTable) {
        let v4_mask = u32::MAX.checked_shl(32 - u32::from(lens.v4)).unwrap_or(0);
        self.add_runs(held.v4().map(|(a, c)| (a & v4_mask, c)), |network| {
            IpNet::new(Ipv4Addr::from(network).into(), lens.v4)
        });
        let v6_mask = u128::MAX.checked_shl(128 - u32::from(lens.v6)).unwrap_or(0);
        self.add_runs(held.v6().map(|(a, c)| (a & v6_mask, c)), |network| {
            IpNet::new(Ipv6Addr::from(network).into(), lens.v6)
        });
    }

    /// Sums consecutive equal networks and adds each sum once.
    fn add_runs<N: PartialEq + Copy>(
        &mut self,
        sources: impl Iterator<Item = (N, Counter)>,
        prefix: impl Fn(N) -> Result<IpNet, ipnet::PrefixLenError>,
    ) {
        let mut current: Option<(N, Counter)> = None;
        let done = |this: &mut Self, (network, sum): (N, Counter)| {
            if let Ok(prefix) = prefix(network) {
                this.add_exact(prefix, &sum);
            }
        };
        for (network, counter) in sources {
            match &mut current {
                Some((open, sum)) if *open == network => sum.add(&counter),
                _ => {
                    if let Some(finished) = current.replace((network, counter)) {
                        done(self, finished);
                    }
                }
            }
        }
        if let Some(finished) = current {
            done(self, finished);
        }
    }

    pub fn add_estimate(&mut self, prefix: IpNet, estimate: &Counter, error_packets: u64) {
        let row = self.rows.entry(prefix).or_default();
        row.estimated.add(estimate);
        row.error_packets += error_packets;
    }

    /// Keeps every prefix's parts at least where `previous` had them: a
    /// read racing the datapath settling a run misses it for one read, and
    /// no count goes backwards.
    pub fn keep_monotonic(&mut self, previous: &Prefixes) {
        for (prefix, before) in &previous.rows {
            let row = self.rows.entry(*prefix).or_default();
            row.exact = row.exact.at_least(&before.exact);
            if row.estimated.packets < before.estimated.packets {
                row.estimated = before.estimated;
                row.error_packets = row.error_packets.max(before.error_packets);
            }
        }
        self.sketched = self.sketched.at_least(&previous.sketched);
        self.unkept = self.unkept.at_least(&previous.unkept);
    }

    /// The total of `prefix` in this read (nothing when it is not listed).
    pub fn total_of(&self, prefix: &IpNet) -> Counter {
        self.rows
            .get(prefix)
            .map(PrefixCount::total)
            .unwrap_or_default()
    }

    /// Sum of the exact parts.
    pub fn exact_total(&self) -> Counter {
        let mut total = Counter::default();
        for row in self.rows.values() {
            total.add(&row.exact);
        }
        total
    }

    /// The prefixes by packets, descending (ties by bytes, then address),
    /// cut to `top`: the head is selected first and only it is sorted.
    pub fn ranked(&self, top: Option<usize>) -> Vec<(IpNet, PrefixCount)> {
        let mut rows: Vec<(Counter, IpNet, PrefixCount)> =
            self.rows.iter().map(|(p, c)| (c.total(), *p, *c)).collect();
        let order = |a: &(Counter, IpNet, PrefixCount), b: &(Counter, IpNet, PrefixCount)| {
            b.0.packets
                .cmp(&a.0.packets)
                .then(b.0.bytes.cmp(&a.0.bytes))
                .then(a.1.cmp(&b.1))
        };
        let keep = top.unwrap_or(usize::MAX).min(rows.len());
        if keep < rows.len() && keep > 0 {
            rows.select_nth_unstable_by(keep - 1, order);
        }
        rows.truncate(keep);
        rows.sort_unstable_by(order);
        rows.into_iter().map(|(_, p, c)| (p, c)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_parse_and_mask_as_the_datapath_does() {
        let lens: PrefixLens = "24,48".parse().unwrap();
        assert_eq!(lens, PrefixLens::default());
        assert_eq!("16, 56".parse::<PrefixLens>().unwrap().v6, 56);
        for bad in ["24", "0,48", "33,48", "24,129", "a,b", ""] {
            assert!(bad.parse::<PrefixLens>().is_err(), "{bad}");
        }
        let address = Ipv4Addr::new(198, 19, 7, 200);
        let native = u32::from_ne_bytes(address.octets());
        let masked = (native & lens.v4_mask()).to_ne_bytes();
        assert_eq!(Ipv4Addr::from(masked), Ipv4Addr::new(198, 19, 7, 0));
        assert_eq!(
            lens.of(address.into()),
            "198.19.7.0/24".parse::<IpNet>().unwrap()
        );
        let v6: Ipv6Addr = "2001:db8:bad:1234::1".parse().unwrap();
        let octets = v6.octets();
        let mask = lens.v6_mask();
        let key = [
            u64::from_ne_bytes(octets[..8].try_into().unwrap()) & mask[0],
            u64::from_ne_bytes(octets[8..].try_into().unwrap()) & mask[1],
        ];
        assert_eq!(
            lens.of_key(&key, true),
            "2001:db8:bad::/48".parse::<IpNet>().unwrap()
        );
        let key = [u64::from(native & lens.v4_mask()), 0];
        assert_eq!(
            lens.of_key(&key, false),
            "198.19.7.0/24".parse::<IpNet>().unwrap()
        );
        for text in ["198.19.7.0/24", "2001:db8:bad::/48"] {
            let prefix: IpNet = text.parse().unwrap();
            let key = PrefixLens::key_of(&prefix);
            assert_eq!(lens.of_key(&key, prefix.addr().is_ipv6()), prefix);
        }
        let all: PrefixLens = "32,128".parse().unwrap();
        assert_eq!(all.v4_mask(), u32::MAX);
        assert_eq!(all.v6_mask(), [u64::MAX, u64::MAX]);
        let one: PrefixLens = "1,1".parse().unwrap();
        assert_eq!(
            one.of(address.into()),
            "128.0.0.0/1".parse::<IpNet>().unwrap()
        );
    }

    #[test]
    fn rows_rank_by_total_and_never_go_backwards() {
        let a: IpNet = "198.18.1.0/24".parse().unwrap();
        let b: IpNet = "198.18.2.0/24".parse().unwrap();
        let mut before = Prefixes::default();
        before.add_exact(
            a,
            &Counter {
                packets: 5,
                bytes: 500,
            },
        );
        before.add_estimate(
            b,
            &Counter {
                packets: 9,
                bytes: 900,
            },
            2,
        );
        let ranked = before.ranked(None);
        assert_eq!(ranked[0].0, b);
        assert_eq!(ranked.len(), 2);
        assert_eq!(before.ranked(Some(1)).len(), 1);
        let mut now = Prefixes::default();
        now.add_exact(
            a,
            &Counter {
                packets: 4,
                bytes: 400,
            },
        );
        now.keep_monotonic(&before);
        assert_eq!(now.rows[&a].exact.packets, 5);
        let held: SourceTable = [
            ("198.18.1.9", 2),
            ("198.18.1.1", 3),
            ("198.18.2.1", 4),
            ("2001:db8::1", 5),
            ("2001:db8:1::1", 6),
        ]
        .into_iter()
        .map(|(a, p)| {
            (
                a.parse::<IpAddr>().unwrap(),
                Counter {
                    packets: p,
                    bytes: p,
                },
            )
        })
        .collect();
        let mut summed = Prefixes::default();
        summed.add_held(&PrefixLens::default(), &held);
        assert_eq!(summed.rows.len(), 4);
        assert_eq!(summed.rows[&a].exact.packets, 5);
        assert_eq!(summed.exact_total().packets, 20);
        assert_eq!(now.rows[&b].estimated.packets, 9);
        assert_eq!(now.exact_total().packets, 5);
    }
}
