//! What the live view shows of the traffic's kinds: each protocol's
//! counts and rates, fragments and SYNs, the busiest ports of each side
//! (the `t` view), and packets per second by protocol over the last
//! minutes, with what rules dropped and limited (the chart), so the start
//! and end of a flood are seen at a glance.

use std::collections::VecDeque;

use hashbrown::HashMap;
use xdpstat_common::{
    Counter,
    kinds::{side, slot},
};

use crate::counts::{report::Rate, snapshot::Snapshot, verdicts::Verdicts};

/// Reads the chart keeps: three minutes at the default interval.
pub const CHART_READS: usize = 180;
/// Ports listed per side in the `t` view.
pub const PORTS_SHOWN: usize = 8;
/// The chart's lines: the five protocols (at their `kinds::slot`), then
/// dropped and limited.
pub const CHART_LINES: [&str; 7] = [
    "tcp", "udp", "icmp", "icmpv6", "other", "dropped", "limited",
];
const DROPPED_LINE: usize = slot::PROTOCOLS;
const LIMITED_LINE: usize = slot::PROTOCOLS + 1;

/// One port's line: the port, its counts and its rate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PortLine {
    pub port: u16,
    pub counter: Counter,
    pub rate: Rate,
}

/// One pane's traffic kinds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KindsPane {
    /// Indexed by `kinds::slot`: protocols, fragments, TCP SYNs.
    pub slots: [(Counter, Rate); slot::KINDS],
    /// Per side (`kinds::side`), the busiest ports by packet rate.
    pub ports: [Vec<PortLine>; side::SIDES as usize],
    /// Packets per second of each of [`CHART_LINES`], one entry per read,
    /// oldest first.
    pub history: VecDeque<[f64; CHART_LINES.len()]>,
}

impl KindsPane {
    /// Takes in one interval, `seconds` long, whose verdict totals (now,
    /// and at the previous read) the caller has already summed.
    pub fn update(
        &mut self,
        previous: &Snapshot,
        current: &Snapshot,
        (verdicts, earlier): (&Verdicts, &Verdicts),
        seconds: f64,
    ) {
        let (now, before) = (&current.kinds, &previous.kinds);
        for (at, line) in self.slots.iter_mut().enumerate() {
            *line = (
                now.slots[at],
                Rate::between(&now.slots[at], &before.slots[at], seconds),
            );
        }
        for (at, shown) in self.ports.iter_mut().enumerate() {
            let mut lines: Vec<PortLine> = now
                .ports
                .iter()
                .filter(|(key, _)| key.side == at as u32)
                .map(|(key, counter)| PortLine {
                    port: key.port,
                    counter: *counter,
                    rate: Rate::between(counter, &before.ports.get(key), seconds),
                })
                .collect();
            rank(&mut lines);
            *shown = lines;
        }
        let mut point = [0.0; CHART_LINES.len()];
        for (at, value) in point.iter_mut().take(slot::PROTOCOLS).enumerate() {
            *value = self.slots[at].1.pps;
        }
        point[DROPPED_LINE] = Rate::between(&verdicts.dropped, &earlier.dropped, seconds).pps;
        point[LIMITED_LINE] = Rate::between(&verdicts.limited, &earlier.limited, seconds).pps;
        if self.history.len() == CHART_READS {
            self.history.pop_front();
        }
        self.history.push_back(point);
    }

    /// Adds another interface's kinds (the "all" pane).
    pub fn absorb(&mut self, other: &KindsPane) {
        for (sum, add) in self.slots.iter_mut().zip(&other.slots) {
            sum.0.add(&add.0);
            sum.1.add(&add.1);
        }
        for (sum, add) in self.ports.iter_mut().zip(&other.ports) {
            let mut by_port: HashMap<u16, PortLine> =
                sum.drain(..).map(|line| (line.port, line)).collect();
            for line in add {
                by_port
                    .entry(line.port)
                    .and_modify(|kept| {
                        kept.counter.add(&line.counter);
                        kept.rate.add(&line.rate);
                    })
                    .or_insert(*line);
            }
            *sum = by_port.into_values().collect();
            rank(sum);
        }
        // Histories line up from their latest read backwards.
        let (mine, theirs) = (self.history.len(), other.history.len());
        for back in 0..mine.min(theirs) {
            let (a, b) = (mine - 1 - back, theirs - 1 - back);
            for (sum, add) in self.history[a].iter_mut().zip(&other.history[b]) {
                *sum += add;
            }
        }
        for back in mine..theirs {
            self.history.push_front(other.history[theirs - 1 - back]);
        }
    }

    /// Whether a rule dropped or limited anything in the chart's time.
    pub fn rules_acted(&self) -> bool {
        self.history
            .iter()
            .any(|point| point[DROPPED_LINE] > 0.0 || point[LIMITED_LINE] > 0.0)
    }
}

/// Packet rate descending, then packets descending, then port ascending;
/// cut to [`PORTS_SHOWN`].
fn rank(lines: &mut Vec<PortLine>) {
    lines.sort_unstable_by(|a, b| {
        b.rate
            .pps
            .total_cmp(&a.rate.pps)
            .then(b.counter.packets.cmp(&a.counter.packets))
            .then(a.port.cmp(&b.port))
    });
    lines.truncate(PORTS_SHOWN);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::counts::kinds::Ports;

    fn c(packets: u64) -> Counter {
        Counter {
            packets,
            bytes: packets * 64,
        }
    }

    /// `pane.update` with the verdict totals summed here.
    fn update(pane: &mut KindsPane, previous: &Snapshot, current: &Snapshot, seconds: f64) {
        let (now, before) = (current.totals(), previous.totals());
        pane.update(
            previous,
            current,
            (&now.verdicts, &before.verdicts),
            seconds,
        );
    }

    fn read(base: &Snapshot, seconds: u64, udp: u64, dns_src: u64) -> Snapshot {
        let mut snapshot = base.clone();
        snapshot.taken = base.taken + Duration::from_secs(seconds);
        snapshot.kinds.slots[slot::UDP] = c(udp);
        let mut sums = vec![Counter::default(); 3 * 65_536];
        sums[2 * 65_536 + 53] = c(dns_src);
        sums[65_536 + 33_000] = c(udp);
        snapshot.kinds.ports = Ports::from_sums(&sums);
        snapshot
    }

    #[test]
    fn rates_ports_and_the_chart_follow_the_reads_and_all_adds_them_up() {
        let base = Snapshot::empty();
        let mut pane = KindsPane::default();
        let (first, second) = (read(&base, 1, 100, 40), read(&base, 3, 700, 640));
        update(&mut pane, &base, &first, 1.0);
        update(&mut pane, &first, &second, 2.0);
        assert_eq!(
            pane.slots[slot::UDP],
            (
                c(700),
                Rate {
                    pps: 300.0,
                    bps: 300.0 * 64.0 * 8.0
                }
            )
        );
        assert_eq!(pane.ports[side::UDP_SRC as usize][0].port, 53);
        assert_eq!(pane.ports[side::UDP_SRC as usize][0].rate.pps, 300.0);
        let udp_line: Vec<f64> = pane.history.iter().map(|point| point[1]).collect();
        assert_eq!(udp_line, [100.0, 300.0]);
        assert!(!pane.rules_acted());
        let mut all = pane.clone();
        let mut shorter = KindsPane::default();
        update(&mut shorter, &first, &second, 2.0);
        all.absorb(&shorter);
        let udp_line: Vec<f64> = all.history.iter().map(|point| point[1]).collect();
        assert_eq!(
            udp_line,
            [100.0, 600.0],
            "histories line up at their latest read"
        );
        assert_eq!(all.ports[side::UDP_SRC as usize][0].counter, c(1280));
        assert_eq!(all.slots[slot::UDP].0, c(1400));
    }
}
