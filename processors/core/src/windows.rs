//! Sliding event-time windows over sparse buckets of integer counters, and session windows.
//!
//! A [`SlidingCounts`] keeps one small vector of counters per bucket of `width` seconds
//! that has seen an event. A window of `n` buckets as of time `t` sums the `n` buckets
//! ending with the one that holds `t`: it covers between `(n - 1) * width` and
//! `n * width` seconds back from `t`. Adding is commutative, so the counters do not
//! depend on the order events arrive in.
//!
//! ```
//! use _core::windows::SlidingCounts;
//! let mut counts = SlidingCounts::new(3600, 24);
//! counts.add(10 * 3600 + 5, 0, 1);
//! counts.add(12 * 3600 + 9, 1, 2);
//! assert_eq!(counts.slot(12.0 * 3600.0 + 60.0, 2, 0, 1), 2);
//! assert_eq!(counts.slot(12.0 * 3600.0 + 60.0, 3, 0, 0), 1);
//! ```

use std::collections::BTreeMap;

/// Counters per bucket of `width` seconds; windows read up to `span` buckets.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SlidingCounts {
    pub width: i64,
    pub span: i64,
    /// Bucket index (`floor(time / width)`) to its counters, one per slot.
    pub buckets: BTreeMap<i64, Vec<i64>>,
}

/// The bucket index of an event time.
pub fn bucket_of(moment: f64, width: i64) -> i64 {
    (moment / width as f64).floor() as i64
}

impl SlidingCounts {
    pub fn new(width: i64, span: i64) -> Self {
        SlidingCounts {
            width,
            span,
            buckets: BTreeMap::new(),
        }
    }

    /// Add `amount` to counter `slot` of the bucket holding `moment`.
    pub fn add(&mut self, moment: i64, slot: usize, amount: i64) {
        let vector = self
            .buckets
            .entry(moment.div_euclid(self.width))
            .or_default();
        if vector.len() <= slot {
            vector.resize(slot + 1, 0);
        }
        vector[slot] += amount;
    }

    /// The buckets of the window of `buckets` buckets ending `skip` before `as_of`'s.
    fn range(&self, as_of: f64, buckets: i64, skip: i64) -> impl Iterator<Item = &Vec<i64>> {
        let last = bucket_of(as_of, self.width) - skip;
        self.buckets
            .range(last - buckets + 1..=last)
            .map(|(_, v)| v)
    }

    /// Counter `slot` summed over `buckets` buckets ending `skip` buckets before `as_of`'s.
    pub fn slot(&self, as_of: f64, buckets: i64, skip: i64, slot: usize) -> i64 {
        self.range(as_of, buckets, skip)
            .map(|vector| vector.get(slot).copied().unwrap_or(0))
            .sum()
    }

    /// The first `totals.len()` counters summed over the window, into `totals`.
    pub fn sum_into(&self, as_of: f64, buckets: i64, skip: i64, totals: &mut [i64]) {
        for vector in self.range(as_of, buckets, skip) {
            for (total, value) in totals.iter_mut().zip(vector) {
                *total += value;
            }
        }
    }

    /// How many buckets of the window have any counter above zero.
    pub fn active(&self, as_of: f64, buckets: i64, skip: i64) -> i64 {
        self.range(as_of, buckets, skip)
            .filter(|vector| vector.iter().any(|&value| value != 0))
            .count() as i64
    }

    /// The first time after `as_of` at which the window (with `buckets` and `skip`)
    /// changes with no new counts: a bucket holding counts (in `slot`, or any) slides out
    /// of it, or, with `skip`, into it. `inf` when none will.
    pub fn changes_at(&self, as_of: f64, buckets: i64, skip: i64, slot: Option<usize>) -> f64 {
        let first = bucket_of(as_of, self.width) + 1;
        let mut earliest: Option<i64> = None;
        for (&index, vector) in &self.buckets {
            let enters = index + skip;
            let moment = if enters >= first {
                enters
            } else {
                enters + buckets
            };
            if moment < first || earliest.is_some_and(|e| moment >= e) {
                continue;
            }
            let counted = match slot {
                None => vector.iter().any(|&value| value != 0),
                Some(slot) => vector.get(slot).is_some_and(|&value| value != 0),
            };
            if counted {
                earliest = Some(moment);
            }
        }
        earliest.map_or(f64::INFINITY, |e| (e * self.width) as f64)
    }

    /// Drop the buckets no window as of `as_of` or later can reach; they are returned.
    pub fn prune(&mut self, as_of: f64) -> BTreeMap<i64, Vec<i64>> {
        let oldest = bucket_of(as_of, self.width) - self.span;
        if self
            .buckets
            .first_key_value()
            .is_none_or(|(&first, _)| first > oldest)
        {
            return BTreeMap::new();
        }
        let kept = self.buckets.split_off(&(oldest + 1));
        std::mem::replace(&mut self.buckets, kept)
    }

    /// Cut each bucket's trailing counters at zero, and drop the buckets left with none:
    /// the form a state row keeps them in (no window reads a zero).
    pub fn trim(&mut self) {
        let mut emptied = false;
        for vector in self.buckets.values_mut() {
            let end = vector.iter().rposition(|&v| v != 0).map_or(0, |i| i + 1);
            vector.truncate(end);
            emptied |= end == 0;
        }
        if emptied {
            self.buckets.retain(|_, vector| !vector.is_empty());
        }
    }

    /// Add every counter of `other` (same width) into this one.
    pub fn merge(&mut self, other: &SlidingCounts) {
        for (&index, vector) in &other.buckets {
            for (slot, &value) in vector.iter().enumerate() {
                if value != 0 {
                    self.add(index * self.width, slot, value);
                }
            }
        }
    }
}

/// One session: its first and last event time, its event count and an OR of flags.
pub type Session = [i64; 4];

/// Session windows: runs of events with gaps shorter than `gap` seconds.
///
/// Inserting an event extends, creates or joins sessions, so the result does not depend
/// on arrival order.
///
/// ```
/// use _core::windows::Sessions;
/// let mut sessions = Sessions::new(1800);
/// let started: Vec<bool> = [0, 600, 5000, 2000].iter().map(|&t| sessions.add(t, 0)).collect();
/// assert_eq!(started, [true, false, true, false]);
/// assert_eq!(sessions.items, vec![[0, 2000, 3, 0], [5000, 5000, 1, 0]]);
/// assert!(sessions.add(3500, 0));
/// assert_eq!(sessions.items, vec![[0, 5000, 5, 0]]);
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sessions {
    pub gap: i64,
    pub items: Vec<Session>,
}

impl Sessions {
    pub fn new(gap: i64) -> Self {
        Sessions {
            gap,
            items: Vec::new(),
        }
    }

    /// Insert one event; whether the sessions' starts changed (a new session, sessions
    /// joined, or one starting earlier).
    pub fn add(&mut self, moment: i64, flags: i64) -> bool {
        self.insert([moment, moment, 1, flags])
    }

    /// Insert a session, joining every session it comes within `gap` of; whether the
    /// sessions' starts changed.
    pub fn insert(&mut self, session: Session) -> bool {
        let [mut start, mut end, mut events, mut flags] = session;
        let mut kept: Vec<Session> = Vec::with_capacity(self.items.len() + 1);
        let mut joined: Vec<i64> = Vec::new();
        for other in &self.items {
            if other[0] - self.gap < end && start < other[1] + self.gap {
                joined.push(other[0]);
                start = start.min(other[0]);
                end = end.max(other[1]);
                events += other[2];
                flags |= other[3];
            } else {
                kept.push(*other);
            }
        }
        kept.push([start, end, events, flags]);
        kept.sort_unstable();
        self.items = kept;
        joined != [start]
    }

    /// Insert every session of `other`.
    pub fn merge(&mut self, other: &Sessions) {
        for session in &other.items {
            self.insert(*session);
        }
    }

    /// Drop sessions that ended more than `gap` before `before`; none can join them.
    pub fn prune(&mut self, before: f64) {
        let gap = self.gap;
        self.items.retain(|s| (s[1] + gap) as f64 >= before);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_sums_the_buckets_ending_with_its_own() {
        let mut counts = SlidingCounts::new(60, 10);
        counts.add(0, 0, 1);
        counts.add(130, 1, 2);
        counts.add(185, 0, 1);
        assert_eq!(counts.slot(190.0, 2, 0, 0), 1); // buckets 2 and 3
        assert_eq!(counts.slot(190.0, 4, 0, 0), 2); // buckets 0 to 3
        assert_eq!(counts.slot(190.0, 2, 1, 1), 2); // buckets 1 and 2
        assert_eq!(counts.active(190.0, 4, 0), 3);
        let mut totals = [0; 2];
        counts.sum_into(190.0, 4, 0, &mut totals);
        assert_eq!(totals, [2, 2]);
    }

    #[test]
    fn a_window_holds_exactly_its_own_buckets() {
        let mut counts = SlidingCounts::new(60, 10);
        counts.add(0, 0, 1); // bucket 0
        counts.add(185, 0, 1); // bucket 3
        assert_eq!(counts.slot(190.0, 3, 0, 0), 1); // buckets 1 to 3
        assert_eq!(counts.slot(190.0, 4, 0, 0), 2); // buckets 0 to 3
        assert_eq!(counts.slot(190.0, 2, 1, 0), 0); // buckets 1 and 2, skipping 3
        assert_eq!(counts.slot(179.9, 3, 0, 0), 1); // buckets 0 to 2
    }

    #[test]
    fn a_window_changes_when_a_bucket_with_counts_slides_out_or_in() {
        let mut counts = SlidingCounts::new(60, 10);
        counts.add(125, 0, 1); // bucket 2
        assert_eq!(counts.changes_at(130.0, 3, 0, None), 300.0); // leaves at bucket 5
        assert_eq!(counts.changes_at(250.0, 3, 0, None), 300.0); // from its last bucket
        assert_eq!(counts.changes_at(299.9, 3, 0, None), 300.0);
        assert_eq!(counts.changes_at(300.0, 3, 0, None), f64::INFINITY); // gone
        assert_eq!(counts.changes_at(130.0, 3, 2, None), 240.0); // enters at bucket 4
        assert_eq!(counts.changes_at(250.0, 3, 2, None), 420.0); // then leaves at 7
        assert_eq!(counts.changes_at(130.0, 3, 0, Some(1)), f64::INFINITY);
        assert_eq!(counts.changes_at(400.0, 3, 0, None), f64::INFINITY);
    }

    #[test]
    fn a_later_bucket_entering_comes_before_an_earlier_one_leaving() {
        // The previous week as of day 8 holds day 0, which leaves at day 14; day 3 enters
        // it at day 10, first.
        let day = 86_400;
        let mut days = SlidingCounts::new(day, 14);
        days.add(0, 0, 1);
        days.add(3 * day, 0, 1);
        assert_eq!(
            days.changes_at((8 * day) as f64, 7, 7, None),
            (10 * day) as f64
        );
        // A bucket ahead of the window's own enters it too.
        assert_eq!(days.changes_at(day as f64, 2, 0, None), (2 * day) as f64);
    }

    #[test]
    fn pruning_drops_exactly_the_buckets_no_window_can_reach() {
        let mut counts = SlidingCounts::new(60, 3);
        for moment in [0, 60, 120, 200] {
            counts.add(moment, 0, 1);
        }
        counts.prune(240.0); // bucket 4: windows of 3 buckets reach back to bucket 2
        assert_eq!(counts.buckets.keys().copied().collect::<Vec<_>>(), [2, 3]);
        counts.add(300, 0, 1); // bucket 5
        counts.add(480, 0, 1); // bucket 8
        counts.add(600, 0, 1); // bucket 10
        counts.prune(600.0); // windows reach back to bucket 8
        assert_eq!(counts.buckets.keys().copied().collect::<Vec<_>>(), [8, 10]);
    }

    #[test]
    fn trimming_keeps_exactly_the_counters_that_are_not_zero() {
        let mut counts = SlidingCounts::new(60, 3);
        counts.add(0, 2, 0);
        counts.add(60, 0, 1);
        counts.add(60, 3, 0);
        counts.add(120, 1, 2);
        counts.add(120, 1, -2);
        counts.trim();
        assert_eq!(counts.buckets, BTreeMap::from([(1, vec![1])]));
    }

    #[test]
    fn merging_adds_counter_by_counter() {
        let mut counts = SlidingCounts::new(60, 3);
        counts.add(200, 0, 1);
        let mut other = SlidingCounts::new(60, 3);
        other.add(200, 2, 5);
        other.add(10, 0, 2);
        counts.merge(&other);
        assert_eq!(counts.buckets[&3], vec![1, 0, 5]);
        assert_eq!(counts.buckets[&0], vec![2]);
    }

    #[test]
    fn events_exactly_a_gap_apart_start_separate_sessions() {
        let mut forward = Sessions::new(1800);
        assert!(forward.add(0, 0));
        assert!(forward.add(1800, 0));
        let mut backward = Sessions::new(1800);
        assert!(backward.add(1800, 0));
        assert!(backward.add(0, 0));
        assert_eq!(forward.items, vec![[0, 0, 1, 0], [1800, 1800, 1, 0]]);
        assert_eq!(forward, backward);
        assert!(forward.add(1799, 0)); // joins both: the second start goes
        assert_eq!(forward.items, vec![[0, 1800, 3, 0]]);
    }

    #[test]
    fn sessions_do_not_depend_on_arrival_order_and_prune_what_cannot_join() {
        let moments = [0, 600, 5000, 2000, 3500, 9000];
        let mut forward = Sessions::new(1800);
        let mut backward = Sessions::new(1800);
        for (index, moment) in moments.iter().enumerate() {
            forward.add(*moment, index as i64 % 2);
        }
        for (index, moment) in moments.iter().enumerate().rev() {
            backward.add(*moment, index as i64 % 2);
        }
        assert_eq!(forward, backward);
        assert_eq!(forward.items, vec![[0, 5000, 5, 1], [9000, 9000, 1, 1]]);
        forward.prune(6800.0); // the first ended exactly a gap before: kept
        assert_eq!(forward.items.len(), 2);
        forward.prune(6800.1);
        assert_eq!(forward.items, vec![[9000, 9000, 1, 1]]);
    }
}
