//! A partition's share of a batch as it is read: tracker events judged against the
//! partition's watermark, in offset order, and the pipeline's own items beside them.
//!
//! An event is taken when its user belongs to the partition, it is not stamped after
//! `not_after` (the wall clock plus the allowed drift) and it is not late; the firing
//! clock after each item is kept as its mark, so timers fire as they would have one
//! message at a time.
//!
//! ```
//! use _core::events::{Event, Kind};
//! use _core::reading::{PartitionItems, Verdict};
//! use _core::watermark::Watermark;
//! let mut part = PartitionItems::new(0, 7, f64::NEG_INFINITY);
//! let mut clock = Watermark::new(60.0, 5.0);
//! let on_time = part.judge(Event::new("u1", "m1", Kind::Page, 1000.0), &mut clock, 7, 2e9);
//! let late = part.judge(Event::new("u1", "m2", Kind::Page, 900.0), &mut clock, 8, 2e9);
//! assert!(matches!(on_time, Verdict::Taken(1000.0)));
//! assert!(matches!(late, Verdict::Rejected(_)));
//! assert_eq!((part.items.len(), part.marks[0]), (1, 995.0));
//! ```

use std::collections::HashSet;

use crate::decoding::Rejection;
use crate::events::Event;
use crate::partitioner::canonical_partition;
use crate::step::Item;
use crate::watermark::Watermark;

/// Reason of an event older than its partition's watermark.
pub const LATE: &str = "late";
/// Reason of an event stamped further past the wall clock than allowed.
pub const FUTURE: &str = "future_timestamp";

/// What became of a tracker event read on a partition.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Taken among the partition's items; its event time.
    Taken(f64),
    /// Refused: future or late.
    Rejected(Rejection),
}

/// One partition's items of a batch, with the firing clock after each and the position
/// of the message each came from.
#[derive(Clone, Debug, Default)]
pub struct PartitionItems {
    pub number: u32,
    /// The offset of the partition's last message in the batch.
    pub last: i64,
    pub items: Vec<Item>,
    /// The partition's firing clock before the first item.
    pub opened: f64,
    /// The partition's firing clock after each item.
    pub marks: Vec<f64>,
    /// The batch position of the message each item came from.
    pub positions: Vec<usize>,
    /// Whether an advance-watermark command is among the items (every user is swept).
    pub advances: bool,
    /// Relayed messages taken.
    pub relayed: usize,
    /// Whether the partition's latest event was replayed; `None`: no event yet.
    pub replaying: Option<bool>,
}

impl PartitionItems {
    /// Partition `number`'s share, starting at offset `last` with its firing clock at
    /// `opened`.
    pub fn new(number: u32, last: i64, opened: f64) -> PartitionItems {
        PartitionItems {
            number,
            last,
            opened,
            ..PartitionItems::default()
        }
    }

    /// Append `item`, from the message at `position`, after which the firing clock is
    /// `mark`.
    pub fn add(&mut self, item: Item, position: usize, mark: f64) {
        self.items.push(item);
        self.positions.push(position);
        self.marks.push(mark);
    }

    /// Judge an event of this partition's user that came at `position`: taken, or refused
    /// as future (stamped after `not_after`) or late (before the watermark).
    pub fn judge(
        &mut self,
        event: Event,
        clock: &mut Watermark,
        position: usize,
        not_after: f64,
    ) -> Verdict {
        let moment = event.timestamp;
        if moment > not_after {
            return Verdict::Rejected(Rejection {
                reason: FUTURE,
                detail: format!("timestamp {moment:.0} is in the future"),
            });
        }
        if !clock.admit(moment) {
            return Verdict::Rejected(Rejection {
                reason: LATE,
                detail: format!(
                    "event time {moment:.3} is before the watermark {:.3}",
                    clock.value()
                ),
            });
        }
        self.add(Item::Event(event), position, clock.firing());
        Verdict::Taken(moment)
    }

    /// The users the items name.
    pub fn user_ids(&self) -> HashSet<&str> {
        self.items
            .iter()
            .map(|item| match item {
                Item::Event(event) => event.user_id.as_str(),
                Item::Merge { anonymous_id, .. } => anonymous_id.as_str(),
                Item::Absorb { into, .. } => into.as_str(),
                Item::Erase { user_id, .. } => user_id.as_str(),
                Item::Advance { .. } => "",
            })
            .filter(|user_id| !user_id.is_empty())
            .collect()
    }
}

/// The partition whose worker owns `event`'s user, when it is not `number` (of `count`).
pub fn owner_elsewhere(event: &Event, number: u32, count: u32) -> Option<u32> {
    let owner = canonical_partition(&event.user_id, count);
    (owner != number).then_some(owner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Kind;

    #[test]
    fn a_future_event_is_refused_without_moving_the_watermark() {
        let mut part = PartitionItems::new(0, 0, f64::NEG_INFINITY);
        let mut clock = Watermark::new(60.0, 5.0);
        let verdict = part.judge(
            Event::new("u", "m", Kind::Page, 5000.0),
            &mut clock,
            0,
            4000.0,
        );
        assert_eq!(
            verdict,
            Verdict::Rejected(Rejection {
                reason: FUTURE,
                detail: "timestamp 5000 is in the future".into()
            })
        );
        assert_eq!(clock.max_event_time, f64::NEG_INFINITY);
        assert!(part.items.is_empty());
    }

    #[test]
    fn marks_follow_the_watermark_item_by_item() {
        let mut part = PartitionItems::new(0, 0, f64::NEG_INFINITY);
        let mut clock = Watermark::new(10.0, 2.0);
        for (position, moment) in [100.0, 95.0, 120.0].into_iter().enumerate() {
            part.judge(
                Event::new("u", "m", Kind::Page, moment),
                &mut clock,
                position,
                1e10,
            );
        }
        assert_eq!(part.marks, [98.0, 98.0, 118.0]);
        assert_eq!(part.positions, [0, 1, 2]);
        assert_eq!(part.user_ids().into_iter().collect::<Vec<_>>(), ["u"]);
    }

    #[test]
    fn an_event_of_another_partition_names_its_owner() {
        let event = Event::new("alice", "m", Kind::Page, 1.0);
        assert_eq!(owner_elsewhere(&event, 0, 16), Some(5));
        assert_eq!(owner_elsewhere(&event, 5, 16), None);
    }
}
