//! What a trigger measures, from two reads: each key's packets and bytes
//! between them (a source's, of one protocol or all; or a network's, its
//! estimate included, as the prefix totals have it).

use crate::{
    counts::snapshot::Snapshot,
    rules::trigger::{Per, Rate, Trigger},
};

/// `trigger`'s keys with what each sent from `previous` to `current`
/// (only keys that sent something).
pub fn of<'a>(
    trigger: &Trigger,
    previous: &'a Snapshot,
    current: &'a Snapshot,
) -> Box<dyn Iterator<Item = Rate> + 'a> {
    match (trigger.per, trigger.protocol) {
        (Per::Source, None) => Box::new(current.sources.since(&previous.sources).filter_map(
            |(address, now, before)| {
                let sent = now.since(&before);
                (sent.packets > 0).then(|| Rate {
                    key: address.into(),
                    packets: sent.packets,
                    bytes: sent.bytes,
                })
            },
        )),
        (Per::Source, Some(protocol)) => {
            Box::new(current.sources.tallies_since(&previous.sources).filter_map(
                move |(address, now, before)| {
                    let packets =
                        now.protocols.0[protocol].saturating_sub(before.protocols.0[protocol]);
                    (packets > 0).then(|| Rate {
                        key: address.into(),
                        packets,
                        bytes: 0,
                    })
                },
            ))
        }
        (Per::Prefix, _) => Box::new(current.prefixes.rows.iter().filter_map(|(prefix, count)| {
            let sent = count.total().since(&previous.prefixes.total_of(prefix));
            (sent.packets > 0).then_some(Rate {
                key: *prefix,
                packets: sent.packets,
                bytes: sent.bytes,
            })
        })),
    }
}
