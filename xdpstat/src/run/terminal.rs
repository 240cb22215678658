//! The full-screen live view's loop: it owns the terminal (raw mode and
//! the alternate screen, given back on every way out, a panic included),
//! reads the counters every interval, passes key presses on to the view
//! and redraws, at most [`FRAMES_PER_SECOND`] times a second.

use std::{
    io,
    time::{Duration, Instant},
};

use ratatui::crossterm::event::{self, Event, KeyEventKind};

use crate::{
    error::{XdpstatError, one_line},
    output::tui::{
        render,
        view::{Action, Pane, TopView},
    },
    run::live::{CounterSource, Ended, LiveOptions, Watched},
    run::reload::Notices,
};

/// Redraws per second at most, however fast keys arrive.
const FRAMES_PER_SECOND: u32 = 10;
/// How long a reload's outcome stays on the notice line.
const RELOAD_NOTICE: Duration = Duration::from_secs(10);
/// How often the loop looks at the stop flag while waiting for keys.
const STOP_POLL: Duration = Duration::from_millis(50);

/// Gives the terminal back when dropped: on return, on error and on
/// unwinding (`ratatui::init` also restores it from the panic hook).
struct Restore<'a>(&'a Notices);

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        ratatui::restore();
        // What reloads said meanwhile, now that stderr is the terminal's.
        self.0.hold(false);
    }
}

/// Runs the view until a quit key, `stop`, or `--duration`.
pub fn run<S: CounterSource>(
    watched: &mut [Watched<S>],
    options: LiveOptions,
    stop: &dyn Fn() -> bool,
    notices: &Notices,
) -> Result<Ended, XdpstatError> {
    let panes = watched
        .iter()
        .map(|one| {
            Pane::new(
                &one.attached.interface,
                &one.attached.to_string(),
                one.source.capacity(),
            )
        })
        .collect();
    let start = Instant::now();
    let mut view = TopView::new(panes, start);
    let mut terminal = ratatui::try_init().map_err(terminal_error)?;
    notices.hold(true);
    let _restore = Restore(notices);
    let deadline = options.duration.map(|d| start + d);
    let mut next_read = start;
    let frame_gap = Duration::from_secs(1) / FRAMES_PER_SECOND;
    let mut last_frame: Option<Instant> = None;
    let mut dirty = true;
    let mut reloaded: Option<(String, Instant)> = None;
    loop {
        let now = Instant::now();
        if stop() {
            return Ok(Ended::Stopped);
        }
        if deadline.is_some_and(|d| now >= d) {
            return Ok(Ended::DurationElapsed);
        }
        if let Some(line) = notices.latest() {
            reloaded = Some((line, now));
            dirty = true;
        }
        if now >= next_read {
            read(watched, &mut view, notices);
            if watched.iter().all(|one| one.gone) {
                return Ok(Ended::AllGone);
            }
            dirty = true;
            next_read += options.interval;
            if next_read <= now {
                next_read = now + options.interval;
            }
        }
        // A reload's outcome stays on the notice line for a while, unless
        // a failed read has something to say there.
        match &reloaded {
            Some((line, at)) if now.duration_since(*at) < RELOAD_NOTICE => {
                view.notice.get_or_insert_with(|| line.clone());
            }
            Some(_) => {
                reloaded = None;
                if view.notice.take().is_some() {
                    dirty = true;
                }
            }
            None => {}
        }
        if dirty && last_frame.is_none_or(|at| now.duration_since(at) >= frame_gap) {
            terminal
                .draw(|frame| render::draw(frame, &mut view, Instant::now()))
                .map_err(terminal_error)?;
            last_frame = Some(Instant::now());
            dirty = false;
        }
        let wait = next_read
            .saturating_duration_since(Instant::now())
            .min(STOP_POLL);
        if event::poll(wait).map_err(terminal_error)? {
            match event::read().map_err(terminal_error)? {
                Event::Key(key) if key.kind != KeyEventKind::Release => {
                    if view.key(key) == Action::Quit {
                        return Ok(Ended::Stopped);
                    }
                    dirty = true;
                }
                Event::Resize(..) => dirty = true,
                _ => {}
            }
        }
    }
}

/// Reads every interface into the view; a failed read is shown and
/// counting goes on.
fn read<S: CounterSource>(watched: &mut [Watched<S>], view: &mut TopView, notices: &Notices) {
    view.notice = None;
    for (index, one) in watched.iter_mut().enumerate() {
        if one.gone {
            continue;
        }
        let interface = one.attached.interface.clone();
        match one.advance() {
            Ok((previous, current)) => {
                // Each ban event is a line: on the notice line now, and on
                // stderr (at once when it is not the terminal).
                for event in &current.verdicts.events {
                    let row = crate::counts::report::EventRow::from(event);
                    notices.say(format!(
                        "xdpstat: {interface}: {}",
                        crate::output::event_line(&row)
                    ));
                }
                view.update(index, &previous, current)
            }
            Err(error) => view.notice = Some(one_line(&error)),
        }
        // Said on stderr once the terminal is given back.
        if one.gone {
            view.mark_gone(index);
        }
    }
    view.refresh();
}

fn terminal_error(error: io::Error) -> XdpstatError {
    XdpstatError::Output(io::Error::new(
        error.kind(),
        format!("the terminal: {error}"),
    ))
}
