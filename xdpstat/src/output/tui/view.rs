//! What the terminal view shows, without a terminal: per-interface panes
//! built from pairs of snapshots, the "all" pane, sorting, filtering,
//! scrolling, pausing and the keys that change them. `render` draws it;
//! `run::terminal` feeds it snapshots and key presses. Everything here is
//! plain data, so the tests drive it with fake snapshots. A pane may list
//! a million sources, so a row is 64 bytes and only the rows through a
//! page past the screen are put in order.

use std::{
    cmp::Reverse,
    collections::BinaryHeap,
    io::Write as _,
    net::IpAddr,
    time::{Duration, Instant},
};

use hashbrown::{HashMap, HashSet};
use ipnet::IpNet;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use xdpstat_common::Counter;

use crate::{
    counts::report::{BanRow, Rate, ban_rows},
    counts::snapshot::{ClassTotals, Snapshot},
    counts::sources::SourceProtocols,
    counts::verdicts::Verdicts,
    output::tui::kinds::KindsPane,
    output::tui::recent::{Histories, Recent},
};

/// One source's line, or one prefix's (`prefix_len` set): 64 bytes, for a
/// pane may list a million sources. What only some rows say (packets of
/// more than one protocol, what rules did) is kept beside them, in the
/// pane's [`Said`]s.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub address: IpAddr,
    /// For a prefix row: its length.
    pub prefix_len: Option<u8>,
    /// For a prefix row: part of its count is the sketch's estimate.
    pub estimated: bool,
    /// A ban in force covers it (sources only).
    pub banned: bool,
    /// The protocol of all its packets (see [`Pane::protocols`]), or
    /// [`NO_PROTOCOL`]; when `said` is set, that says instead.
    protocol: u8,
    /// Its place in the pane's `said`, or [`NOT_SAID`].
    said: u32,
    pub packets: u64,
    pub bytes: u64,
    pub rate: Rate,
}

/// No packets to tell a protocol by (and every prefix row).
const NO_PROTOCOL: u8 = u8::MAX;
/// A row whose counts say all there is.
const NOT_SAID: u32 = u32::MAX;

/// What a source's row says beyond its counts.
#[derive(Clone, Debug, Default, PartialEq)]
struct Said {
    /// Its packets by protocol over the last interval, or over all its
    /// packets when it sent none in the interval.
    protocols: SourceProtocols,
    /// Packets a rule dropped or limited, or would have.
    acted: u64,
    /// What the rules did to it, in a few words (empty: all passed).
    verdict: String,
}

impl Said {
    /// Adds another interface's row of the same source.
    fn absorb(&mut self, other: &Said) {
        self.acted += other.acted;
        self.protocols.add(&other.protocols);
        if other.acted > 0 {
            self.verdict = if self.acted == other.acted {
                other.verdict.clone()
            } else {
                format!("acted {}", self.acted)
            };
        }
    }
}

impl Row {
    /// A row of counts alone (a prefix's, or a source's before what it
    /// says is placed).
    fn counted(address: IpAddr, counter: Counter, rate: Rate) -> Self {
        Self {
            address,
            prefix_len: None,
            estimated: false,
            banned: false,
            protocol: NO_PROTOCOL,
            said: NOT_SAID,
            packets: counter.packets,
            bytes: counter.bytes,
            rate,
        }
    }

    /// Adds another interface's counts of the same address or prefix.
    fn absorb(&mut self, other: &Row) {
        self.packets += other.packets;
        self.bytes += other.bytes;
        self.rate.add(&other.rate);
        self.estimated |= other.estimated;
        self.banned |= other.banned;
    }

    /// The address, or the prefix (`~` marks an estimate).
    pub fn label(&self) -> String {
        match self.prefix_len {
            Some(len) if self.estimated => format!("~{}/{len}", self.address),
            Some(len) => format!("{}/{len}", self.address),
            None => self.address.to_string(),
        }
    }
}

/// The one protocol of `protocols` that has packets: `None` when more
/// than one has, [`NO_PROTOCOL`] when none has.
fn one_protocol(protocols: &SourceProtocols) -> Option<u8> {
    let mut sent = protocols.0.iter().enumerate().filter(|(_, n)| **n != 0);
    match (sent.next(), sent.next()) {
        (None, _) => Some(NO_PROTOCOL),
        (Some((protocol, _)), None) => u8::try_from(protocol).ok(),
        _ => None,
    }
}

/// The header figures of a pane.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Header {
    pub totals: ClassTotals,
    pub unattributed: Counter,
    /// Rates of ipv4, ipv6, non_ip, malformed and unattributed.
    pub rates: [Rate; 5],
    /// Seconds the rates are over (`None` before the second read).
    pub interval_s: Option<f64>,
    /// Sources listed per family, and the planned capacity per family.
    pub sources: (usize, usize),
    pub capacity: Option<usize>,
    /// IP packets the prefix view explains exactly, and all IP packets.
    pub exact_by_prefix: (u64, u64),
}

/// One interface's pane (or the "all" pane).
#[derive(Debug, Default)]
pub struct Pane {
    pub name: String,
    /// How it is attached (`native XDP, bpf link`); empty for "all".
    pub attachment: String,
    pub header: Header,
    /// The sources' rows, in address order.
    pub rows: Vec<Row>,
    /// What the rows that say more than their counts say.
    said: Vec<Said>,
    /// The prefix rows (shown instead of `rows` after `g`), in address
    /// order.
    pub prefix_rows: Vec<Row>,
    /// Recent packet rates by source, oldest first.
    history: Histories,
    /// Protocols, ports and the chart's history (`t`).
    pub kinds: KindsPane,
    /// The bans in force (`b`), with the interface's name in "all".
    pub bans: Vec<(String, BanRow)>,
}

impl Pane {
    pub fn new(name: &str, attachment: &str, capacity: Option<usize>) -> Self {
        Self {
            name: name.to_owned(),
            attachment: attachment.to_owned(),
            header: Header {
                capacity,
                ..Header::default()
            },
            ..Self::default()
        }
    }

    /// Takes in one interval: `current` against `previous`.
    pub fn update(&mut self, previous: &Snapshot, current: &Snapshot) {
        let seconds = current
            .taken
            .saturating_duration_since(previous.taken)
            .as_secs_f64();
        let (now, before) = (current.totals(), previous.totals());
        let (now_u, before_u) = (current.unattributed(), previous.unattributed());
        self.header.rates = [
            Rate::between(&now.ipv4, &before.ipv4, seconds),
            Rate::between(&now.ipv6, &before.ipv6, seconds),
            Rate::between(&now.non_ip, &before.non_ip, seconds),
            Rate::between(&now.malformed, &before.malformed, seconds),
            Rate::between(&now_u, &before_u, seconds),
        ];
        self.header.totals = now;
        self.header.unattributed = now_u;
        self.header.interval_s = (seconds > 0.0).then_some(seconds);
        self.header.sources = current.sources.family_lens();
        self.rows.clear();
        self.rows.reserve(current.sources.len());
        self.said.clear();
        let bans = ban_rows(&current.verdicts.rules);
        let banned = Banned::of(&bans);
        self.bans = bans
            .into_iter()
            .map(|ban| (self.name.clone(), ban))
            .collect();
        for (address, tally, earlier) in current.sources.tallies_since(&previous.sources) {
            let (counter, earlier_counter) = (tally.counter, earlier.counter);
            let interval = tally.saturating_sub(&earlier);
            let protocols = if interval.counter.packets > 0 {
                interval.protocols
            } else {
                tally.protocols
            };
            // Looked up only when a rule acted at all: most reads have no
            // rules, and a read may hold a million sources.
            let ruled = &current.verdicts.ruled;
            let acted = (!ruled.is_empty()).then(|| ruled.get(&address)).flatten();
            let mut row = Row::counted(
                address,
                counter,
                Rate::between(&counter, &earlier_counter, seconds),
            );
            row.banned = banned.covers(&address);
            match (one_protocol(&protocols), acted) {
                (Some(protocol), None) if self.of_one(&row, protocol) == protocols => {
                    row.protocol = protocol;
                }
                (_, acted) => {
                    let said = match acted {
                        Some(acted) => Said {
                            protocols,
                            acted: acted.iter().map(|c| c.packets).sum(),
                            verdict: Verdicts::of(&counter, acted).column(),
                        },
                        None => Said {
                            protocols,
                            ..Said::default()
                        },
                    };
                    row.said = self.place(said);
                }
            }
            self.rows.push(row);
        }
        // The rows are in address order; sources no longer listed take
        // their history with them.
        self.history
            .advance(self.rows.iter().map(|row| (row.address, row.rate.pps)));
        self.update_prefixes(previous, current, seconds);
        self.kinds.update(
            previous,
            current,
            (&self.header.totals.verdicts, &before.verdicts),
            seconds,
        );
    }

    /// The prefix rows of one interval.
    fn update_prefixes(&mut self, previous: &Snapshot, current: &Snapshot, seconds: f64) {
        let prefixes = &current.prefixes;
        let exact = prefixes.exact_total().packets;
        let ip = self.header.totals.ipv4.packets + self.header.totals.ipv6.packets;
        self.header.exact_by_prefix = (exact, ip);
        self.prefix_rows = prefixes
            .rows
            .iter()
            .map(|(prefix, count)| {
                let now = count.total();
                let before = previous.prefixes.total_of(prefix);
                let mut row =
                    Row::counted(prefix.network(), now, Rate::between(&now, &before, seconds));
                row.prefix_len = Some(prefix.prefix_len());
                row.estimated = count.estimated.packets > 0;
                row
            })
            .collect();
        // Equal rows are listed in the order they are kept in.
        self.prefix_rows
            .sort_unstable_by_key(|row| (row.address, row.prefix_len));
    }

    /// Keeps what a row says; its place in `said`.
    fn place(&mut self, said: Said) -> u32 {
        self.said.push(said);
        // A u32: 2^32 rows that say more would take 200 GB for that alone.
        (self.said.len() - 1).min(NOT_SAID as usize - 1) as u32
    }

    fn said(&self, row: &Row) -> Option<&Said> {
        self.said.get(row.said as usize)
    }

    /// A source's packets by protocol over the last interval, or over all
    /// its packets when it sent none in the interval. A row of one
    /// protocol keeps only which: its packets over the interval are its
    /// rate times the interval's seconds (the rate is that count divided
    /// by those seconds), and a row keeps only which when that gives its
    /// counts back exactly.
    pub fn protocols(&self, row: &Row) -> SourceProtocols {
        if let Some(said) = self.said(row) {
            return said.protocols;
        }
        self.of_one(row, row.protocol)
    }

    /// The packets by protocol of a row that keeps only its one
    /// `protocol` (a row keeps only that when this is exact).
    fn of_one(&self, row: &Row, protocol: u8) -> SourceProtocols {
        let seconds = self.header.interval_s.unwrap_or(0.0);
        let sent = (row.rate.pps * seconds).round() as u64;
        let packets = if sent > 0 { sent } else { row.packets };
        SourceProtocols::of(usize::from(protocol), packets)
    }

    /// Packets a rule dropped or limited, or would have (sources only).
    pub fn acted(&self, row: &Row) -> u64 {
        self.said(row).map_or(0, |said| said.acted)
    }

    /// What the rules did to a source, in a few words (empty: all passed).
    pub fn verdict(&self, row: &Row) -> &str {
        self.said(row).map_or("", |said| said.verdict.as_str())
    }

    /// The row's share of the pane's IP bits per second, 0 to 1.
    pub fn share(&self, row: &Row) -> f64 {
        let ip_bps = self.header.rates[0].bps + self.header.rates[1].bps;
        if ip_bps > 0.0 {
            row.rate.bps / ip_bps
        } else {
            0.0
        }
    }

    /// The rows on show: the prefixes', or the sources'.
    pub fn shown(&self, prefixes: bool) -> &[Row] {
        if prefixes {
            &self.prefix_rows
        } else {
            &self.rows
        }
    }

    /// Recent packet rates of `address`, oldest first.
    pub fn history(&self, address: &IpAddr) -> Option<&Recent> {
        self.history.get(address)
    }
}

/// The column the table is sorted by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortKey {
    #[default]
    Pps,
    Bps,
    Packets,
    Bytes,
    Address,
}

impl SortKey {
    fn next(self) -> Self {
        match self {
            Self::Pps => Self::Bps,
            Self::Bps => Self::Packets,
            Self::Packets => Self::Bytes,
            Self::Bytes => Self::Address,
            Self::Address => Self::Pps,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Pps => "pkt/s",
            Self::Bps => "bit/s",
            Self::Packets => "packets",
            Self::Bytes => "bytes",
            Self::Address => "address",
        }
    }

    /// The natural order, as a key that sorts ascending: biggest first by
    /// the column; rows equal under it by packets, then bytes (biggest
    /// first), then by their place (address ascending), so a quiet moment
    /// (every rate 0) still shows the big senders first.
    fn key(self, row: &Row) -> RowKey {
        let column = match self {
            Self::Pps => total_order(row.rate.pps),
            Self::Bps => total_order(row.rate.bps),
            Self::Bytes => row.bytes,
            Self::Packets | Self::Address => 0,
        };
        let (packets, bytes) = match self {
            Self::Address => (0, 0),
            _ => (row.packets, row.bytes),
        };
        (Reverse(column), Reverse(packets), Reverse(bytes))
    }
}

/// A row's order under a [`SortKey`], but for its place.
type RowKey = (Reverse<u64>, Reverse<u64>, Reverse<u64>);

/// `value` as a number that orders as [`f64::total_cmp`] does.
fn total_order(value: f64) -> u64 {
    let bits = value.to_bits();
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | 1 << 63
    }
}

/// Which sources the table shows.
#[derive(Clone, Debug, PartialEq)]
pub enum Filter {
    /// A network: `198.18.0.0/15`, `2001:db8::/32`.
    Network(IpNet),
    /// A prefix of the address's text: `198.18.`, `2001:db8:`.
    Prefix(String),
}

impl Filter {
    /// Parses what the user typed after `/`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.contains('/') {
            return text
                .parse()
                .map(Self::Network)
                .map_err(|_| format!("{text:?} is not a network like 198.18.0.0/15"));
        }
        let allowed = |c: char| c.is_ascii_hexdigit() || c == '.' || c == ':';
        if text.is_empty() || !text.chars().all(allowed) {
            return Err(format!("{text:?} is not an address prefix like 198.18."));
        }
        Ok(Self::Prefix(text.to_ascii_lowercase()))
    }

    pub fn matches(&self, address: &IpAddr) -> bool {
        match self {
            Self::Network(network) => network.contains(address),
            Self::Prefix(prefix) => {
                // Matched against every row, a million of them at each
                // read: an address of a family the text cannot begin is
                // passed over unwritten (an IPv4 address's text has no
                // `:` nor a letter, an IPv6 address's has a `:` before any
                // `.`), and the rest are written on the stack. The
                // longest address is 45 characters.
                let v6_only = prefix.bytes().any(|c| c == b':' || c.is_ascii_alphabetic());
                let v4_only = prefix
                    .split(':')
                    .next()
                    .is_some_and(|head| head.contains('.'));
                if (v6_only && address.is_ipv4()) || (v4_only && address.is_ipv6()) {
                    return false;
                }
                let mut text = [0u8; 48];
                let mut at = std::io::Cursor::new(&mut text[..]);
                if write!(at, "{address}").is_err() {
                    return false;
                }
                let len = at.position() as usize;
                text[..len].starts_with(prefix.as_bytes())
            }
        }
    }

    pub fn text(&self) -> String {
        match self {
            Self::Network(network) => network.to_string(),
            Self::Prefix(prefix) => prefix.clone(),
        }
    }
}

/// What a key asks the shell to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Redraw (the view changed) or nothing to do.
    Continue,
    Quit,
}

/// The whole view.
#[derive(Debug)]
pub struct TopView {
    panes: Vec<Pane>,
    all: Pane,
    /// The pane shown: an interface, or `panes.len()` for "all".
    pub selected: usize,
    pub sort: SortKey,
    pub reversed: bool,
    pub paused: bool,
    /// Prefixes instead of sources (`g`).
    pub prefixes: bool,
    /// Traffic kinds instead of sources or prefixes (`t`).
    pub kinds: bool,
    /// The bans in force instead of the table (`b`).
    pub bans: bool,
    /// Only sources a rule dropped or limited (or would have).
    pub acted_only: bool,
    pub filter: Option<Filter>,
    /// Text being typed after `/`, and the last filter error.
    pub typing: Option<String>,
    /// A failed read, shown until the next good one.
    pub notice: Option<String>,
    pub filter_error: Option<String>,
    pub help: bool,
    /// The first row shown.
    pub scroll: usize,
    /// Rows the table showed at the last draw (for paging).
    pub page: usize,
    pub started: Instant,
    /// The first rows of the selected pane, filtered and sorted, through
    /// a page past the screen ([`TopView::order`]): their places.
    visible: Vec<u32>,
    /// The rows of the selected pane the filter lets through.
    matching: usize,
}

impl TopView {
    /// A view of `panes` (one per interface), started at `started`.
    pub fn new(panes: Vec<Pane>, started: Instant) -> Self {
        let mut view = Self {
            panes,
            all: Pane::new("all", "", None),
            selected: 0,
            sort: SortKey::default(),
            reversed: false,
            paused: false,
            prefixes: false,
            kinds: false,
            bans: false,
            acted_only: false,
            filter: None,
            typing: None,
            notice: None,
            filter_error: None,
            help: false,
            scroll: 0,
            page: 20,
            started,
            visible: Vec::new(),
            matching: 0,
        };
        view.refresh();
        view
    }

    pub fn panes(&self) -> &[Pane] {
        &self.panes
    }

    /// Whether there is an "all" tab (more than one interface).
    pub fn has_all(&self) -> bool {
        self.panes.len() > 1
    }

    /// The pane on screen.
    pub fn pane(&self) -> &Pane {
        self.panes.get(self.selected).unwrap_or(&self.all)
    }

    /// The rows in order, from the top through a page past the screen
    /// (the renderer slices).
    pub fn rows(&self) -> impl ExactSizeIterator<Item = &Row> {
        let rows = self.pane().shown(self.prefixes);
        self.visible.iter().map(move |&at| &rows[at as usize])
    }

    /// The rows the filter lets through.
    pub fn row_count(&self) -> usize {
        self.matching
    }

    /// Takes in a new interval for pane `index`, unless paused.
    pub fn update(&mut self, index: usize, previous: &Snapshot, current: &Snapshot) {
        if self.paused {
            return;
        }
        if let Some(pane) = self.panes.get_mut(index) {
            pane.update(previous, current);
        }
    }

    /// Marks interface `index` as removed: its pane keeps its final counts
    /// and says so in its title.
    pub fn mark_gone(&mut self, index: usize) {
        if let Some(pane) = self.panes.get_mut(index) {
            pane.attachment = "gone: the interface was removed, counts are final".into();
        }
    }

    /// Recomputes the "all" pane and the visible rows; call after updates.
    pub fn refresh(&mut self) {
        if self.has_all() {
            self.all = merged(&self.panes);
        }
        self.order();
    }

    /// Puts in order the rows from the top through a page past the screen
    /// (a heap of that many, not a sort of every row: a pane may hold a
    /// million, and a screen shows a few dozen), and counts the rows the
    /// filter lets through.
    fn order(&mut self) {
        let pane = self.panes.get(self.selected).unwrap_or(&self.all);
        let rows = pane.shown(self.prefixes);
        let acted_only = self.acted_only && !self.prefixes;
        let wanted = self.scroll.saturating_add(2 * self.page.max(1));
        // Each row's key is made once, with its place, which is its
        // address's order. Places are u32: 2^32 rows would take 256 GB.
        let keyed = rows
            .iter()
            .enumerate()
            .filter(|(_, row)| {
                self.filter
                    .as_ref()
                    .is_none_or(|filter| filter.matches(&row.address))
                    && (!acted_only || pane.acted(row) > 0)
            })
            .map(|(at, row)| (self.sort.key(row), at as u32));
        let (visible, matching) = if self.reversed {
            least(keyed.map(Reverse), wanted, |Reverse((_, at))| *at)
        } else {
            least(keyed, wanted, |(_, at)| *at)
        };
        self.visible = visible;
        self.matching = matching;
        self.scroll = self.scroll.min(matching.saturating_sub(1));
    }

    /// Orders more rows when the screen reaches past those in order (after
    /// scrolling, or a taller screen).
    pub fn cover(&mut self) {
        if self.visible.len() < self.matching
            && self.scroll.saturating_add(self.page) > self.visible.len()
        {
            self.order();
        }
    }

    /// Applies one key press.
    pub fn key(&mut self, key: KeyEvent) -> Action {
        if let Some(text) = &mut self.typing {
            match key.code {
                KeyCode::Enter => {
                    let text = self.typing.take().unwrap_or_default();
                    if text.trim().is_empty() {
                        self.filter = None;
                        self.filter_error = None;
                    } else {
                        match Filter::parse(&text) {
                            Ok(filter) => {
                                self.filter = Some(filter);
                                self.filter_error = None;
                            }
                            Err(error) => self.filter_error = Some(error),
                        }
                    }
                    self.scroll = 0;
                    self.refresh();
                }
                KeyCode::Esc => self.typing = None,
                KeyCode::Backspace => {
                    text.pop();
                }
                KeyCode::Char(c) if !key.modifiers.contains(KeyModifiers::CONTROL) => text.push(c),
                KeyCode::Char('c') => return Action::Quit,
                _ => {}
            }
            return Action::Continue;
        }
        if self.help {
            // Any key closes the help; the quitting ones also quit.
            self.help = false;
            if !matches!(key.code, KeyCode::Char('q') | KeyCode::Esc) && !is_ctrl_c(&key) {
                return Action::Continue;
            }
        }
        match key.code {
            KeyCode::Char('q') | KeyCode::Esc => return Action::Quit,
            _ if is_ctrl_c(&key) => return Action::Quit,
            KeyCode::Char('s') => {
                self.sort = self.sort.next();
                self.refresh();
            }
            KeyCode::Char('r') => {
                self.reversed = !self.reversed;
                self.refresh();
            }
            KeyCode::Char('p') => self.paused = !self.paused,
            KeyCode::Char('v') => {
                self.acted_only = !self.acted_only;
                self.scroll = 0;
                self.refresh();
            }
            KeyCode::Char('g') => {
                self.prefixes = !self.prefixes;
                self.kinds = false;
                self.scroll = 0;
                self.order();
            }
            KeyCode::Char('t') => {
                self.kinds = !self.kinds;
                self.bans = false;
            }
            KeyCode::Char('b') => {
                self.bans = !self.bans;
                self.kinds = false;
            }
            KeyCode::Char('/') => self.typing = Some(String::new()),
            KeyCode::Char('?') => self.help = true,
            KeyCode::Tab => {
                let tabs = self.panes.len() + usize::from(self.has_all());
                self.selected = (self.selected + 1) % tabs.max(1);
                self.scroll = 0;
                self.refresh();
            }
            KeyCode::BackTab => {
                let tabs = (self.panes.len() + usize::from(self.has_all())).max(1);
                self.selected = (self.selected + tabs - 1) % tabs;
                self.scroll = 0;
                self.refresh();
            }
            KeyCode::Down => self.scroll_by(1),
            KeyCode::Up => self.scroll_by(-1),
            KeyCode::PageDown => self.scroll_by(self.page.max(1) as isize),
            KeyCode::PageUp => self.scroll_by(-(self.page.max(1) as isize)),
            KeyCode::Home => self.scroll = 0,
            KeyCode::End => self.scroll_by(isize::MAX / 2),
            _ => {}
        }
        Action::Continue
    }

    fn scroll_by(&mut self, rows: isize) {
        let last = self.matching.saturating_sub(1);
        self.scroll = self.scroll.saturating_add_signed(rows).min(last);
        self.cover();
    }

    /// Time since the view started.
    pub fn uptime(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.started)
    }
}

fn is_ctrl_c(key: &KeyEvent) -> bool {
    key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL)
}

/// The `wanted` least of `keyed`, in order, as their places (`place`
/// of each); and how many `keyed` had.
fn least<T: Ord>(
    keyed: impl Iterator<Item = T>,
    wanted: usize,
    place: impl Fn(&T) -> u32,
) -> (Vec<u32>, usize) {
    let mut heap = BinaryHeap::with_capacity(wanted.min(1 << 16));
    let mut count = 0;
    for item in keyed {
        count += 1;
        if heap.len() < wanted {
            heap.push(item);
        } else if let Some(mut worst) = heap.peek_mut()
            && item < *worst
        {
            *worst = item;
        }
    }
    let least = heap.into_sorted_vec();
    (least.iter().map(place).collect(), count)
}

/// Which addresses the bans in force cover: each ban's prefix, looked up
/// by the few prefix lengths there are (not ban by ban: there may be
/// thousands, and a million rows).
struct Banned {
    prefixes: HashSet<IpNet>,
    lengths: Vec<(bool, u8)>,
}

impl Banned {
    fn of(bans: &[BanRow]) -> Self {
        let prefixes: HashSet<IpNet> = bans.iter().filter_map(|b| b.prefix.parse().ok()).collect();
        let mut lengths: Vec<(bool, u8)> = prefixes
            .iter()
            .map(|p| (p.addr().is_ipv6(), p.prefix_len()))
            .collect();
        lengths.sort_unstable();
        lengths.dedup();
        Self { prefixes, lengths }
    }

    fn covers(&self, address: &IpAddr) -> bool {
        !self.prefixes.is_empty()
            && self.lengths.iter().any(|&(v6, len)| {
                v6 == address.is_ipv6()
                    && IpNet::new(*address, len).is_ok_and(|p| self.prefixes.contains(&p.trunc()))
            })
    }
}

/// The "all" pane: every interface's sources merged by address.
fn merged(panes: &[Pane]) -> Pane {
    let mut all = Pane::new("all", "", None);
    let mut rows: HashMap<IpAddr, (Row, Said)> = HashMap::new();
    let mut prefix_rows: HashMap<(IpAddr, Option<u8>), Row> = HashMap::new();
    let mut interval: Option<f64> = None;
    for pane in panes {
        let header = &pane.header;
        for (sum, add) in [
            (&mut all.header.totals.ipv4, &header.totals.ipv4),
            (&mut all.header.totals.ipv6, &header.totals.ipv6),
            (&mut all.header.totals.non_ip, &header.totals.non_ip),
            (&mut all.header.totals.malformed, &header.totals.malformed),
            (&mut all.header.unattributed, &header.unattributed),
        ] {
            sum.add(add);
        }
        for (sum, add) in all.header.rates.iter_mut().zip(&header.rates) {
            sum.add(add);
        }
        interval = match (interval, header.interval_s) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        for row in &pane.rows {
            let said = Said {
                protocols: pane.protocols(row),
                acted: pane.acted(row),
                verdict: pane.verdict(row).to_owned(),
            };
            rows.entry(row.address)
                .and_modify(|(sum, said_sum)| {
                    sum.absorb(row);
                    said_sum.absorb(&said);
                })
                .or_insert_with(|| (row.clone(), said));
        }
        for row in &pane.prefix_rows {
            prefix_rows
                .entry((row.address, row.prefix_len))
                .and_modify(|sum| sum.absorb(row))
                .or_insert_with(|| row.clone());
        }
        all.kinds.absorb(&pane.kinds);
        all.bans.extend(pane.bans.iter().cloned());
        all.header.exact_by_prefix.0 += header.exact_by_prefix.0;
        all.header.exact_by_prefix.1 += header.exact_by_prefix.1;
    }
    all.header.interval_s = interval;
    all.history = Histories::merged(panes.iter().map(|pane| &pane.history));
    let mut rows: Vec<(Row, Said)> = rows.into_values().collect();
    rows.sort_unstable_by_key(|(row, _)| row.address);
    all.rows = Vec::with_capacity(rows.len());
    for (mut row, said) in rows {
        match (one_protocol(&said.protocols), said.acted) {
            (Some(protocol), 0)
                if said.verdict.is_empty() && all.of_one(&row, protocol) == said.protocols =>
            {
                row.protocol = protocol;
                row.said = NOT_SAID;
            }
            _ => row.said = all.place(said),
        }
        all.rows.push(row);
    }
    all.prefix_rows = prefix_rows.into_values().collect();
    all.prefix_rows
        .sort_unstable_by_key(|row| (row.address, row.prefix_len));
    all.header.sources = all.rows.iter().fold((0, 0), |(v4, v6), row| {
        if row.address.is_ipv4() {
            (v4 + 1, v6)
        } else {
            (v4, v6 + 1)
        }
    });
    all
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use ratatui::crossterm::event::KeyEventKind;

    use super::*;
    use crate::counts::sources::SourceTable;

    fn c(packets: u64, bytes: u64) -> Counter {
        Counter { packets, bytes }
    }

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent {
            code,
            modifiers: KeyModifiers::NONE,
            kind: KeyEventKind::Press,
            state: ratatui::crossterm::event::KeyEventState::NONE,
        }
    }

    fn at(base: &Snapshot, seconds: f64, sources: &[(&str, Counter)]) -> Snapshot {
        let mut snapshot = base.clone();
        snapshot.taken = base.taken + Duration::from_secs_f64(seconds);
        snapshot.sources = sources
            .iter()
            .map(|(a, counter)| (a.parse().unwrap(), *counter))
            .collect::<SourceTable>();
        snapshot
    }

    #[test]
    fn rates_use_the_elapsed_time_and_a_count_that_went_backwards_is_no_change() {
        let base = Snapshot::empty();
        let before = at(
            &base,
            0.0,
            &[("198.18.0.1", c(100, 10_000)), ("198.18.0.2", c(50, 500))],
        );
        // 2.5 s later: .1 sent 250 more; .2 reads lower (the live loop keeps
        // reads monotonic, so only a bare pair of snapshots can show this).
        let after = at(
            &base,
            2.5,
            &[("198.18.0.1", c(350, 35_000)), ("198.18.0.2", c(5, 50))],
        );
        let mut pane = Pane::new("x0", "native XDP", Some(64));
        pane.update(&before, &after);
        assert_eq!(
            pane.rows[0].rate,
            Rate {
                pps: 100.0,
                bps: 80_000.0
            }
        );
        assert_eq!(pane.rows[1].rate, Rate::default());
        assert_eq!(pane.header.interval_s, Some(2.5));
    }

    #[test]
    fn rows_equal_under_the_sort_key_keep_the_natural_order_of_the_others() {
        // Everything quiet (every rate 0): 200 one-packet sources and one
        // with 31 packets; the big one comes first under every key but
        // address, and equal rows go by bytes, then address.
        let base = Snapshot::empty();
        let mut sources: Vec<(String, Counter)> = (0..200u32)
            .map(|n| {
                let [_, _, hi, lo] = n.to_be_bytes();
                (format!("198.18.{hi}.{lo}"), c(1, 60))
            })
            .collect();
        sources.push(("198.19.0.1".into(), c(31, 1_860)));
        sources.push(("198.18.255.1".into(), c(1, 1_500)));
        let sources: Vec<(&str, Counter)> = sources.iter().map(|(a, c)| (a.as_str(), *c)).collect();
        let now = at(&base, 1.0, &sources);
        let mut pane = Pane::new("x0", "", None);
        pane.update(&now, &now);
        let mut view = TopView::new(vec![pane], base.taken);
        for key in [SortKey::Pps, SortKey::Bps, SortKey::Packets, SortKey::Bytes] {
            view.sort = key;
            view.refresh();
            let rows: Vec<String> = view
                .rows()
                .take(3)
                .map(|row| row.address.to_string())
                .collect();
            assert_eq!(
                rows,
                ["198.19.0.1", "198.18.255.1", "198.18.0.0"],
                "sorted by {}",
                key.name()
            );
        }
    }

    #[test]
    fn v_shows_only_the_sources_a_rule_acted_on_and_their_verdicts() {
        use xdpstat_common::rules::verdict;
        let base = Snapshot::empty();
        let mut now = at(
            &base,
            1.0,
            &[
                ("198.18.0.1", c(10, 100)),
                ("198.18.0.2", c(30, 30)),
                ("2001:db8::1", c(20, 2_000)),
            ],
        );
        let mut acted = [Counter::default(); verdict::ACTED];
        acted[verdict::DROPPED] = c(25, 25);
        now.verdicts
            .ruled
            .insert("198.18.0.2".parse().unwrap(), acted);
        let mut acted = [Counter::default(); verdict::ACTED];
        acted[verdict::WOULD_LIMIT] = c(5, 500);
        now.verdicts
            .ruled
            .insert("2001:db8::1".parse().unwrap(), acted);
        let mut pane = Pane::new("x0", "", None);
        pane.update(&base, &now);
        let mut view = TopView::new(vec![pane], base.taken);
        let shown = |view: &TopView| -> Vec<(String, String)> {
            view.rows()
                .map(|row| (row.address.to_string(), view.pane().verdict(row).to_owned()))
                .collect()
        };
        assert_eq!(shown(&view).len(), 3);
        view.key(key(KeyCode::Char('v')));
        assert_eq!(
            shown(&view),
            [
                ("198.18.0.2".to_owned(), "dropped 25".to_owned()),
                ("2001:db8::1".to_owned(), "would_limit 5".to_owned()),
            ]
        );
        view.key(key(KeyCode::Char('v')));
        assert_eq!(shown(&view).len(), 3);
    }

    #[test]
    fn keys_sort_reverse_filter_pause_and_quit() {
        let base = Snapshot::empty();
        let now = at(
            &base,
            1.0,
            &[
                ("198.18.0.1", c(10, 100)),
                ("198.18.0.2", c(30, 30)),
                ("2001:db8::1", c(20, 2_000)),
            ],
        );
        let mut pane = Pane::new("x0", "", None);
        pane.update(&base, &now);
        let mut view = TopView::new(vec![pane], base.taken);
        let order = |view: &TopView| -> Vec<String> {
            view.rows().map(|row| row.address.to_string()).collect()
        };
        assert_eq!(
            order(&view),
            ["198.18.0.2", "2001:db8::1", "198.18.0.1"],
            "pkt/s"
        );
        view.key(key(KeyCode::Char('s')));
        assert_eq!(
            order(&view),
            ["2001:db8::1", "198.18.0.1", "198.18.0.2"],
            "bit/s"
        );
        view.key(key(KeyCode::Char('r')));
        assert_eq!(order(&view), ["198.18.0.2", "198.18.0.1", "2001:db8::1"]);
        for c in "/198.18.".chars() {
            view.key(key(KeyCode::Char(c)));
        }
        view.key(key(KeyCode::Enter));
        assert_eq!(order(&view), ["198.18.0.2", "198.18.0.1"]);
        for c in "/2001:db8::/32".chars() {
            view.key(key(KeyCode::Char(c)));
        }
        view.key(key(KeyCode::Enter));
        assert_eq!(order(&view), ["2001:db8::1"]);
        for c in "/nope".chars() {
            view.key(key(KeyCode::Char(c)));
        }
        view.key(key(KeyCode::Enter));
        assert!(view.filter_error.is_some(), "a bad filter is reported");
        assert_eq!(order(&view), ["2001:db8::1"], "and the old one stays");
        view.key(key(KeyCode::Char('/')));
        view.key(key(KeyCode::Enter));
        assert_eq!(view.row_count(), 3, "an empty filter shows everything");
        view.key(key(KeyCode::Char('p')));
        let later = at(&base, 2.0, &[("198.18.0.9", c(1, 1))]);
        view.update(0, &now, &later);
        view.refresh();
        assert_eq!(view.row_count(), 3, "paused: the view does not move");
        assert_eq!(view.key(key(KeyCode::Char('x'))), Action::Continue);
        view.key(key(KeyCode::Char('?')));
        assert!(view.help);
        assert_eq!(view.key(key(KeyCode::Char('s'))), Action::Continue);
        assert!(!view.help, "any key closes the help");
        assert_eq!(view.key(key(KeyCode::Char('q'))), Action::Quit);
        assert_eq!(view.key(key(KeyCode::Esc)), Action::Quit);
        let ctrl_c = KeyEvent {
            modifiers: KeyModifiers::CONTROL,
            ..key(KeyCode::Char('c'))
        };
        assert_eq!(view.key(ctrl_c), Action::Quit);
    }

    #[test]
    fn scrolling_stays_inside_the_rows() {
        let base = Snapshot::empty();
        let sources: Vec<(String, Counter)> = (0..50u8)
            .map(|n| (Ipv4Addr::new(198, 18, 0, n).to_string(), c(u64::from(n), 1)))
            .collect();
        let sources: Vec<(&str, Counter)> = sources.iter().map(|(a, c)| (a.as_str(), *c)).collect();
        let mut pane = Pane::new("x0", "", None);
        pane.update(&base, &at(&base, 1.0, &sources));
        let mut view = TopView::new(vec![pane], base.taken);
        view.page = 10;
        view.key(key(KeyCode::PageDown));
        assert_eq!(view.scroll, 10);
        view.key(key(KeyCode::End));
        assert_eq!(view.scroll, 49);
        view.key(key(KeyCode::Down));
        assert_eq!(view.scroll, 49);
        view.key(key(KeyCode::Home));
        view.key(key(KeyCode::Up));
        assert_eq!(view.scroll, 0);
    }

    #[test]
    fn g_orders_the_prefixes_at_once() {
        // Three sources and no prefix: the rows in order were the
        // sources' places until the next read, which indexed past the
        // prefix rows.
        let base = Snapshot::empty();
        let now = at(
            &base,
            1.0,
            &[
                ("198.18.0.1", c(1, 60)),
                ("198.18.0.2", c(2, 60)),
                ("198.18.0.3", c(3, 60)),
            ],
        );
        let mut pane = Pane::new("x0", "", None);
        pane.update(&base, &now);
        let mut view = TopView::new(vec![pane], base.taken);
        assert_eq!(view.rows().count(), 3);
        view.key(key(KeyCode::Char('g')));
        assert_eq!(view.row_count(), 0);
        assert_eq!(view.rows().count(), 0);
        view.key(key(KeyCode::Char('g')));
        assert_eq!(view.rows().count(), 3);
    }

    #[test]
    fn each_page_scrolled_to_shows_the_full_sort_s_rows() {
        // 1,000 sources, 12 distinct counts: ties go by address. Only the
        // rows through a page past the screen are put in order; each page
        // scrolled to, forward, back and from the end, is the full sort's.
        let base = Snapshot::empty();
        let sources: Vec<(String, Counter)> = (0..1_000u32)
            .map(|n| {
                let address = Ipv4Addr::from(0xc612_0000 + n * 7919 % 1_000).to_string();
                (address, c(u64::from(n % 12), u64::from(n % 5) * 100))
            })
            .collect();
        let sources: Vec<(&str, Counter)> = sources.iter().map(|(a, c)| (a.as_str(), *c)).collect();
        let now = at(&base, 1.0, &sources);
        let mut pane = Pane::new("x0", "", None);
        pane.update(&base, &now);
        for reversed in [false, true] {
            let mut view = TopView::new(vec![pane_copy(&pane)], base.taken);
            view.page = 7;
            if reversed {
                view.key(key(KeyCode::Char('r')));
            }
            let mut expected: Vec<&Row> = pane.rows.iter().collect();
            expected.sort_by_key(|row| (SortKey::Pps.key(row), row.address));
            if reversed {
                expected.reverse();
            }
            let page = |view: &TopView| -> Vec<IpAddr> {
                view.rows()
                    .skip(view.scroll)
                    .take(view.page)
                    .map(|row| row.address)
                    .collect()
            };
            let want = |scroll: usize| -> Vec<IpAddr> {
                expected[scroll..(scroll + 7).min(1_000)]
                    .iter()
                    .map(|row| row.address)
                    .collect()
            };
            assert!(view.rows().len() < 100, "only the first rows in order");
            assert_eq!(view.row_count(), 1_000);
            for _ in 0..200 {
                view.key(key(KeyCode::PageDown));
                assert_eq!(page(&view), want(view.scroll), "at {}", view.scroll);
            }
            view.key(key(KeyCode::End));
            assert_eq!(view.scroll, 999);
            assert_eq!(page(&view), want(999));
            for _ in 0..20 {
                view.key(key(KeyCode::PageUp));
                assert_eq!(page(&view), want(view.scroll), "at {}", view.scroll);
            }
            view.key(key(KeyCode::Home));
            assert_eq!(page(&view), want(0));
        }
    }

    /// A pane with `pane`'s rows (a view takes its panes).
    fn pane_copy(pane: &Pane) -> Pane {
        Pane {
            name: pane.name.clone(),
            header: pane.header.clone(),
            rows: pane.rows.clone(),
            said: pane.said.clone(),
            ..Pane::default()
        }
    }

    #[test]
    fn all_adds_up_each_interface_s_protocols_and_verdicts() {
        use xdpstat_common::rules::verdict;

        use crate::counts::sources::Tally;
        // One source: all TCP on one interface (its row keeps only which
        // protocol; 10 packets before, 30 over the interval), all UDP on
        // the other, where a rule dropped some.
        let base = Snapshot::empty();
        let on = |protocols: [u64; 4], packets: u64, seconds: u64| {
            let mut now = base.clone();
            now.taken = base.taken + Duration::from_secs(seconds);
            now.sources = [(
                "198.18.0.1".parse::<IpAddr>().unwrap(),
                Tally {
                    counter: c(packets, packets * 100),
                    protocols: SourceProtocols(protocols),
                },
            )]
            .into_iter()
            .collect();
            now
        };
        let mut eth0 = Pane::new("eth0", "", None);
        eth0.update(&on([10, 0, 0, 0], 10, 0), &on([40, 0, 0, 0], 40, 2));
        let mut eth1 = Pane::new("eth1", "", None);
        let mut udp = on([0, 10, 0, 0], 10, 2);
        let mut acted = [Counter::default(); verdict::ACTED];
        acted[verdict::DROPPED] = c(4, 400);
        udp.verdicts
            .ruled
            .insert("198.18.0.1".parse().unwrap(), acted);
        eth1.update(&base, &udp);
        assert_eq!(
            eth0.protocols(&eth0.rows[0]),
            SourceProtocols([30, 0, 0, 0])
        );
        assert_eq!(eth0.verdict(&eth0.rows[0]), "");
        let mut view = TopView::new(vec![eth0, eth1], base.taken);
        view.key(key(KeyCode::Tab));
        view.key(key(KeyCode::Tab));
        let all = view.pane();
        assert_eq!(all.name, "all");
        let row = &all.rows[0];
        assert_eq!((row.packets, row.rate.pps), (50, 20.0));
        assert_eq!(all.protocols(row), SourceProtocols([30, 10, 0, 0]));
        assert_eq!(all.protocols(row).summary(), "tcp 75%");
        assert_eq!(all.acted(row), 4);
        assert_eq!(all.verdict(row), "dropped 4");
    }

    #[test]
    fn a_row_is_64_bytes() {
        assert_eq!(std::mem::size_of::<Row>(), 64);
    }

    proptest::proptest! {
        /// A text filter matches exactly the addresses whose text begins
        /// with it, whichever it passes over unwritten.
        #[test]
        fn a_text_filter_matches_as_the_address_s_text_begins(
            v4 in proptest::num::u32::ANY,
            v6 in proptest::num::u128::ANY,
            zeros in 0u32..4,
            other in 0usize..3,
            cut in 1usize..20,
            typed in "[0-9a-f.:]{1,6}",
        ) {
            // IPv6 addresses with runs of zeros (written with `::`) and
            // IPv4 ones mapped into IPv6, beside the plain ones.
            let v6 = v6 >> (32 * zeros);
            let addresses: [IpAddr; 4] = [
                IpAddr::from(std::net::Ipv4Addr::from(v4)),
                IpAddr::from(std::net::Ipv6Addr::from(v6)),
                IpAddr::from(std::net::Ipv4Addr::from(v4).to_ipv6_mapped()),
                IpAddr::from(std::net::Ipv6Addr::from(v6 << 64)),
            ];
            let text = addresses[other].to_string();
            let taken = &text[..cut.min(text.len())];
            for prefix in [taken, typed.as_str()] {
                let Ok(filter) = Filter::parse(prefix) else { continue };
                for address in &addresses {
                    proptest::prop_assert_eq!(
                        filter.matches(address),
                        address.to_string().starts_with(prefix),
                        "{} against {}", prefix, address
                    );
                }
            }
        }
    }

    #[test]
    fn rates_order_as_total_cmp_orders_them() {
        let values = [
            f64::NAN,
            f64::INFINITY,
            1.5,
            1e-300,
            0.0,
            -0.0,
            -2.0,
            f64::NEG_INFINITY,
            -f64::NAN,
        ];
        for a in values {
            for b in values {
                assert_eq!(
                    total_order(a).cmp(&total_order(b)),
                    a.total_cmp(&b),
                    "{a} {b}"
                );
            }
        }
    }
}
