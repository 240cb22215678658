//! Each source's recent packet rates, for its sparkline. A pane kept them
//! as a hash map of growable queues, rebuilt at every interval: under a
//! spoofed flood of a million sources that was a million allocations and
//! two million-entry maps a second. Here they are one vector in address
//! order, each source's rates in place, carried into the next interval by
//! one merge with the new read, which comes in address order too.

use std::net::IpAddr;

/// Rates kept for each source's sparkline.
pub const HISTORY: usize = 12;

/// One source's last [`HISTORY`] rates (packets a second), oldest first.
/// Each is kept as the top half of an `f32` (a bfloat16: 8 bits of
/// precision, within 0.4%), for a sparkline draws eight levels and a
/// pane may keep a million of these: 26 bytes each.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Recent {
    rates: [u16; HISTORY],
    len: u8,
}

impl Recent {
    /// Adds the newest rate, dropping the oldest when full.
    fn push(&mut self, pps: f64) {
        let len = usize::from(self.len);
        if len == HISTORY {
            self.rates.copy_within(1.., 0);
            self.rates[HISTORY - 1] = half(pps as f32);
        } else {
            self.rates[len] = half(pps as f32);
            self.len += 1;
        }
    }

    /// The rates, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = f64> + '_ {
        self.rates[..usize::from(self.len)]
            .iter()
            .map(|&pps| f64::from(whole(pps)))
    }

    /// Adds another interface's rates of the same source, oldest to
    /// oldest.
    fn add(&mut self, other: &Recent) {
        for (at, pps) in other.iter().enumerate() {
            match self.rates[..usize::from(self.len)].get_mut(at) {
                Some(sum) => *sum = half(whole(*sum) + pps as f32),
                None => self.push(pps),
            }
        }
    }
}

/// `value` to the nearest bfloat16 (the top half of its bits, rounded to
/// even; past its largest, infinity); NaN stays NaN.
fn half(value: f32) -> u16 {
    let bits = value.to_bits();
    if value.is_nan() {
        return (bits >> 16) as u16 | 0x40;
    }
    let rounding = 0x7fff + (bits >> 16 & 1);
    (bits.wrapping_add(rounding) >> 16) as u16
}

/// A bfloat16 as the `f32` it stands for.
fn whole(half: u16) -> f32 {
    f32::from_bits(u32::from(half) << 16)
}

/// Recent rates by source, in address order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histories(Vec<(IpAddr, Recent)>);

impl Histories {
    /// Moves on to the next interval: each source of `rates` (address
    /// order) gets its rate added to what it had here; sources not in
    /// `rates` are gone. While the sources are the ones kept, in place;
    /// from the first that came or went, the rest is merged anew.
    pub fn advance(&mut self, rates: impl Iterator<Item = (IpAddr, f64)>) {
        let mut rates = rates.peekable();
        let mut at = 0;
        while let Some((kept, recent)) = self.0.get_mut(at) {
            match rates.next_if(|(address, _)| address == kept) {
                Some((_, pps)) => recent.push(pps),
                None => break,
            }
            at += 1;
        }
        if rates.peek().is_none() {
            self.0.truncate(at);
            return;
        }
        let mut rest = Vec::new();
        let mut earlier = self.0[at..].iter().peekable();
        for (address, pps) in rates {
            while earlier.next_if(|(kept, _)| *kept < address).is_some() {}
            let mut recent = match earlier.next_if(|(kept, _)| *kept == address) {
                Some((_, recent)) => *recent,
                None => Recent::default(),
            };
            recent.push(pps);
            rest.push((address, recent));
        }
        self.0.truncate(at);
        self.0.extend(rest);
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
        let mut h = Histories::default();
        h.advance([(a(1), 1.0), (a(3), 3.0)].into_iter());
        h.advance([(a(2), 2.0), (a(3), 4.0)].into_iter());
        assert_eq!(rates(&h, 1), Vec::<f64>::new());
        assert_eq!(rates(&h, 2), [2.0]);
        assert_eq!(rates(&h, 3), [3.0, 4.0]);
        for n in 0..20 {
            h.advance([(a(3), f64::from(n))].into_iter());
        }
        let kept = rates(&h, 3);
        assert_eq!(kept.len(), HISTORY);
        assert_eq!(kept[0], 8.0);
        assert_eq!(kept[HISTORY - 1], 19.0);
    }

    #[test]
    fn rates_are_kept_within_a_256th() {
        for pps in [
            0.0, 1.0, 3.0, 255.0, 256.0, 257.0, 1e-3, 12_345.678, 1.5e9, 1e30,
        ] {
            let kept = f64::from(whole(half(pps as f32)));
            assert!((kept - pps).abs() <= pps / 256.0, "{pps} kept as {kept}");
        }
        assert!(whole(half(f32::NAN)).is_nan());
        assert_eq!(whole(half(f32::INFINITY)), f32::INFINITY);
    }

    #[test]
    fn interfaces_add_up_oldest_to_oldest() {
        let mut one = Histories::default();
        one.advance([(a(1), 1.0), (a(2), 5.0)].into_iter());
        one.advance([(a(1), 2.0), (a(2), 6.0)].into_iter());
        let mut two = Histories::default();
        two.advance([(a(1), 10.0)].into_iter());
        let all = Histories::merged([&one, &two]);
        assert_eq!(rates(&all, 1), [11.0, 2.0]);
        assert_eq!(rates(&all, 2), [5.0, 6.0]);
    }
}
