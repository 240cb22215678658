//! Each source's recent packet rates, for its sparkline. A pane kept them
//! as a hash map of growable queues, rebuilt at every interval: under a
//! spoofed flood of a million sources that was a million allocations and
//! two million-entry maps a second. Here they are one vector in address
//! order, each source's rates in place, carried into the next interval by
//! one merge with the new read, which comes in address order too.

use std::net::IpAddr;

/// Rates kept for each source's sparkline.
pub const HISTORY: usize = 12;

/// One source's last [`HISTORY`] rates (packets a second), oldest first,
/// as `f32`: a sparkline draws eight levels.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Recent {
    rates: [f32; HISTORY],
    len: u8,
}

impl Recent {
    /// Adds the newest rate, dropping the oldest when full.
    fn push(&mut self, pps: f64) {
        let len = usize::from(self.len);
        if len == HISTORY {
            self.rates.copy_within(1.., 0);
            self.rates[HISTORY - 1] = pps as f32;
        } else {
            self.rates[len] = pps as f32;
            self.len += 1;
        }
    }

    /// The rates, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = f64> + '_ {
        self.rates[..usize::from(self.len)]
            .iter()
            .map(|&pps| f64::from(pps))
    }

    /// Adds another interface's rates of the same source, oldest to
    /// oldest.
    fn add(&mut self, other: &Recent) {
        for (at, pps) in other.iter().enumerate() {
            match self.rates[..usize::from(self.len)].get_mut(at) {
                Some(sum) => *sum += pps as f32,
                None => self.push(pps),
            }
        }
    }
}

/// Recent rates by source, in address order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histories(Vec<(IpAddr, Recent)>);

impl Histories {
    /// The next interval's histories: each of `rates` (address order) with
    /// its rate added to what it had here; sources not in `rates` are gone.
    pub fn next(&self, rates: impl Iterator<Item = (IpAddr, f64)>) -> Self {
        let mut kept = Vec::with_capacity(self.0.len());
        let mut earlier = self.0.iter().peekable();
        for (address, pps) in rates {
            while earlier.next_if(|(at, _)| *at < address).is_some() {}
            let mut recent = match earlier.next_if(|(at, _)| *at == address) {
                Some((_, recent)) => *recent,
                None => Recent::default(),
            };
            recent.push(pps);
            kept.push((address, recent));
        }
        Self(kept)
    }

    pub fn get(&self, address: &IpAddr) -> Option<&Recent> {
        let at = self.0.binary_search_by(|(a, _)| a.cmp(address)).ok()?;
        Some(&self.0[at].1)
    }

    /// The histories of several interfaces, each source's summed.
    pub fn merged<'a>(all: impl IntoIterator<Item = &'a Histories>) -> Self {
        let mut every: Vec<(IpAddr, Recent)> =
            all.into_iter().flat_map(|h| h.0.iter().copied()).collect();
        // Stable: each interface's rates are added in the panes' order.
        every.sort_by_key(|(address, _)| *address);
        let mut merged: Vec<(IpAddr, Recent)> = Vec::with_capacity(every.len());
        for (address, recent) in every {
            match merged.last_mut() {
                Some((last, sum)) if *last == address => sum.add(&recent),
                _ => merged.push((address, recent)),
            }
        }
        Self(merged)
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn a(n: u8) -> IpAddr {
        Ipv4Addr::new(198, 18, 0, n).into()
    }

    fn rates(h: &Histories, n: u8) -> Vec<f64> {
        h.get(&a(n)).map(|r| r.iter().collect()).unwrap_or_default()
    }

    #[test]
    fn rates_follow_their_source_and_go_with_it() {
        let h = Histories::default().next([(a(1), 1.0), (a(3), 3.0)].into_iter());
        let h = h.next([(a(2), 2.0), (a(3), 4.0)].into_iter());
        assert_eq!(rates(&h, 1), Vec::<f64>::new());
        assert_eq!(rates(&h, 2), [2.0]);
        assert_eq!(rates(&h, 3), [3.0, 4.0]);
        let mut h = h;
        for n in 0..20 {
            h = h.next([(a(3), f64::from(n))].into_iter());
        }
        let kept = rates(&h, 3);
        assert_eq!(kept.len(), HISTORY);
        assert_eq!(kept[0], 8.0);
        assert_eq!(kept[HISTORY - 1], 19.0);
    }

    #[test]
    fn interfaces_add_up_oldest_to_oldest() {
        let one = Histories::default().next([(a(1), 1.0), (a(2), 5.0)].into_iter());
        let one = one.next([(a(1), 2.0), (a(2), 6.0)].into_iter());
        let two = Histories::default().next([(a(1), 10.0)].into_iter());
        let all = Histories::merged([&one, &two]);
        assert_eq!(rates(&all, 1), [11.0, 2.0]);
        assert_eq!(rates(&all, 2), [5.0, 6.0]);
    }
}
