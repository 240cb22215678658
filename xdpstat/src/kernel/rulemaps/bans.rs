//! The bans in force beside the rule set: putting one in force or
//! taking it out (each a write of the rule set and the bans together),
//! their ends, their pinned records, and the events every change makes.

use ipnet::IpNet;
use xdpstat_common::rules::{BANS_MAP, BanRecord, MAX_BANS};

use super::{RuleMaps, failed};
use crate::{
    error::{Cause, one_line},
    rules::ban::{self, Added, Ban, Event, EventKind, Moment, Refusal},
};

impl RuleMaps {
    /// Reads back the bans an earlier xdpstat left in the pinned map
    /// (they go in force again with the next rule set put in force); those
    /// that ended meanwhile are events.
    pub(super) fn pick_up_bans(&mut self) -> Result<(), Cause> {
        for at in 0..MAX_BANS {
            let record = self
                .records
                .get(&at, 0)
                .map_err(|e| failed(BANS_MAP, one_line(&e)))?;
            if record.family == 0 {
                self.recorded = at as usize;
                break;
            }
            if let Some(ban) = Ban::from_record(&record) {
                self.bans.list.push(ban);
            }
        }
        let ended = self.bans.take_ended(ban::monotonic_ns());
        for ban in ended {
            self.event(EventKind::Expire, &ban, "ended while no xdpstat ran".into());
        }
        Ok(())
    }

    /// Now: the capture's time in a replay, else the clocks'.
    pub(super) fn now(&self) -> Moment {
        self.capture_time.unwrap_or_else(Moment::now)
    }

    /// From now on, in a replay: it is `now` in the capture.
    pub fn set_capture_time(&mut self, now: Moment) {
        self.capture_time = Some(now);
    }

    pub(super) fn event(&mut self, event: EventKind, ban: &Ban, detail: String) {
        self.event_at(self.now().wall, event, ban, detail);
    }

    fn event_at(
        &mut self,
        time: std::time::SystemTime,
        event: EventKind,
        ban: &Ban,
        detail: String,
    ) {
        self.events.push(Event {
            time,
            event,
            prefix: ban.prefix,
            origin: ban.origin.clone(),
            detail,
        });
    }

    /// Writes the rule set and the bans in force; on failure the bans are
    /// `before` again (what the datapath still has).
    pub(super) fn write_or_restore(&mut self, before: Vec<Ban>) -> Result<(), Cause> {
        self.write().inspect_err(|_| self.bans.list = before)
    }

    /// What happened to bans since the last call.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// The bans in force.
    pub fn bans(&self) -> &[Ban] {
        &self.bans.list
    }

    /// Puts `ban` in force above the rules, in place of a ban of the same
    /// prefix; refused (and an event) when an allow covers it or the
    /// bans are at their bound.
    pub fn ban(&mut self, ban: Ban) -> Result<Result<Added, Refusal>, Cause> {
        let before = self.bans.list.clone();
        let added = match self.bans.add(ban.clone(), &self.file) {
            Ok(added) => added,
            Err(refusal) => {
                self.event(EventKind::Refused, &ban, refusal.to_string());
                return Ok(Err(refusal));
            }
        };
        self.write_or_restore(before)?;
        let until = ban.until.map_or_else(
            || "until unbanned".to_owned(),
            |until| format!("until {}", humantime::format_rfc3339_seconds(until)),
        );
        let mut detail = format!("{} {until}", ban.describe());
        if !ban.reason.is_empty() {
            detail = format!("{detail}: {}", ban.reason);
        }
        self.event(EventKind::Ban, &ban, detail);
        Ok(Ok(added))
    }

    /// The program the rules file runs for each ban event.
    pub fn on_event(&self) -> Option<std::path::PathBuf> {
        self.file.on_event.clone()
    }

    /// Bans the bound refused since the datapath was loaded.
    pub fn bans_refused(&self) -> u64 {
        self.refused
    }

    /// Puts every ban of `bans` in force with one write (what `ban` does
    /// for one, without an event each): how many were refused.
    pub fn ban_all(&mut self, bans: Vec<Ban>) -> Result<usize, Cause> {
        let before = self.bans.list.clone();
        let mut refused = 0;
        for ban in bans {
            if self.bans.add(ban, &self.file).is_err() {
                refused += 1;
            }
        }
        self.write_or_restore(before)?;
        Ok(refused)
    }

    /// Takes the ban of exactly `prefix` out of force; `None` when there
    /// is none.
    pub fn unban(&mut self, prefix: &IpNet, by: &str) -> Result<Option<Ban>, Cause> {
        let before = self.bans.list.clone();
        let Some(ban) = self.bans.remove(prefix) else {
            return Ok(None);
        };
        self.write_or_restore(before)?;
        self.event(EventKind::Unban, &ban, format!("by {by}"));
        Ok(Some(ban))
    }

    /// Takes the bans that ended out of the set (the datapath stopped
    /// applying them at their end already): an event each.
    pub fn expire(&mut self) -> Result<(), Cause> {
        let before = self.bans.list.clone();
        let ended = self.bans.take_ended(self.now().datapath_ns);
        if ended.is_empty() {
            return Ok(());
        }
        self.write_or_restore(before)?;
        for ban in ended {
            // Said when it ended, not when this read saw it.
            let ended_at = ban.until.unwrap_or_else(|| self.now().wall);
            self.event_at(ended_at, EventKind::Expire, &ban, "its time ended".into());
        }
        Ok(())
    }

    /// Writes the bans in force into the pinned map, and frees the
    /// records after them.
    pub(super) fn record_bans(&mut self) -> Result<(), Cause> {
        let count = self.bans.list.len();
        for (at, ban) in self.bans.list.iter().enumerate() {
            self.records
                .set(at as u32, ban.record(), 0)
                .map_err(|e| failed(BANS_MAP, one_line(&e)))?;
        }
        for at in count..self.recorded {
            self.records
                .set(at as u32, BanRecord::default(), 0)
                .map_err(|e| failed(BANS_MAP, one_line(&e)))?;
        }
        self.recorded = count;
        Ok(())
    }
}
