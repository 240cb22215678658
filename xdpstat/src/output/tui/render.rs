//! Draws a [`TopView`] into a ratatui frame: tabs, the pane's header, a
//! status line and the table of sources, plus the help and the filter
//! prompt. Only the rows that fit are built; columns drop out, least useful
//! first, when the terminal is narrow.

use std::time::{Duration, Instant};

use ratatui::{
    Frame,
    layout::{Alignment, Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    symbols::Marker,
    text::{Line, Span},
    widgets::{
        Axis, Block, Borders, Cell, Chart, Clear, Dataset, GraphType, LegendPosition, Paragraph,
        Row as TableRow, Table, Tabs,
    },
};
use xdpstat_common::kinds::slot;

use crate::{
    counts::report::BanRow,
    output::tui::kinds::{CHART_LINES, KindsPane, PORTS_SHOWN},
    output::tui::{
        recent::HISTORY,
        view::{Pane, Row, TopView},
    },
    output::{human_count, si},
};

/// Header lines: title, column names, five classes, sources.
const HEADER_LINES: u16 = 8;
/// Terminal rows from which the chart shows under the header, and its rows.
const TALL: u16 = 36;
const CHART_HEIGHT: u16 = 10;
/// The chart's colours, one per line of `CHART_LINES`.
const CHART_COLOURS: [Color; 7] = [
    Color::Cyan,
    Color::Yellow,
    Color::Green,
    Color::Magenta,
    Color::Gray,
    Color::Red,
    Color::LightRed,
];

/// A table column: its title, width, alignment, and how to fill it.
struct Column {
    title: &'static str,
    width: u16,
    /// Numbers align right, the sparkline left.
    right: bool,
    cell: fn(&Row, &Pane) -> String,
}

impl Column {
    fn text(&self, text: &str) -> String {
        if self.right {
            format!("{text:>w$}", w = usize::from(self.width))
        } else {
            text.to_owned()
        }
    }
}

/// The columns, in the order they give way on a narrow terminal (the last
/// goes first). The address column takes what is left.
const COLUMNS: [Column; 8] = [
    Column {
        title: "pkt/s",
        width: 8,
        right: true,
        cell: |row, _| si(row.rate.pps),
    },
    Column {
        title: "bit/s",
        width: 8,
        right: true,
        cell: |row, _| si(row.rate.bps),
    },
    Column {
        title: "packets",
        width: 8,
        right: true,
        cell: |row, _| human_count(row.packets),
    },
    Column {
        title: "share",
        width: 6,
        right: true,
        cell: |row, pane| format!("{:.1}%", pane.share(row) * 100.0),
    },
    Column {
        title: "protocol",
        width: 9,
        right: false,
        cell: |row, pane| match row.prefix_len {
            Some(_) => String::new(),
            None => pane.protocols(row).summary(),
        },
    },
    Column {
        title: "bytes",
        width: 8,
        right: true,
        cell: |row, _| human_count(row.bytes),
    },
    Column {
        title: "verdicts",
        width: 22,
        right: false,
        cell: |row, pane| match (&row.prefix_len, pane.verdict(row), row.banned) {
            (None, "", false) => "-".into(),
            (None, "", true) => "banned".into(),
            (None, verdict, true) => format!("banned {verdict}"),
            (_, verdict, _) => verdict.to_owned(),
        },
    },
    Column {
        title: "recent",
        width: HISTORY as u16,
        right: false,
        cell: |row, pane| sparkline(pane, row),
    },
];

/// Columns shown left to right, by their index in [`COLUMNS`]; the
/// sparkline is the first to go on a narrow screen, then the verdicts.
const ORDER: [usize; 8] = [2, 5, 0, 1, 3, 4, 7, 6];

/// The narrowest address column (an IPv4 address).
const ADDRESS_MIN: u16 = 15;

pub fn draw(frame: &mut Frame, view: &mut TopView, now: Instant) {
    let tabs = u16::from(view.has_all());
    // The chart goes under the header on a tall terminal; in the `t` view
    // it has the table's place.
    let chart = if frame.area().height >= TALL && !view.kinds {
        CHART_HEIGHT
    } else {
        0
    };
    let [tabs_area, header_area, chart_area, status_area, table_area] = Layout::vertical([
        Constraint::Length(tabs),
        Constraint::Length(HEADER_LINES),
        Constraint::Length(chart),
        Constraint::Length(1),
        Constraint::Min(0),
    ])
    .areas(frame.area());
    if view.has_all() {
        draw_tabs(frame, view, tabs_area);
    }
    draw_header(frame, view, now, header_area);
    if chart > 0 {
        draw_chart(frame, &view.pane().kinds, chart_area);
    }
    draw_status(frame, view, status_area);
    if view.kinds {
        draw_kinds(frame, &view.pane().kinds, table_area);
    } else if view.bans {
        draw_bans(frame, &view.pane().bans, table_area);
    } else {
        draw_table(frame, view, table_area);
    }
    if view.help {
        draw_help(frame);
    }
}

fn draw_tabs(frame: &mut Frame, view: &TopView, area: Rect) {
    let names = view
        .panes()
        .iter()
        .map(|pane| pane.name.clone())
        .chain(["all".to_owned()]);
    let tabs = Tabs::new(names)
        .select(view.selected)
        .highlight_style(Style::new().add_modifier(Modifier::REVERSED));
    frame.render_widget(tabs, area);
}

fn draw_header(frame: &mut Frame, view: &TopView, now: Instant, area: Rect) {
    let pane = view.pane();
    let header = &pane.header;
    let mut title = vec![Span::styled(
        pane.name.clone(),
        Style::new().add_modifier(Modifier::BOLD),
    )];
    if !pane.attachment.is_empty() {
        title.push(Span::raw(format!(" ({})", pane.attachment)));
    }
    title.push(Span::raw(format!(" up {}", clock(view.uptime(now)))));
    match header.interval_s {
        Some(seconds) => title.push(Span::raw(format!(
            ", rates over {seconds:.2} s (bytes in B, bit/s in bits)"
        ))),
        None => title.push(Span::raw(", rates after the second read")),
    }
    let mut lines = vec![Line::from(title)];
    lines.push(Line::from(format!(
        "  {:<13}{:>9}{:>9}{:>9}{:>9}",
        "class", "packets", "bytes", "pkt/s", "bit/s"
    )));
    let totals = &header.totals;
    for (at, (name, counter)) in [
        ("ipv4", totals.ipv4),
        ("ipv6", totals.ipv6),
        ("non_ip", totals.non_ip),
        ("malformed", totals.malformed),
        ("unattributed", header.unattributed),
    ]
    .into_iter()
    .enumerate()
    {
        let rate = header.rates[at];
        lines.push(Line::from(format!(
            "  {name:<13}{:>9}{:>9}{:>9}{:>9}",
            human_count(counter.packets),
            human_count(counter.bytes),
            si(rate.pps),
            si(rate.bps)
        )));
    }
    let (v4, v6) = header.sources;
    let capacity = match header.capacity {
        Some(capacity) => format!(" of {capacity} per family"),
        None => String::new(),
    };
    if view.prefixes {
        let (exact, ip) = header.exact_by_prefix;
        let share = crate::output::percent(exact, ip);
        lines.push(Line::from(format!(
            "  prefixes: {}, {share:.1}% of IP packets exactly (~ marks an estimate)",
            pane.prefix_rows.len()
        )));
    } else {
        lines.push(Line::from(format!(
            "  sources: {v4} IPv4, {v6} IPv6{capacity}"
        )));
    }
    frame.render_widget(Paragraph::new(lines), area);
}

fn draw_status(frame: &mut Frame, view: &TopView, area: Rect) {
    let line = if let Some(text) = &view.typing {
        Line::from(format!(
            "filter (prefix or CIDR, Enter to apply, Esc to cancel): {text}_"
        ))
    } else {
        let mut parts = vec![
            format!(
                "sort: {} {}",
                view.sort.name(),
                if view.reversed { "(reversed)" } else { "" }
            )
            .trim_end()
            .to_owned(),
        ];
        if let Some(filter) = &view.filter {
            parts.push(format!(
                "filter: {} ({} of {})",
                filter.text(),
                view.row_count(),
                view.pane().shown(view.prefixes).len()
            ));
        }
        if let Some(error) = &view.filter_error {
            parts.push(error.clone());
        }
        if let Some(notice) = &view.notice {
            parts.push(notice.clone());
        }
        if view.paused {
            parts.push("PAUSED (p resumes; counting goes on)".into());
        }
        parts.push("? help, q quit".into());
        Line::from(parts.join(" | "))
    };
    frame.render_widget(
        Paragraph::new(line).style(Style::new().add_modifier(Modifier::REVERSED)),
        area,
    );
}

fn draw_table(frame: &mut Frame, view: &mut TopView, area: Rect) {
    // One line for the column titles.
    view.page = usize::from(area.height.saturating_sub(1));
    view.cover();
    if view.row_count() == 0 {
        let text = match (view.filter.is_some(), view.prefixes) {
            (true, false) => "no source matches the filter",
            (true, true) => "no prefix matches the filter",
            (false, false) => "no sources yet",
            (false, true) => "no prefixes yet",
        };
        frame.render_widget(
            Paragraph::new(text).alignment(Alignment::Center),
            area.inner(ratatui::layout::Margin::new(0, 1)),
        );
        return;
    }
    let shown = fitting_columns(area.width);
    let pane = view.pane();
    let first = if view.prefixes { "prefix" } else { "address" };
    let titles = std::iter::once(Cell::from(first)).chain(
        shown
            .iter()
            .map(|&c| Cell::from(COLUMNS[c].text(COLUMNS[c].title))),
    );
    let rows = view.rows().skip(view.scroll).take(view.page).map(|row| {
        let cells = std::iter::once(Cell::from(row.label())).chain(
            shown
                .iter()
                .map(|&c| Cell::from(COLUMNS[c].text(&(COLUMNS[c].cell)(row, pane)))),
        );
        TableRow::new(cells)
    });
    let widths = std::iter::once(Constraint::Min(ADDRESS_MIN))
        .chain(shown.iter().map(|&c| Constraint::Length(COLUMNS[c].width)));
    let table = Table::new(rows, widths)
        .header(TableRow::new(titles).style(Style::new().add_modifier(Modifier::BOLD)))
        .column_spacing(1);
    frame.render_widget(table, area);
}

/// Packets per second by protocol over the last reads, and what rules
/// dropped and limited when they acted.
fn draw_chart(frame: &mut Frame, kinds: &KindsPane, area: Rect) {
    let lines: Vec<usize> = if kinds.rules_acted() {
        (0..CHART_LINES.len()).collect()
    } else {
        (0..slot::PROTOCOLS).collect()
    };
    let points: Vec<Vec<(f64, f64)>> = lines
        .iter()
        .map(|&line| {
            kinds
                .history
                .iter()
                .enumerate()
                .map(|(at, point)| (at as f64, point[line]))
                .collect()
        })
        .collect();
    let peak = kinds
        .history
        .iter()
        .flat_map(|point| lines.iter().map(|&line| point[line]))
        .fold(1.0, f64::max);
    let datasets = lines
        .iter()
        .zip(&points)
        .map(|(&line, data)| {
            Dataset::default()
                .name(CHART_LINES[line])
                .marker(Marker::Braille)
                .graph_type(GraphType::Line)
                .style(Style::new().fg(CHART_COLOURS[line]))
                .data(data)
        })
        .collect();
    let reads = kinds.history.len().max(2) as f64 - 1.0;
    let chart = Chart::new(datasets)
        .block(Block::new().title(format!(
            "packets/s by protocol, last {} reads{}",
            kinds.history.len(),
            if kinds.rules_acted() {
                ", and what rules dropped and limited"
            } else {
                ""
            }
        )))
        .x_axis(Axis::default().bounds([0.0, reads]))
        .y_axis(
            Axis::default()
                .bounds([0.0, peak])
                .labels(["0".to_owned(), si(peak)]),
        )
        .legend_position(Some(LegendPosition::TopRight))
        .hidden_legend_constraints((Constraint::Percentage(50), Constraint::Percentage(80)));
    frame.render_widget(chart, area);
}

/// The `t` view: the chart when there is room, each protocol's counts and
/// rates, then the busiest ports of each side.
/// The bans in force (`b`): what each bans, how, since and until when,
/// and what it judged.
fn draw_bans(frame: &mut Frame, bans: &[(String, BanRow)], area: Rect) {
    let mut lines = vec![Line::styled(
        format!(
            "{:<10}{:<26}{:>9}  {:<16}{:<14}{:<21}reason",
            "interface", "banned", "packets", "action", "origin", "until"
        ),
        Style::new().add_modifier(Modifier::BOLD),
    )];
    if bans.is_empty() {
        lines.push(Line::raw(
            "no bans in force (xdpstat ban IFACE PREFIX, or a [[trigger]])",
        ));
    }
    for (interface, ban) in bans {
        lines.push(Line::raw(format!(
            "{interface:<10}{:<26}{:>9}  {:<16}{:<14}{:<21}{}",
            ban.prefix,
            human_count(ban.packets),
            ban.action,
            ban.origin,
            ban.until.as_deref().unwrap_or("unbanned"),
            ban.reason
        )));
    }
    frame.render_widget(Paragraph::new(lines), area);
}

fn draw_kinds(frame: &mut Frame, kinds: &KindsPane, area: Rect) {
    let chart = if area.height >= 2 * CHART_HEIGHT {
        CHART_HEIGHT
    } else {
        0
    };
    let [chart_area, text_area] =
        Layout::vertical([Constraint::Length(chart), Constraint::Min(0)]).areas(area);
    if chart > 0 {
        draw_chart(frame, kinds, chart_area);
    }
    let mut lines = vec![Line::styled(
        format!(
            "{:<14}{:>9}{:>9}{:>9}{:>9}",
            "kind", "packets", "bytes", "pkt/s", "bit/s"
        ),
        Style::new().add_modifier(Modifier::BOLD),
    )];
    let names = [
        "tcp",
        "udp",
        "icmp",
        "icmpv6",
        "other",
        "fragments",
        "tcp_syn",
    ];
    for (name, (counter, rate)) in names.iter().zip(&kinds.slots) {
        lines.push(Line::from(format!(
            "{name:<14}{:>9}{:>9}{:>9}{:>9}",
            human_count(counter.packets),
            human_count(counter.bytes),
            si(rate.pps),
            si(rate.bps)
        )));
    }
    lines.push(Line::from(""));
    let sides = ["tcp dst", "udp dst", "udp src"];
    lines.push(Line::styled(
        sides
            .iter()
            .map(|side| format!("{:<26}", format!("{side} port    pkt/s")))
            .collect::<String>(),
        Style::new().add_modifier(Modifier::BOLD),
    ));
    for at in 0..PORTS_SHOWN {
        let cells: String = kinds
            .ports
            .iter()
            .map(|ports| match ports.get(at) {
                Some(line) => format!(
                    "{:<26}",
                    format!("{:>12}{:>9}", line.port, si(line.rate.pps))
                ),
                None => format!("{:<26}", ""),
            })
            .collect();
        if cells.trim().is_empty() {
            break;
        }
        lines.push(Line::from(cells));
    }
    frame.render_widget(Paragraph::new(lines), text_area);
}

/// The columns that fit next to the address in `width` cells, in display
/// order.
fn fitting_columns(width: u16) -> Vec<usize> {
    let mut kept: Vec<usize> = (0..COLUMNS.len()).collect();
    let needed =
        |kept: &[usize]| ADDRESS_MIN + kept.iter().map(|&c| COLUMNS[c].width + 1).sum::<u16>();
    while !kept.is_empty() && needed(&kept) > width {
        kept.pop();
    }
    ORDER.iter().copied().filter(|c| kept.contains(c)).collect()
}

/// The source's recent packet rates as block characters, scaled to its own
/// peak.
fn sparkline(pane: &Pane, row: &Row) -> String {
    if row.prefix_len.is_some() {
        return String::new();
    }
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let Some(recent) = pane.history(&row.address) else {
        return String::new();
    };
    let peak = recent.iter().fold(0.0, f64::max);
    recent
        .iter()
        .map(|pps| {
            if pps <= 0.0 || peak <= 0.0 {
                ' '
            } else {
                let level = (pps / peak * (BARS.len() - 1) as f64).round() as usize;
                BARS[level.min(BARS.len() - 1)]
            }
        })
        .collect()
}

fn clock(uptime: Duration) -> String {
    let seconds = uptime.as_secs();
    format!(
        "{:02}:{:02}:{:02}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

fn draw_help(frame: &mut Frame) {
    const KEYS: [(&str, &str); 13] = [
        ("q, Esc, Ctrl-C", "quit (detach and restore the terminal)"),
        ("s", "sort by pkt/s, bit/s, packets, bytes, address in turn"),
        ("r", "reverse the sort"),
        ("p", "pause the display (counting goes on)"),
        ("g", "sources or network prefixes (--prefix-len)"),
        ("t", "traffic kinds: protocols, ports, and their chart"),
        ("b", "the bans in force (a banned source says so)"),
        (
            "v",
            "only sources a rule dropped or limited (or would have)",
        ),
        (
            "/",
            "filter by address prefix (198.18.) or CIDR (2001:db8::/32)",
        ),
        ("Tab", "next interface (and \"all\")"),
        ("Up, Down", "scroll a line"),
        ("PgUp, PgDn", "scroll a page"),
        ("?", "this help (any key closes it)"),
    ];
    let area = frame.area();
    let width = area.width.min(76);
    let height = area.height.min(KEYS.len() as u16 + 2);
    let popup = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    let lines: Vec<Line> = KEYS
        .iter()
        .map(|(keys, what)| Line::from(format!("{keys:<15}{what}")))
        .collect();
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(" keys ")),
        popup,
    );
}

#[cfg(test)]
mod tests {
    use ratatui::{
        Terminal,
        backend::TestBackend,
        crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyEventState, KeyModifiers},
    };
    use xdpstat_common::Counter;

    use super::*;
    use crate::{
        counts::snapshot::{ClassSlots, Snapshot},
        counts::sources::{SourceProtocols, SourceTable, Tally},
        output::tui::view::Pane,
    };

    fn c(packets: u64, bytes: u64) -> Counter {
        Counter { packets, bytes }
    }

    /// Two reads a second apart of a fake interface.
    fn pane(name: &str, scale: u64, sources: &[(&str, u64, u64)]) -> Pane {
        let before = Snapshot::empty();
        let mut after = before.clone();
        after.taken = before.taken + Duration::from_secs(1);
        // By position: all TCP, all UDP, or three quarters UDP and the
        // rest ICMP.
        after.sources = sources
            .iter()
            .enumerate()
            .map(|(index, &(a, packets, bytes))| {
                let packets = packets * scale;
                let kept = match index % 3 {
                    0 => [packets, 0, 0, 0],
                    1 => [0, packets, 0, 0],
                    _ => [0, packets * 3 / 4, packets - packets * 3 / 4, 0],
                };
                let tally = Tally {
                    counter: c(packets, bytes * scale),
                    protocols: SourceProtocols(kept),
                };
                (a.parse().unwrap(), tally)
            })
            .collect::<SourceTable>();
        after.slots = ClassSlots {
            non_ip: c(4 * scale, 240 * scale),
            malformed: c(scale, 60 * scale),
            unattributed_v4: c(2 * scale, 128 * scale),
            unattributed_v6: Counter::default(),
            capture_skipped: Counter::default(),
        };
        let lens = crate::counts::prefixes::PrefixLens::default();
        for (address, counter) in after.sources.iter() {
            after.prefixes.add_exact(lens.of(address), &counter);
        }
        after.prefixes.add_estimate(
            "198.51.100.0/24".parse().unwrap(),
            &c(2 * scale, 128 * scale),
            1,
        );
        after.prefixes.sketched = c(2 * scale, 128 * scale);
        // Kinds: UDP from port 53 and to 33000, TCP to 443, fragments.
        after.kinds.slots[0] = c(300 * scale, 19_200 * scale);
        after.kinds.slots[1] = c(22_042 * scale, 18_002_688 * scale);
        after.kinds.slots[5] = c(7 * scale, 10_500 * scale);
        after.kinds.slots[6] = c(12 * scale, 768 * scale);
        let mut ports = vec![c(0, 0); 3 * 65_536];
        ports[443] = c(300 * scale, 19_200 * scale);
        ports[65_536 + 33_000] = c(22_000 * scale, 18_000_000 * scale);
        ports[65_536 + 53] = c(42 * scale, 2_688 * scale);
        ports[2 * 65_536 + 53] = c(22_000 * scale, 18_000_000 * scale);
        ports[2 * 65_536 + 5353] = c(42 * scale, 2_688 * scale);
        after.kinds.ports = crate::counts::kinds::Ports::from_sums(&ports);
        let mut pane = Pane::new(name, "native XDP, bpf link", Some(65_536));
        pane.update(&before, &after);
        pane
    }

    fn sample() -> Pane {
        pane(
            "eth0",
            1,
            &[
                ("198.18.0.10", 15_000, 9_600_000),
                ("2001:db8::beef", 7_000, 8_400_000),
                ("198.18.7.1", 300, 19_200),
                ("198.18.3.3", 42, 2_688),
            ],
        )
    }

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent {
            code,
            modifiers: KeyModifiers::NONE,
            kind: KeyEventKind::Press,
            state: KeyEventState::NONE,
        }
    }

    fn typed(view: &mut TopView, text: &str) {
        for c in text.chars() {
            view.key(key(KeyCode::Char(c)));
        }
        view.key(key(KeyCode::Enter));
    }

    /// The screen as text, one line per row, trailing blanks cut.
    fn screen(view: &mut TopView, width: u16, height: u16) -> String {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        let now = view.started + Duration::from_secs(3_723);
        terminal.draw(|frame| draw(frame, view, now)).unwrap();
        let buffer = terminal.backend().buffer();
        (0..height)
            .map(|y| {
                let line: String = (0..width).map(|x| buffer[(x, y)].symbol()).collect();
                line.trim_end().to_owned()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn a_banned_source_says_so_and_b_lists_the_bans() {
        use crate::rules::{
            Action,
            ban::Ban,
            in_force::{InForce, RuleHits},
        };
        let mut pane = Pane::new("eth0", "native XDP, bpf link", Some(65_536));
        let before = Snapshot::empty();
        let mut after = before.clone();
        after.taken = before.taken + Duration::from_secs(1);
        after.sources = [("198.18.7.1", 300), ("198.18.3.3", 42), ("198.18.9.9", 5)]
            .iter()
            .map(|&(a, packets)| {
                let tally = Tally {
                    counter: c(packets, packets * 64),
                    protocols: SourceProtocols([0, packets, 0, 0]),
                };
                (a.parse().unwrap(), tally)
            })
            .collect::<SourceTable>();
        let ban = |prefix: &str, origin: &str| {
            let ban = Ban::new(prefix.parse().unwrap(), Action::Drop, origin, "flood", None);
            RuleHits {
                rule: InForce {
                    prefix: Some(ban.prefix),
                    matching: Default::default(),
                    list: None,
                    kernel: ban.kernel(),
                    ban: Some(ban),
                },
                counter: c(250, 16_000),
            }
        };
        after.verdicts.rules = vec![
            ban("198.18.7.1/32", "hand"),
            ban("198.18.9.0/24", "udp-flood"),
        ];
        pane.update(&before, &after);
        let mut view = TopView::new(vec![pane], Instant::now());
        let table = screen(&mut view, 100, 16);
        let verdict_of = |address: &str| {
            table
                .lines()
                .find(|l| l.starts_with(&format!("{address} ")))
                .unwrap_or_else(|| panic!("{address} in {table}"))
                .contains("banned")
        };
        assert!(verdict_of("198.18.7.1"), "{table}");
        assert!(verdict_of("198.18.9.9"), "inside a banned /24: {table}");
        assert!(!verdict_of("198.18.3.3"), "{table}");
        view.key(key(KeyCode::Char('b')));
        let bans = screen(&mut view, 100, 16);
        assert!(bans.contains("198.18.7.1/32"), "{bans}");
        assert!(bans.contains("udp-flood"), "{bans}");
        assert!(bans.contains("unbanned"), "no end: {bans}");
        view.key(key(KeyCode::Char('b')));
        assert!(screen(&mut view, 100, 16).contains("198.18.3.3"));
    }

    #[test]
    fn one_interface_header_and_table() {
        let mut view = TopView::new(vec![sample()], Instant::now());
        insta::assert_snapshot!(screen(&mut view, 100, 16));
    }

    #[test]
    fn t_shows_protocols_ports_and_the_chart_and_a_tall_terminal_charts_in_every_view() {
        let mut view = TopView::new(vec![sample()], Instant::now());
        view.key(key(KeyCode::Char('t')));
        insta::assert_snapshot!("kinds", screen(&mut view, 100, 40));
        view.key(key(KeyCode::Char('t')));
        let sources = screen(&mut view, 100, 40);
        assert!(
            sources.contains("packets/s by protocol, last 1 reads"),
            "{sources}"
        );
        assert!(sources.contains("198.18.0.10"), "{sources}");
        let short = screen(&mut view, 100, 16);
        assert!(!short.contains("packets/s by protocol"), "{short}");
    }

    #[test]
    fn sorted_by_bytes_reversed() {
        let mut view = TopView::new(vec![sample()], Instant::now());
        for _ in 0..3 {
            view.key(key(KeyCode::Char('s')));
        }
        view.key(key(KeyCode::Char('r')));
        insta::assert_snapshot!(screen(&mut view, 100, 16));
    }

    #[test]
    fn filtered_by_cidr_and_by_prefix() {
        let mut view = TopView::new(vec![sample()], Instant::now());
        view.key(key(KeyCode::Char('/')));
        typed(&mut view, "198.18.0.0/20");
        insta::assert_snapshot!("cidr", screen(&mut view, 100, 16));
        view.key(key(KeyCode::Char('/')));
        typed(&mut view, "2001:db8:");
        insta::assert_snapshot!("prefix", screen(&mut view, 100, 16));
        view.key(key(KeyCode::Char('/')));
        typed(&mut view, "10.0.0.0/40");
        insta::assert_snapshot!("bad", screen(&mut view, 100, 16));
    }

    #[test]
    fn a_narrow_terminal_drops_columns() {
        let mut view = TopView::new(vec![sample()], Instant::now());
        insta::assert_snapshot!("w60", screen(&mut view, 60, 16));
        insta::assert_snapshot!("w30", screen(&mut view, 30, 6));
    }

    #[test]
    fn several_interfaces_have_tabs_and_an_all_view() {
        let second = pane(
            "eth1",
            2,
            &[("198.18.0.10", 1_000, 64_000), ("198.18.9.9", 10, 640)],
        );
        let mut view = TopView::new(vec![sample(), second], Instant::now());
        view.key(key(KeyCode::Tab));
        insta::assert_snapshot!("eth1", screen(&mut view, 100, 17));
        view.key(key(KeyCode::Tab));
        insta::assert_snapshot!("all", screen(&mut view, 100, 17));
    }

    #[test]
    fn a_hundred_thousand_sources_sort_filter_and_draw_only_what_fits() {
        let before = Snapshot::empty();
        let mut after = before.clone();
        after.taken = before.taken + Duration::from_secs(1);
        after.sources = (0..100_000u32)
            .map(|n| {
                let address = std::net::Ipv4Addr::from(0xc612_0000 + n).into();
                (address, c(u64::from(n % 977), u64::from(n)))
            })
            .collect::<SourceTable>();
        let mut pane = Pane::new("eth0", "native XDP, bpf link", Some(131_072));
        pane.update(&before, &after);
        let mut view = TopView::new(vec![pane], Instant::now());
        let text = screen(&mut view, 100, 30);
        assert!(text.contains("sources: 100000 IPv4, 0 IPv6"));
        assert_eq!(
            view.page,
            30 - 9 - 1,
            "rows under the header, status and titles"
        );
        assert!(
            text.lines().nth(10).unwrap().contains("976"),
            "the biggest first:\n{text}"
        );
        view.key(key(KeyCode::Char('/')));
        typed(&mut view, "198.19.133.0/24");
        assert_eq!(view.row_count(), 256);
        view.key(key(KeyCode::End));
        let text = screen(&mut view, 100, 30);
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("198.19.133."))
                .count(),
            1
        );
    }

    #[test]
    fn g_shows_the_prefixes_and_how_much_they_explain_exactly() {
        // The key alone orders the rows: a draw before the next read
        // shows the prefixes, not rows picked by the sources' order.
        let mut view = TopView::new(vec![sample()], Instant::now());
        view.key(key(KeyCode::Char('g')));
        let text = screen(&mut view, 100, 24);
        assert!(text.contains("prefix "), "{text}");
        assert!(text.contains("198.18.0.0/24"), "{text}");
        assert!(text.contains("2001:db8::/48"), "{text}");
        assert!(text.contains("~198.51.100.0/24"), "{text}");
        // 198.18.0/24, 198.18.3/24, 198.18.7/24, 2001:db8::/48 and the
        // estimate; all but 2 of 22,344 IP packets exactly.
        assert!(
            text.contains("prefixes: 5, 100.0% of IP packets exactly"),
            "{text}"
        );
        view.key(key(KeyCode::Char('g')));
        let text = screen(&mut view, 100, 24);
        assert!(text.contains("198.18.0.10"), "{text}");
        assert!(!text.contains("/24"), "{text}");
    }

    #[test]
    fn empty_state_help_and_pause() {
        let mut view = TopView::new(
            vec![Pane::new("eth0", "generic XDP, bpf link", None)],
            Instant::now(),
        );
        insta::assert_snapshot!("empty", screen(&mut view, 80, 14));
        view.key(key(KeyCode::Char('p')));
        view.key(key(KeyCode::Char('?')));
        insta::assert_snapshot!("help", screen(&mut view, 80, 14));
    }
}
