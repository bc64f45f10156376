//! Point-in-time training examples for the predictions, labelled when their horizon has
//! passed.
//!
//! At every UTC midnight `D` of event time, each live user takes a *pending* example: the
//! predictions made from their state then. Its `purchase_30d` label is an order on a day
//! in `[D, D + 30 d)`; its `churn_90d` label no behavioural event in `[D, D + 90 d)` and
//! its `revenue_90d` label the revenue of orders on days in `[D, D + 90 d)`. Labels are
//! given at the UTC midnights of every [`LABEL_EVERY_DAYS`]th day (days since the epoch),
//! the first on or after the horizon, from the day buckets, so later events change no
//! label; the pending example is dropped once its 90-day labels are out.
//!
//! A user's timer fires at those midnights only, every user's together; any event or
//! timer of theirs first takes the snapshots of the midnights since their latest, from
//! the state they had then (nothing moved it in between), so a snapshot holds exactly
//! the events before its midnight. The predictions are those of the model in force when
//! the snapshot is taken, at most [`LABEL_EVERY_DAYS`] days after its midnight (before
//! any of its labels is out). The trainer learns a labelling midnight's examples as the
//! workers produce them, in order of snapshot day, so that its order does not follow
//! how active a user is.
//!
//! The inputs of an example are not kept with it: every input is a whole-day quantity, so
//! they are computed when its label is, from the profile and the day buckets the profile
//! let go of after its 30 days, which are kept while examples are pending (127 days: the
//! longest horizon, a 30-day window before it and the wait for the labelling midnight).
//!
//! ```
//! use _core::events::{Event, Kind};
//! use _core::examples::Examples;
//! use _core::profile::{Profile, DAY};
//! let mut profile = Profile::default();
//! profile.apply(&Event::new("u", "p", Kind::Page, (9 * DAY) as f64));
//! let mut examples = Examples::default();
//! examples.take(&profile, 10, [f64::NAN; 3]);
//! profile.apply(&Event { value: 20.0, ..Event::new("u", "m", Kind::Order, (12 * DAY) as f64) });
//! let matured = examples.mature("u", &profile, 40);
//! assert_eq!((matured[0].prediction, matured[0].label), (0, 1.0));
//! assert_eq!(matured[0].inputs[8], 1.0); // events_lifetime: the page view before day 10
//! assert_eq!(examples.pending.len(), 1); // the 90-day labels are still to come
//! ```

use std::collections::BTreeMap;

use crate::msgpack::Pack;

use crate::events::Kind;
use crate::features::rfm;
use crate::predictions::{HORIZON_DAYS, INPUTS, PREDICTIONS};
use crate::profile::{kind_slot, Profile, DAY, EVENTS};
use crate::windows::SlidingCounts;

/// The longest horizon: a pending example is dropped once it has passed.
const LONGEST_DAYS: i64 = 90;

/// Labels are given at the UTC midnights of the days since the epoch this divides (the
/// first such midnight on or after an example's horizon), every user's together.
pub const LABEL_EVERY_DAYS: i64 = 7;

/// How many days of day buckets are kept for the examples' inputs and labels: the
/// longest horizon, a 30-day window before it, and the wait for the labelling midnight.
pub const HISTORY_DAYS: i64 = LONGEST_DAYS + 30 + LABEL_EVERY_DAYS;

/// The UTC day whose midnight labels an example whose horizon is the start of `day`: the
/// first day on or after it that [`LABEL_EVERY_DAYS`] divides.
///
/// ```
/// use _core::examples::labelled_on;
/// assert_eq!((labelled_on(14), labelled_on(15), labelled_on(21)), (14, 21, 21));
/// ```
pub fn labelled_on(day: i64) -> i64 {
    day + (LABEL_EVERY_DAYS - day.rem_euclid(LABEL_EVERY_DAYS)) % LABEL_EVERY_DAYS
}

/// A snapshot waiting for its labels; two are equal when their days, labels sent and
/// predictions are (a gated prediction, NaN, equals another).
#[derive(Clone, Debug)]
pub struct Pending {
    /// The UTC day it was taken at the start of.
    pub day: i64,
    /// The predictions made then, NaN for a gated one.
    pub predicted: [f32; PREDICTIONS.len()],
    /// Whether the 30-day label went out already.
    pub early_done: bool,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Pending) -> bool {
        let same = |(a, b): (&f32, &f32)| a == b || (a.is_nan() && b.is_nan());
        self.day == other.day
            && self.early_done == other.early_done
            && self.predicted.iter().zip(&other.predicted).all(same)
    }
}

impl Pending {
    pub fn new(day: i64, predicted: [f32; PREDICTIONS.len()]) -> Self {
        Pending {
            day,
            predicted,
            early_done: false,
        }
    }
}

/// A user's pending examples and what their inputs are computed from.
#[derive(Clone, Debug, PartialEq)]
pub struct Examples {
    /// By day, ascending.
    pub pending: Vec<Pending>,
    /// The profile's day buckets older than its 30 days, up to [`HISTORY_DAYS`] back,
    /// kept from the first pending example on (counters up to `EVENTS`).
    pub history: SlidingCounts,
    /// The latest UTC day with a behavioural event that neither `history` nor the
    /// profile's day buckets hold any more.
    pub before: Option<i64>,
    /// When the user's timer is next due for anything but a snapshot (their rules,
    /// clustering features or expiry), as of their latest evaluation: `None` while not
    /// known, `Some(None)` for never. A midnight before it only takes a snapshot.
    pub others_due: Option<Option<i64>>,
}

impl Default for Examples {
    fn default() -> Self {
        Examples {
            pending: Vec::new(),
            history: SlidingCounts::new(DAY, HISTORY_DAYS),
            before: None,
            others_due: None,
        }
    }
}

impl Examples {
    /// The snapshot taken at the UTC midnight starting `day` of a user whose state is
    /// `profile`, with the predictions made then (NaN while gated).
    pub fn take(&mut self, profile: &Profile, day: i64, predicted: [f64; PREDICTIONS.len()]) {
        if self.pending.last().is_some_and(|last| last.day >= day) {
            return; // taken already
        }
        if self.pending.is_empty() {
            *self = Examples {
                before: profile.last_seen.map(|moment| moment.div_euclid(DAY)),
                others_due: self.others_due,
                ..Examples::default()
            };
        }
        self.pending
            .push(Pending::new(day, predicted.map(|v| v as f32)));
    }

    /// The first UTC day whose snapshot is still to take for a user evaluated as of
    /// `as_of`: the day after it and after the latest taken.
    ///
    /// ```
    /// use _core::examples::Examples;
    /// use _core::profile::{Profile, DAY};
    /// let mut examples = Examples::default();
    /// assert_eq!(examples.untaken(3.5 * DAY as f64), 4);
    /// examples.take(&Profile::default(), 5, [f64::NAN; 3]);
    /// assert_eq!(examples.untaken(3.5 * DAY as f64), 6);
    /// ```
    pub fn untaken(&self, as_of: f64) -> i64 {
        let after = as_of.div_euclid(DAY as f64) as i64 + 1;
        self.pending
            .last()
            .map_or(after, |last| after.max(last.day + 1))
    }

    /// Keep the day buckets a profile pruned at `as_of` while examples are pending, and
    /// let go of those older than [`HISTORY_DAYS`].
    pub fn keep(&mut self, dropped: BTreeMap<i64, Vec<i64>>, as_of: f64) {
        if self.pending.is_empty() {
            return;
        }
        for (day, counts) in dropped {
            for (slot, &count) in counts.iter().enumerate().take(EVENTS + 1) {
                if count != 0 {
                    self.history.add(day * DAY, slot, count);
                }
            }
        }
        for (day, counts) in self.history.prune(as_of) {
            if counts.get(EVENTS).is_some_and(|&events| events != 0) {
                self.before = self.before.max(Some(day));
            }
        }
    }

    /// Another id's pending examples and history taken in (a merge): those of days not
    /// pending already.
    pub fn absorb(&mut self, other: &Examples) {
        if other.pending.is_empty() {
            return;
        }
        if self.pending.is_empty() {
            *self = other.clone();
            return;
        }
        for theirs in &other.pending {
            if !self.pending.iter().any(|mine| mine.day == theirs.day) {
                self.pending.push(theirs.clone());
            }
        }
        self.pending.sort_by_key(|p| p.day);
        self.history.merge(&other.history);
        self.before = self.before.max(other.before);
    }

    /// The examples whose horizon `today` (a UTC day) has reached, labelled from
    /// `profile` and the day buckets (later events change no label); pending examples
    /// with every label out are dropped.
    pub fn mature(&mut self, user_id: &str, profile: &Profile, today: i64) -> Vec<Example> {
        let mut matured = Vec::new();
        for at in 0..self.pending.len() {
            let p = &self.pending[at];
            let early = !p.early_done && today >= p.day + HORIZON_DAYS[0];
            let late = today >= p.day + LONGEST_DAYS;
            if !early && !late {
                continue;
            }
            let inputs = self.inputs(profile, p.day).map(|v| v as f32);
            let example = |prediction: usize, label: f64| Example {
                user_id: user_id.to_string(),
                prediction,
                day: p.day,
                matured: today,
                inputs,
                predicted: (!p.predicted[prediction].is_nan()).then_some(p.predicted[prediction]),
                label,
            };
            let revenue = |days: i64| -> (bool, i64) {
                let mut ordered = profile.purchase_days.range(p.day..p.day + days).peekable();
                let any = ordered.peek().is_some();
                (any, ordered.map(|(_, cents)| cents).sum())
            };
            if early {
                let (ordered, _) = revenue(HORIZON_DAYS[0]);
                matured.push(example(0, f64::from(u8::from(ordered))));
            }
            if late {
                let active = self.behaved(profile, p.day, p.day + LONGEST_DAYS);
                matured.push(example(1, f64::from(u8::from(!active))));
                let (_, cents) = revenue(HORIZON_DAYS[2]);
                matured.push(example(2, cents as f64 / 100.0));
            }
            self.pending[at].early_done = true;
        }
        self.pending.retain(|p| today < p.day + LONGEST_DAYS);
        if self.pending.is_empty() {
            *self = Examples::default();
        }
        matured
    }

    /// Whether the user had a behavioural event on a UTC day in `[from, to)`, which the
    /// day buckets hold from the first pending example on.
    fn behaved(&self, profile: &Profile, from: i64, to: i64) -> bool {
        [&profile.days.buckets, &self.history.buckets]
            .iter()
            .flat_map(|b| b.range(from..to))
            .any(|(_, counts)| counts.get(EVENTS).is_some_and(|&n| n != 0))
    }

    /// The [`INPUTS`] as of the UTC midnight starting `day`, from the events before it:
    /// what `predictions::inputs` gives for a reading at that midnight.
    pub fn inputs(&self, profile: &Profile, day: i64) -> [f64; INPUTS.len()] {
        let buckets = [&profile.days.buckets, &self.history.buckets];
        let count = |from: i64, to: i64, slot: usize| -> i64 {
            buckets
                .iter()
                .flat_map(|b| b.range(from..to))
                .map(|(_, counts)| counts.get(slot).copied().unwrap_or(0))
                .sum()
        };
        let slot = |kind: Kind| kind_slot(kind).expect("a counted kind");
        let month = day - 29;
        let cents =
            |from: i64| -> i64 { profile.purchase_days.range(from..day).map(|(_, c)| c).sum() };
        let (frequency, recency, age, monetary) = rfm(profile.purchase_days.range(..day), day);
        let last_event = buckets
            .iter()
            .filter_map(|b| {
                b.range(..day)
                    .rev()
                    .find(|(_, counts)| counts.get(EVENTS).is_some_and(|&n| n != 0))
                    .map(|(d, _)| *d)
            })
            .chain(self.before.filter(|&d| d < day))
            .max();
        let since = |then: Option<i64>| then.map(|d| (day - d).max(0));
        let tenure = since(profile.first_seen.map(|t| t.div_euclid(DAY))).unwrap_or(0);
        let last_order = profile
            .purchase_days
            .range(..day)
            .next_back()
            .map(|(d, _)| *d);
        [
            (profile.orders - count(day, i64::MAX, slot(Kind::Order))) as f64,
            cents(i64::MIN) as f64 / 100.0,
            frequency,
            recency,
            age,
            monetary,
            count(month, day, slot(Kind::Order)) as f64,
            cents(month) as f64 / 100.0,
            (profile.events - count(day, i64::MAX, EVENTS)) as f64,
            count(month, day, slot(Kind::Page)) as f64,
            count(month, day, slot(Kind::ProductViewed)) as f64,
            count(month, day, slot(Kind::CartAdd)) as f64,
            since(last_event).unwrap_or(0) as f64,
            tenure as f64,
            since(last_order).unwrap_or(tenure) as f64,
        ]
    }
}

/// A labelled example: the prediction (by index), the inputs and the prediction made at
/// its snapshot day, the day whose midnight labelled it, and the outcome.
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    pub user_id: String,
    pub prediction: usize,
    pub day: i64,
    pub matured: i64,
    pub inputs: [f32; INPUTS.len()],
    pub predicted: Option<f32>,
    pub label: f64,
}

/// One message of the examples topic holding `examples`: a msgpack map naming the inputs
/// and holding one row per example, `[user_id, prediction, day, matured, inputs, predicted,
/// label]` (`predicted` nil for a gated prediction); read back by `processors.examples`.
pub fn pack(examples: &[Example]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + examples.len() * (48 + 5 * INPUTS.len()));
    out.map(2);
    out.text("inputs");
    out.array(INPUTS.len());
    for name in INPUTS {
        out.text(name);
    }
    out.text("rows");
    out.array(examples.len());
    for example in examples {
        out.array(7);
        out.text(&example.user_id);
        out.text(PREDICTIONS[example.prediction]);
        out.int(example.day);
        out.int(example.matured);
        out.array(INPUTS.len());
        for value in example.inputs {
            out.float32(value);
        }
        match example.predicted {
            None => out.nil(),
            Some(value) => out.float32(value),
        }
        out.float(example.label);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Event;
    use crate::features::Reading;
    use crate::profile::CART_ABANDONMENT_AFTER;

    fn at(day: i64, second: i64) -> f64 {
        (day * DAY + second) as f64
    }

    fn order(day: i64, value: f64) -> Event {
        let order = Event::new("u", &format!("o{day}"), Kind::Order, at(day, 3600));
        Event { value, ..order }
    }

    #[test]
    fn labels_count_whole_days_from_the_snapshot_on() {
        let mut profile = Profile::default();
        profile.apply(&order(9, 5.0));
        let mut examples = Examples::default();
        examples.take(&profile, 10, [0.25, f64::NAN, 3.0]);
        profile.apply(&Event::new("u", "p", Kind::Page, at(10, 0)));
        for (day, value) in [(39, 7.5), (40, 100.0), (99, 1.0)] {
            profile.apply(&order(day, value));
        }
        assert!(examples.mature("u", &profile, 39).is_empty());
        let early = examples.mature("u", &profile, 40);
        assert_eq!(early.len(), 1);
        assert_eq!((early[0].label, early[0].predicted), (1.0, Some(0.25)));
        assert!(examples.mature("u", &profile, 41).is_empty());
        let late = examples.mature("u", &profile, 100);
        let labels: Vec<_> = late
            .iter()
            .map(|e| (e.prediction, e.label, e.predicted))
            .collect();
        // an event on day 10 or later: not churned; orders of days 39, 40 and 99
        assert_eq!(labels, [(1, 0.0, None), (2, 108.5, Some(3.0))]);
        assert!(examples.pending.is_empty());
        assert_eq!(examples, Examples::default()); // nothing kept once nothing is pending
    }

    #[test]
    fn a_user_gone_quiet_churns() {
        let mut profile = Profile::default();
        profile.apply(&Event::new("u", "p", Kind::Page, at(10, 86_399)));
        let mut examples = Examples::default();
        examples.take(&profile, 11, [f64::NAN; 3]);
        let labels: Vec<_> = examples
            .mature("u", &profile, 101)
            .iter()
            .map(|e| (e.prediction, e.label))
            .collect();
        assert_eq!(labels, [(0, 0.0), (1, 1.0), (2, 0.0)]);
    }

    /// Events of every kind the inputs count on scattered days, a snapshot at every
    /// midnight, the profile pruned daily: the inputs computed when the labels are equal
    /// those a reading at each snapshot's midnight gave.
    #[test]
    fn inputs_computed_at_the_labels_equal_those_of_the_midnight() {
        let kinds = [
            Kind::Page,
            Kind::ProductViewed,
            Kind::CartAdd,
            Kind::Order,
            Kind::Search,
        ];
        let mut profile = Profile::default();
        let mut examples = Examples::default();
        let mut expected = BTreeMap::new();
        let mut compared = 0;
        for day in 0..260_i64 {
            if day >= 5 {
                let mut reading = Reading::new(&profile, at(day, 0), CART_ABANDONMENT_AFTER);
                expected.insert(
                    day,
                    crate::predictions::inputs(&mut reading).map(|v| v as f32),
                );
                for example in examples.mature("u", &profile, day) {
                    assert_eq!(
                        example.inputs, expected[&example.day],
                        "day {}",
                        example.day
                    );
                    compared += 1;
                }
                examples.take(&profile, day, [f64::NAN; 3]);
            }
            let quiet = (60..150).contains(&day) && day % 40 != 0;
            for n in 0..(day * 7 % 5) * i64::from(!quiet) {
                let kind = kinds[((day + n) % 5) as usize];
                let id = format!("e{day}-{n}");
                let event = Event::new("u", &id, kind, at(day, 600 * n + 7));
                profile.apply(&Event {
                    value: (day % 13) as f64 + 0.25,
                    ..event
                });
            }
            let dropped = profile.prune(at(day, 86_000), &[]);
            examples.keep(dropped, at(day, 86_000));
        }
        assert!(compared > 400, "{compared} examples compared");
    }
}
