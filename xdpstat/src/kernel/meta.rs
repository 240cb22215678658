//! A datapath's record of itself in its `XDPSTAT_META` map: what it is and
//! where it counts (read by `xdpstat status`, which finds running datapaths
//! by it), and, for a persisted datapath, what must outlive the process:
//! when counting began and what retired entries had counted.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aya::maps::{Array, Map, MapData, MapError};
use xdpstat_common::{Meta, meta_attach};

use crate::kernel::attach::{Hook, ObtainedMode};

/// The META map and the value last written to it.
pub struct Record {
    array: Array<MapData, Meta>,
    value: Meta,
}

impl Record {
    /// Wraps a META map and reads what it holds.
    pub fn open(map: MapData) -> Result<Self, MapError> {
        let array: Array<MapData, Meta> = Array::try_from(Map::Array(map))?;
        let value = array.get(&0, 0)?;
        Ok(Self { array, value })
    }

    /// What the map holds (as last read or written).
    pub fn get(&self) -> &Meta {
        &self.value
    }

    /// Changes the value and writes it whole: one system call, so a
    /// process killed at any moment leaves the old value or the new one.
    pub fn update(&mut self, change: impl FnOnce(&mut Meta)) -> Result<(), MapError> {
        let mut value = self.value;
        change(&mut value);
        self.array.set(0, value, 0)?;
        self.value = value;
        Ok(())
    }
}

/// Reads the META map at `map` (a map found by id or pin, not our own).
pub fn read(map: MapData) -> Result<Meta, MapError> {
    let array: Array<MapData, Meta> = Array::try_from(Map::Array(map))?;
    array.get(&0, 0)
}

/// `text` as a NUL-padded field (cut to fit, leaving one NUL).
pub fn field<const N: usize>(text: &str) -> [u8; N] {
    let mut bytes = [0u8; N];
    let len = text.len().min(N - 1);
    bytes[..len].copy_from_slice(&text.as_bytes()[..len]);
    bytes
}

/// A NUL-padded field as text.
pub fn text(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// A time as the record keeps it.
pub fn nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A time the record kept.
pub fn time(nanos: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(nanos)
}

/// The attachment as the record keeps it.
pub fn attach_code(mode: ObtainedMode) -> u32 {
    match mode {
        ObtainedMode::Native => meta_attach::XDP_NATIVE,
        ObtainedMode::Generic => meta_attach::XDP_GENERIC,
        ObtainedMode::Offload => meta_attach::XDP_OFFLOAD,
        ObtainedMode::Tcx => meta_attach::TCX,
    }
}

/// The attachment the record kept, if it is one this build knows.
pub fn attach_mode(code: u32) -> Option<ObtainedMode> {
    match code {
        meta_attach::XDP_NATIVE => Some(ObtainedMode::Native),
        meta_attach::XDP_GENERIC => Some(ObtainedMode::Generic),
        meta_attach::XDP_OFFLOAD => Some(ObtainedMode::Offload),
        meta_attach::TCX => Some(ObtainedMode::Tcx),
        _ => None,
    }
}

/// The hook the record says the program is on: tc ingress for a tcx
/// attachment, the XDP hook for every other (or an unknown) one.
pub fn hook(meta: &Meta) -> Hook {
    match attach_mode(meta.attach) {
        Some(ObtainedMode::Tcx) => Hook::Tcx,
        _ => Hook::Xdp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_and_cut_to_fit() {
        assert_eq!(text(&field::<16>("eth0")), "eth0");
        let long = "a-very-long-interface-name";
        assert_eq!(text(&field::<16>(long)), &long[..15]);
        assert_eq!(text(&[b'x'; 4]), "xxxx");
        let now = SystemTime::now();
        let back = time(nanos(now));
        assert!(back <= now && now.duration_since(back).unwrap() < Duration::from_micros(1));
        for mode in [
            ObtainedMode::Native,
            ObtainedMode::Generic,
            ObtainedMode::Offload,
            ObtainedMode::Tcx,
        ] {
            assert_eq!(attach_mode(attach_code(mode)), Some(mode));
        }
        assert_eq!(attach_mode(0), None);
    }
}
