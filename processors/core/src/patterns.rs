//! Sequences and absence: conditions over the event times of a user's own events, exact
//! to the second, that time alone can flip.
//!
//! A sequence's steps and an absence's two events are computed traits the rules define
//! for them: a step keeps the seconds its events came at (a count per one-second
//! bucket, kept for `within + window`), `after` and `not` the latest time
//! (`last_time` over the whole lifetime).
//!
//! ```
//! use _core::patterns::completion;
//! use _core::buckets::Buckets;
//! use _core::computed::Cell;
//! let times = |seconds: &[i64]| -> Buckets {
//!     seconds.iter().map(|&s| (s, Cell::Count(1))).collect()
//! };
//! let (trial, cancelled) = (times(&[100, 500]), times(&[300, 900]));
//! // trial at 500 then cancelled at 900: within 400 seconds, completed at 900
//! assert_eq!(completion(&[&trial, &cancelled], 400, 1_000, 1_000.0), Some(900));
//! assert_eq!(completion(&[&trial, &cancelled], 399, 1_000, 1_000.0), Some(300));
//! assert_eq!(completion(&[&trial, &cancelled], 399, 1_000, 1_301.0), None);
//! ```

use crate::buckets::Buckets;
use crate::computed::{Cell, Computed};
use crate::profile::Profile;
use crate::timing::NEVER;

/// The steps (computed traits, by index) happened in order, each strictly after the one
/// before, the last at most `within` seconds after the first; true while that completion
/// lies within the last `window` seconds.
#[derive(Clone, Debug, PartialEq)]
pub struct Sequence {
    pub steps: Vec<usize>,
    pub within: i64,
    pub window: i64,
}

/// An `after` event with no `missing` event at or after it for `within` seconds; true
/// from then until the next `after` or `missing` event, or for `lasting` seconds.
#[derive(Clone, Debug, PartialEq)]
pub struct Absence {
    pub after: usize,
    pub missing: usize,
    pub within: i64,
    pub lasting: Option<i64>,
}

static NO_TIMES: Buckets = Buckets::new();

/// The latest completion, at or before `as_of` and within `window` seconds of it, of steps
/// whose event times are the keys of `steps` (in step order).
pub fn completion(steps: &[&Buckets], within: i64, window: i64, as_of: f64) -> Option<i64> {
    let (last_step, earlier) = steps.split_last()?;
    let last = as_of.floor() as i64;
    let earliest = (as_of - window as f64).floor() as i64 + 1;
    for &end in last_step.range(earliest..=last).map(|(t, _)| t).rev() {
        let mut moment = end;
        let chained =
            earlier.iter().rev().all(
                |times| match times.range(end - within..moment).next_back() {
                    Some((&earlier, _)) => {
                        moment = earlier;
                        true
                    }
                    None => false,
                },
            );
        if chained {
            return Some(end);
        }
    }
    None
}

fn times<'p>(computed: &[Computed], profile: &'p Profile, index: usize) -> &'p Buckets {
    match profile.computed.get(&computed[index].key) {
        Some(series) => &series.buckets,
        None => &NO_TIMES,
    }
}

fn latest(computed: &[Computed], profile: &Profile, index: usize) -> Option<i64> {
    times(computed, profile, index)
        .values()
        .filter_map(|cell| match cell {
            Cell::Latest(moment) => Some(*moment),
            _ => None,
        })
        .max()
}

impl Sequence {
    fn completed(&self, computed: &[Computed], profile: &Profile, as_of: f64) -> Option<i64> {
        let steps: Vec<&Buckets> = self
            .steps
            .iter()
            .map(|&index| times(computed, profile, index))
            .collect();
        completion(&steps, self.within, self.window, as_of)
    }

    /// Whether the sequence holds as of `as_of`.
    pub fn holds(&self, computed: &[Computed], profile: &Profile, as_of: f64) -> bool {
        self.completed(computed, profile, as_of).is_some()
    }

    /// When it next flips with no new events: its completion leaving the window.
    pub fn changes_at(&self, computed: &[Computed], profile: &Profile, as_of: f64) -> f64 {
        self.completed(computed, profile, as_of)
            .map_or(NEVER, |end| (end + self.window) as f64)
    }
}

impl Absence {
    /// The latest `after` event, when no `missing` event came at or after it.
    fn pending(&self, computed: &[Computed], profile: &Profile) -> Option<i64> {
        let after = latest(computed, profile, self.after)?;
        match latest(computed, profile, self.missing) {
            Some(missing) if missing >= after => None,
            _ => Some(after),
        }
    }

    /// Whether the absence holds as of `as_of`.
    pub fn holds(&self, computed: &[Computed], profile: &Profile, as_of: f64) -> bool {
        self.pending(computed, profile).is_some_and(|after| {
            let due = (after + self.within) as f64;
            due <= as_of
                && self
                    .lasting
                    .is_none_or(|lasting| as_of < due + lasting as f64)
        })
    }

    /// When it next flips with no new events: at the deadline, and when `lasting` ends.
    pub fn changes_at(&self, computed: &[Computed], profile: &Profile, as_of: f64) -> f64 {
        let Some(after) = self.pending(computed, profile) else {
            return NEVER;
        };
        let due = (after + self.within) as f64;
        [Some(due), self.lasting.map(|lasting| due + lasting as f64)]
            .into_iter()
            .flatten()
            .filter(|&moment| moment > as_of)
            .fold(NEVER, f64::min)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn times(seconds: &[i64]) -> Buckets {
        seconds.iter().map(|&s| (s, Cell::Count(1))).collect()
    }

    #[test]
    fn a_completion_holds_for_its_window_to_the_second() {
        let (start, end) = (times(&[100]), times(&[160]));
        let steps = [&start, &end];
        assert_eq!(completion(&steps, 60, 50, 160.0), Some(160));
        assert_eq!(completion(&steps, 60, 50, 209.5), Some(160));
        assert_eq!(completion(&steps, 60, 50, 210.0), None);
        assert_eq!(completion(&steps, 59, 50, 160.0), None);
        let same_second = [&start, &times(&[100])];
        assert_eq!(completion(&same_second, 60, 50, 120.0), None);
    }

    #[test]
    fn an_absence_holds_from_its_deadline_for_its_time() {
        use crate::events::{Event, Kind};
        let latest = |name: &str, key: &str| {
            Computed::from_json(&serde_json::json!({
                "names": [], "key": key,
                "select": {"events": [name], "pages": [], "any": false},
                "where": null, "aggregate": "last_time", "of": null, "window": null}))
            .unwrap()
        };
        let computed = [
            latest("Checkout Started", "a"),
            latest("Order Completed", "n"),
        ];
        let event = |name: &str, at: f64| Event {
            name: Some(name.into()),
            ..Event::new("u", "m", Kind::Other, at)
        };
        let absence = Absence {
            after: 0,
            missing: 1,
            within: 30,
            lasting: Some(10),
        };
        let mut profile = Profile::default();
        profile.fold(&event("Checkout Started", 100.0), &computed);
        let holds = |profile: &Profile, at: f64| absence.holds(&computed, profile, at);
        assert!(!holds(&profile, 129.9) && holds(&profile, 130.0) && holds(&profile, 139.9));
        assert!(!holds(&profile, 140.0));
        assert_eq!(absence.changes_at(&computed, &profile, 100.0), 130.0);
        assert_eq!(absence.changes_at(&computed, &profile, 130.0), 140.0);
        profile.fold(&event("Order Completed", 100.0), &computed);
        assert!(!holds(&profile, 135.0)); // at the same second, the order follows
    }
}
