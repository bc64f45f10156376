//! Computed traits: an aggregate of a user's own events (any `track` event, or named
//! `page`/`screen` calls), filtered by their properties, over an event-time window.
//!
//! A computed trait keeps one small cell per bucket of its window's width that holds a
//! counted event: per second for windows up to an hour, per minute up to 48 hours, per
//! UTC day beyond, one bucket for `lifetime`. A window of `n` buckets as of time `T`
//! reads the `n` buckets ending `skip` buckets before the one holding `T`, so
//! `window: 30d` reads the 30 days ending with `T`'s day and `between: [90d, 30d]` the 60
//! days before the 30 days ending with `T`'s. Every cell merges commutatively (integer
//! counts, sums in integer millionths, least and greatest values, first and last by time
//! then value), so the same events give the same value in any arrival order.
//!
//! ```
//! use _core::computed::Computed;
//! use _core::events::{Event, Kind};
//! use _core::profile::Profile;
//! use _core::traits::TraitValue;
//! let minutes = Computed::from_json(&serde_json::json!({
//!     "names": ["watch_minutes_30d"], "key": "k1",
//!     "select": {"events": ["Video Played"], "pages": [], "any": false},
//!     "where": null, "aggregate": "sum", "of": "properties.minutes",
//!     "window": {"width": 86400, "buckets": 30, "skip": 0}})).unwrap();
//! let mut profile = Profile::default();
//! let played = |id: &str, at: f64, minutes: f64| Event {
//!     name: Some("Video Played".into()),
//!     properties: vec![("properties.minutes".into(), TraitValue::Number(minutes))],
//!     ..Event::new("u1", id, Kind::Other, at)
//! };
//! profile.fold(&played("m1", 86_400.0, 12.5), std::slice::from_ref(&minutes));
//! profile.fold(&played("m2", 90_000.0, 30.0), std::slice::from_ref(&minutes));
//! let series = profile.computed.get(&minutes.key);
//! assert_eq!(minutes.value(series, 100_000.0), TraitValue::Number(42.5));
//! assert_eq!(minutes.value(series, 31.0 * 86_400.0), TraitValue::Number(0.0));
//! assert_eq!(minutes.changes_at(series, 100_000.0), 31.0 * 86_400.0);
//! ```

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use serde_json::Value;

use crate::buckets::Buckets;
use crate::events::{Event, Kind};
use crate::pyrepr::float_repr;
use crate::running::Running;
use crate::timing::NEVER;
use crate::traits::{TraitOp, TraitTest, TraitValue};
use crate::windows::bucket_of;

/// The most distinct values a `distinct_count` tells apart, and a cell of
/// `distinct_count` or `most_frequent` keeps: a count of 1,000 means 1,000 or more.
pub const MAX_DISTINCT: usize = 1_000;
/// The largest magnitude of a number that `sum`, `avg`, `min` and `max` take; larger
/// ones are left out as if they were not numbers.
pub const MAX_AMOUNT: f64 = 1e12;

/// How a computed trait folds the events it counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aggregate {
    Count,
    Sum,
    Avg,
    Min,
    Max,
    DistinctCount,
    MostFrequent,
    First,
    Last,
    FirstTime,
    LastTime,
}

const AGGREGATES: [(Aggregate, &str); 11] = [
    (Aggregate::Count, "count"),
    (Aggregate::Sum, "sum"),
    (Aggregate::Avg, "avg"),
    (Aggregate::Min, "min"),
    (Aggregate::Max, "max"),
    (Aggregate::DistinctCount, "distinct_count"),
    (Aggregate::MostFrequent, "most_frequent"),
    (Aggregate::First, "first"),
    (Aggregate::Last, "last"),
    (Aggregate::FirstTime, "first_time"),
    (Aggregate::LastTime, "last_time"),
];

impl Aggregate {
    /// The aggregate named `name` (`distinct_count`).
    pub fn parse(name: &str) -> Option<Aggregate> {
        AGGREGATES.iter().find(|(_, n)| *n == name).map(|(a, _)| *a)
    }

    /// Its code in state rows: its place in the list above.
    pub fn code(self) -> i64 {
        AGGREGATES.iter().position(|(a, _)| *a == self).unwrap_or(0) as i64
    }

    /// The aggregate of a state row's code.
    pub fn from_code(code: i64) -> Option<Aggregate> {
        usize::try_from(code)
            .ok()
            .and_then(|i| AGGREGATES.get(i))
            .map(|(a, _)| *a)
    }
}

/// `buckets` buckets of `width` seconds ending `skip` buckets before the one holding the
/// reading's time; a width of 0 is the whole lifetime, one bucket.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Window {
    pub width: i64,
    pub buckets: i64,
    pub skip: i64,
}

impl Window {
    /// The bucket an event time falls in.
    pub fn bucket(&self, moment: i64) -> i64 {
        if self.width == 0 {
            0
        } else {
            moment.div_euclid(self.width)
        }
    }

    /// The buckets the window reads as of `as_of`.
    pub fn range(&self, as_of: f64) -> RangeInclusive<i64> {
        if self.width == 0 {
            return i64::MIN..=i64::MAX;
        }
        let last = bucket_of(as_of, self.width) - self.skip;
        last - self.buckets + 1..=last
    }

    /// The moments a bucket enters and leaves the window.
    fn edges(&self, bucket: i64) -> [f64; 2] {
        if self.width == 0 {
            return [NEVER, NEVER];
        }
        let enters = (bucket + self.skip) * self.width;
        [enters as f64, (enters + self.buckets * self.width) as f64]
    }
}

/// Which calls a computed trait counts: `track` events by name (or every one with `any`)
/// and `page` or `screen` calls by name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Select {
    pub events: Vec<String>,
    pub any: bool,
    pub pages: Vec<String>,
}

impl Select {
    fn matches(&self, event: &Event) -> bool {
        let Some(name) = &event.name else {
            return false;
        };
        match event.kind {
            Kind::Page => self.pages.contains(name),
            Kind::Identify | Kind::Alias => false,
            _ => self.any || self.events.contains(name),
        }
    }
}

/// A condition over an event's properties (dotted paths from the message: `properties.plan`).
#[derive(Clone, Debug)]
pub enum Filter {
    All(Vec<Filter>),
    Any(Vec<Filter>),
    Not(Box<Filter>),
    Test { path: String, test: TraitTest },
}

impl Filter {
    /// The filter in its intermediate form (`{"property": path, "op": ..., "value": ...}`
    /// under `all`, `any` and `not`).
    pub fn from_json(value: &Value) -> Result<Filter, String> {
        let object = value
            .as_object()
            .ok_or("a property condition is an object")?;
        let parts = |key: &str| -> Result<Vec<Filter>, String> {
            object[key]
                .as_array()
                .ok_or(format!("{key} takes a list"))?
                .iter()
                .map(Filter::from_json)
                .collect()
        };
        if object.contains_key("all") {
            return Ok(Filter::All(parts("all")?));
        }
        if object.contains_key("any") {
            return Ok(Filter::Any(parts("any")?));
        }
        if let Some(part) = object.get("not") {
            return Ok(Filter::Not(Box::new(Filter::from_json(part)?)));
        }
        let path = object
            .get("property")
            .and_then(Value::as_str)
            .ok_or("a property condition names a property")?;
        Ok(Filter::Test {
            path: path.to_string(),
            test: test_of(object)?,
        })
    }

    /// Whether an event with these properties meets the filter.
    pub fn holds(&self, event: &Event) -> bool {
        match self {
            Filter::All(parts) => parts.iter().all(|p| p.holds(event)),
            Filter::Any(parts) => parts.iter().any(|p| p.holds(event)),
            Filter::Not(part) => !part.holds(event),
            Filter::Test { path, test } => test.holds(property(event, path), event.timestamp),
        }
    }
}

/// The test of a condition's intermediate form: `op`, `value` (one, or a list) and `case`.
pub fn test_of(object: &serde_json::Map<String, Value>) -> Result<TraitTest, String> {
    let op = object
        .get("op")
        .and_then(Value::as_str)
        .and_then(TraitOp::parse)
        .ok_or("unknown op")?;
    let values = match object.get("value") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items.iter().map(json_value).collect(),
        Some(one) => vec![json_value(one)],
    };
    let insensitive = object.get("case").and_then(Value::as_str) == Some("insensitive");
    TraitTest::new(op, values, insensitive)
}

fn json_value(value: &Value) -> TraitValue {
    match value {
        Value::Bool(flag) => TraitValue::Bool(*flag),
        Value::Number(number) => TraitValue::Number(number.as_f64().unwrap_or(f64::NAN)),
        Value::String(text) => TraitValue::Text(text.clone()),
        _ => TraitValue::Null,
    }
}

/// The value of the property at `path` the decoder kept from the event.
fn property<'e>(event: &'e Event, path: &str) -> Option<&'e TraitValue> {
    event
        .properties
        .iter()
        .find(|(name, _)| name == path)
        .map(|(_, value)| value)
}

/// What one bucket holds of the events it counted.
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    Count(i64),
    /// How many numbers, and their sum in integer millionths.
    Sum(i64, i64),
    Least(f64),
    Most(f64),
    /// Each value (as text) and how many events had it.
    Tally(BTreeMap<String, i64>),
    /// The value of the earliest (or latest) event, with its time.
    First(i64, TraitValue),
    Last(i64, TraitValue),
    Earliest(i64),
    Latest(i64),
}

impl Cell {
    /// Fold `other` (of the same aggregate) into this cell.
    pub fn merge(&mut self, other: &Cell) {
        match (self, other) {
            (Cell::Count(a), Cell::Count(b)) => *a += b,
            (Cell::Sum(n, total), Cell::Sum(m, more)) => {
                *n += m;
                *total = total.saturating_add(*more);
            }
            (Cell::Least(a), Cell::Least(b)) if b.total_cmp(a) == Ordering::Less => *a = *b,
            (Cell::Most(a), Cell::Most(b)) if b.total_cmp(a) == Ordering::Greater => *a = *b,
            (Cell::Tally(mine), Cell::Tally(theirs)) => {
                for (value, count) in theirs {
                    if let Some(kept) = mine.get_mut(value) {
                        *kept += count;
                    } else if mine.len() < MAX_DISTINCT {
                        mine.insert(value.clone(), *count);
                    }
                }
            }
            (Cell::First(t, v), Cell::First(u, w))
                if u.cmp(t).then_with(|| w.order(v)) == Ordering::Less =>
            {
                (*t, *v) = (*u, w.clone());
            }
            (Cell::Last(t, v), Cell::Last(u, w))
                if u.cmp(t).then_with(|| w.order(v)) == Ordering::Greater =>
            {
                (*t, *v) = (*u, w.clone());
            }
            (Cell::Earliest(a), Cell::Earliest(b)) => *a = (*a).min(*b),
            (Cell::Latest(a), Cell::Latest(b)) => *a = (*a).max(*b),
            _ => {}
        }
    }
}

/// A number's text as `distinct_count` and `most_frequent` compare values: whole numbers
/// below 1e15 as integers (`2`), others as Python writes floats (`2.5`, `1e+20`).
pub fn value_text(value: &TraitValue) -> Option<String> {
    Some(match value {
        TraitValue::Null => return None,
        TraitValue::Bool(flag) => flag.to_string(),
        TraitValue::Number(number) if number.fract() == 0.0 && number.abs() < 1e15 => {
            format!("{}", *number as i64)
        }
        TraitValue::Number(number) => float_repr(*number),
        TraitValue::Text(text) => text.clone(),
    })
}

/// A computed trait's key: the digest of its definition (the rules compiler writes 12
/// hex digits; at most 16 bytes of text), packed into a number that compares as the text.
///
/// ```
/// use _core::computed::Key;
/// let key = Key::parse("3f9a0c1d2e4b").unwrap();
/// assert_eq!(key.text(), "3f9a0c1d2e4b");
/// assert!(Key::parse("a").unwrap() < Key::parse("ab").unwrap());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(u128);

impl Key {
    pub fn parse(text: &str) -> Result<Key, String> {
        if text.is_empty() || text.len() > 16 || text.contains('\0') {
            return Err(format!(
                "a computed trait's key is 1 to 16 bytes of text: {text:?}"
            ));
        }
        let mut bytes = [0_u8; 16];
        bytes[..text.len()].copy_from_slice(text.as_bytes());
        Ok(Key(u128::from_be_bytes(bytes)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(self.bytes().as_slice()).into_owned()
    }

    /// The bytes of its text, without allocating: what a state row writes.
    pub fn bytes(&self) -> KeyBytes {
        let bytes = self.0.to_be_bytes();
        let length = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        KeyBytes(bytes, length)
    }
}

/// A key's text as bytes on the stack (see [`Key::bytes`]).
pub struct KeyBytes([u8; 16], usize);

impl KeyBytes {
    pub fn as_slice(&self) -> &[u8] {
        &self.0[..self.1]
    }
}

/// A computed trait's cells, one per bucket holding a counted event, and their running
/// merge over the window last read (not part of the state: a loaded series reads afresh).
#[derive(Clone, Debug)]
pub struct Series {
    pub aggregate: Aggregate,
    pub buckets: Buckets,
    running: Option<Running>,
}

impl PartialEq for Series {
    fn eq(&self, other: &Series) -> bool {
        self.aggregate == other.aggregate && self.buckets == other.buckets
    }
}

impl Series {
    pub fn new(aggregate: Aggregate) -> Series {
        Series {
            aggregate,
            buckets: Buckets::new(),
            running: None,
        }
    }

    /// Fold `cell` into the bucket `bucket`, and into the running merge when the bucket
    /// is one it covers.
    pub fn add(&mut self, bucket: i64, cell: &Cell) {
        let new_bucket = match self.buckets.get_mut(&bucket) {
            Some(kept) => {
                kept.merge(cell);
                false
            }
            None => {
                self.buckets.insert(bucket, cell.clone());
                true
            }
        };
        if let Some(running) = &mut self.running {
            if running.covered.contains(&bucket) {
                running.count(cell, new_bucket);
                if !running.exact() {
                    self.running = None;
                }
            }
        }
    }

    /// Fold every bucket of `other` (another id's) into this series.
    pub fn merge(&mut self, other: &Series) {
        for (bucket, cell) in other.buckets.iter() {
            self.add(*bucket, cell);
        }
    }

    /// Drop the buckets before `oldest`, and the running merge if it counted one of them.
    pub fn drop_before(&mut self, oldest: i64) {
        if self
            .buckets
            .first_key_value()
            .is_none_or(|(&first, _)| first >= oldest)
        {
            return;
        }
        let kept = self.buckets.split_off(&oldest);
        let dropped = std::mem::replace(&mut self.buckets, kept);
        let counted = |running: &Running| dropped.range(running.covered.clone()).next().is_some();
        if self.running.as_ref().is_some_and(counted) {
            self.running = None;
        }
    }

    /// The running merge, when it covers exactly `covered`.
    fn running(&self, covered: &RangeInclusive<i64>) -> Option<&Running> {
        self.running.as_ref().filter(|r| r.covered == *covered)
    }
}

/// One computed trait as the rules define it: `names` are what the rules file calls it
/// (none for a condition's own count), `key` identifies its definition in users' state.
#[derive(Clone, Debug)]
pub struct Computed {
    pub names: Vec<String>,
    pub key: Key,
    pub select: Select,
    pub filter: Option<Filter>,
    pub aggregate: Aggregate,
    pub of: Option<String>,
    pub window: Window,
}

fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

impl Computed {
    /// A computed trait from its intermediate form (see `processors.rules.ComputedTrait`).
    pub fn from_json(value: &Value) -> Result<Computed, String> {
        let object = value.as_object().ok_or("a computed trait is an object")?;
        let select = object.get("select").ok_or("select is required")?;
        let aggregate = object
            .get("aggregate")
            .and_then(Value::as_str)
            .and_then(Aggregate::parse)
            .ok_or("unknown aggregate")?;
        let window = match object.get("window") {
            None | Some(Value::Null) => Window {
                width: 0,
                buckets: 1,
                skip: 0,
            },
            Some(window) => {
                let number = |key: &str| window.get(key).and_then(Value::as_i64).unwrap_or(0);
                Window {
                    width: number("width"),
                    buckets: number("buckets"),
                    skip: number("skip"),
                }
            }
        };
        if window.width < 0 || window.buckets < 1 || window.skip < 0 {
            return Err("a window has a width, at least one bucket and no negative skip".into());
        }
        Ok(Computed {
            names: strings(object.get("names")),
            key: Key::parse(
                object
                    .get("key")
                    .and_then(Value::as_str)
                    .ok_or("key is required")?,
            )?,
            select: Select {
                events: strings(select.get("events")),
                any: select.get("any").and_then(Value::as_bool).unwrap_or(false),
                pages: strings(select.get("pages")),
            },
            filter: match object.get("where") {
                None | Some(Value::Null) => None,
                Some(filter) => Some(Filter::from_json(filter)?),
            },
            aggregate,
            of: object.get("of").and_then(Value::as_str).map(str::to_string),
            window,
        })
    }

    /// The cell `event` adds, `None` when the trait does not count it: another call, a
    /// filter it fails, or (for aggregates of a property) no usable value there.
    pub fn cell_of(&self, event: &Event) -> Option<Cell> {
        if !self.select.matches(event) || self.filter.as_ref().is_some_and(|f| !f.holds(event)) {
            return None;
        }
        let moment = event.timestamp.trunc() as i64;
        let value = self.of.as_deref().and_then(|path| property(event, path));
        let number = match value {
            Some(TraitValue::Number(n)) if n.is_finite() && n.abs() <= MAX_AMOUNT => Some(*n),
            _ => None,
        };
        Some(match self.aggregate {
            Aggregate::Count => Cell::Count(1),
            Aggregate::Sum | Aggregate::Avg => {
                Cell::Sum(1, (number? * 1e6).round_ties_even() as i64)
            }
            Aggregate::Min => Cell::Least(number?),
            Aggregate::Max => Cell::Most(number?),
            Aggregate::DistinctCount | Aggregate::MostFrequent => {
                Cell::Tally(BTreeMap::from([(value_text(value?)?, 1)]))
            }
            Aggregate::First => {
                Cell::First(moment, value.filter(|v| **v != TraitValue::Null)?.clone())
            }
            Aggregate::Last => {
                Cell::Last(moment, value.filter(|v| **v != TraitValue::Null)?.clone())
            }
            Aggregate::FirstTime => Cell::Earliest(moment),
            Aggregate::LastTime => Cell::Latest(moment),
        })
    }

    /// The value as of `as_of`, as [`Computed::value`] gives it, from the series' running
    /// merge when it covers this window (see [`Computed::refresh`]).
    pub fn read(&self, series: Option<&Series>, as_of: f64) -> TraitValue {
        let covered = self.window.range(as_of);
        let running = series
            .filter(|s| s.aggregate == self.aggregate)
            .and_then(|s| s.running(&covered));
        match running {
            Some(running) => self.value_of(running.merged.as_ref()),
            None => self.value(series, as_of),
        }
    }

    /// Bring `series`' running merge to the window as of `as_of`: slid there from where
    /// it was, or merged afresh.
    pub fn refresh(&self, series: &mut Series, as_of: f64) {
        if series.aggregate != self.aggregate {
            return;
        }
        let covered = self.window.range(as_of);
        if series.running(&covered).is_some() {
            return; // the window has not moved since the last refresh
        }
        let slid = series
            .running
            .take()
            .and_then(|running| running.slide(&series.buckets, covered.clone()));
        series.running = Some(slid.unwrap_or_else(|| {
            let cells = series.buckets.range(covered.clone()).map(|(_, c)| c);
            Running::over(covered, cells)
        }));
    }

    /// The trait's value as of `as_of` over `series` (the user's cells): with no event in
    /// the window, 0 for `count`, `sum` and `distinct_count`, null for the others.
    pub fn value(&self, series: Option<&Series>, as_of: f64) -> TraitValue {
        let Some(series) = series.filter(|s| s.aggregate == self.aggregate) else {
            return self.empty();
        };
        let covered = self.window.range(as_of);
        let cells = series.buckets.range(covered.clone()).map(|(_, c)| c);
        self.value_of(Running::over(covered, cells).merged.as_ref())
    }

    /// The value of the merge of the window's cells (`None`: no event in the window).
    fn value_of(&self, merged: Option<&Cell>) -> TraitValue {
        let number = TraitValue::Number;
        let Some(cell) = merged else {
            return self.empty();
        };
        match (self.aggregate, cell) {
            (Aggregate::Count, Cell::Count(n)) => number(*n as f64),
            (Aggregate::Sum, Cell::Sum(_, total)) => number(*total as f64 / 1e6),
            (Aggregate::Avg, Cell::Sum(numbers, total)) => {
                number(*total as f64 / 1e6 / *numbers as f64)
            }
            (Aggregate::Min | Aggregate::Max, Cell::Least(v) | Cell::Most(v)) => number(*v),
            (Aggregate::DistinctCount, Cell::Tally(values)) => number(values.len() as f64),
            (Aggregate::MostFrequent, Cell::Tally(values)) => {
                let mut best: Option<(&String, i64)> = None;
                for (value, count) in values {
                    if best.is_none_or(|(_, most)| *count > most) {
                        best = Some((value, *count));
                    }
                }
                best.map_or(TraitValue::Null, |(v, _)| TraitValue::Text(v.clone()))
            }
            (Aggregate::First | Aggregate::Last, Cell::First(_, v) | Cell::Last(_, v)) => v.clone(),
            (Aggregate::FirstTime | Aggregate::LastTime, Cell::Earliest(t) | Cell::Latest(t)) => {
                TraitValue::Text(iso_text(*t))
            }
            _ => self.empty(),
        }
    }

    /// The value with no event in the window: 0 for `count`, `sum` and `distinct_count`,
    /// null for the others.
    fn empty(&self) -> TraitValue {
        match self.aggregate {
            Aggregate::Count | Aggregate::Sum | Aggregate::DistinctCount => TraitValue::Number(0.0),
            _ => TraitValue::Null,
        }
    }

    /// The first moment after `as_of` at which the value may change with no new events: a
    /// bucket holding an event entering or leaving the window; [`NEVER`] for `lifetime`.
    pub fn changes_at(&self, series: Option<&Series>, as_of: f64) -> f64 {
        let Some(series) = series.filter(|_| self.window.width > 0) else {
            return NEVER;
        };
        // the oldest bucket in the window leaves first; the first bucket after the window's
        // end (a `between` window's) enters first; the buckets before the window are gone
        let range = self.window.range(as_of);
        let last = *range.end();
        let leaving = series.buckets.range(range).next().map(|(b, _)| *b);
        let entering = series.buckets.range(last + 1..).next().map(|(b, _)| *b);
        [
            leaving.map(|b| self.window.edges(b)[1]),
            entering.map(|b| self.window.edges(b)[0]),
        ]
        .into_iter()
        .flatten()
        .filter(|&moment| moment > as_of)
        .fold(NEVER, f64::min)
    }

    /// The first moment after `as_of` at which `test` of the value may change its truth
    /// with no new events, early but never late; [`NEVER`] when time cannot change it.
    ///
    /// A count or a sum over a window ending now only loses its oldest cells as time
    /// passes, so the moment is exact: the leaving of the cell whose loss flips the test.
    /// Otherwise it is the value's next change, as [`Computed::changes_at`] gives it (a
    /// day's bucket at most once a day: cheaper to look again then than to read ahead at
    /// every event). A test of a time (`within_last`) also flips between those changes:
    /// the caller adds [`TraitTest::changes_at`].
    pub fn flips_at(
        &self,
        series: Option<&Series>,
        as_of: f64,
        test: &TraitTest,
        value: &TraitValue,
    ) -> f64 {
        let Some(series) = series.filter(|s| s.aggregate == self.aggregate) else {
            return NEVER;
        };
        if test.duration().is_some() || self.window.width == 0 {
            return self.changes_at(Some(series), as_of);
        }
        let now = test.holds(Some(value), as_of);
        if self.settled(test, now) {
            return NEVER;
        }
        if let Some(moment) = self.falling_flip(series, as_of, test, now) {
            return moment;
        }
        self.changes_at(Some(series), as_of)
    }

    /// Whether time alone keeps `test` as it is (`now`): a count or a distinct count over
    /// a window ending now only falls and a minimum only rises (or ends, null), so none of
    /// them starts to exceed a bound; a maximum only falls, so it stops at none.
    fn settled(&self, test: &TraitTest, now: bool) -> bool {
        let above = matches!(test.op, TraitOp::Gt | TraitOp::Ge);
        let below = matches!(test.op, TraitOp::Lt | TraitOp::Le);
        let falling = matches!(
            self.aggregate,
            Aggregate::Count | Aggregate::DistinctCount | Aggregate::Max
        );
        let ending = self.window.skip == 0;
        ending && !now && ((falling && above) || (self.aggregate == Aggregate::Min && below))
    }

    /// [`Computed::flips_at`] for a count or a sum over a window that ends now, walking
    /// its cells from the oldest; `None` for other windows and aggregates, and for a sum
    /// that does not fit in integer millionths.
    fn falling_flip(
        &self,
        series: &Series,
        as_of: f64,
        test: &TraitTest,
        now: bool,
    ) -> Option<f64> {
        let counted = |cell: &Cell| match cell {
            Cell::Count(n) => Some(*n),
            Cell::Sum(_, millionths) => Some(*millionths),
            _ => None,
        };
        if self.window.skip != 0 || !matches!(self.aggregate, Aggregate::Count | Aggregate::Sum) {
            return None;
        }
        let cells = || {
            let window = series.buckets.range(self.window.range(as_of));
            window.filter_map(|(bucket, cell)| Some((*bucket, counted(cell)?)))
        };
        let mut total = cells().try_fold(0_i64, |sum, (_, n)| sum.checked_add(n))?;
        let scale = if self.aggregate == Aggregate::Sum {
            1e6
        } else {
            1.0
        };
        for (bucket, n) in cells() {
            total -= n;
            let value = TraitValue::Number(total as f64 / scale);
            let moment = self.window.edges(bucket)[1];
            if test.holds(Some(&value), moment) != now {
                return Some(moment);
            }
        }
        Some(NEVER)
    }

    /// The least time after an event's own second at which it can change the value by
    /// time alone: its bucket entering a `between` window, or leaving the window.
    pub fn delay(&self) -> f64 {
        let window = self.window;
        if window.width == 0 {
            return NEVER;
        }
        let entering = (window.skip - 1).max(0) * window.width;
        let leaving = (window.skip + window.buckets - 1) * window.width;
        match window.skip {
            0 => leaving as f64,
            _ => entering as f64,
        }
    }

    /// The oldest bucket a window as of `as_of` or later reads.
    pub fn oldest(&self, as_of: f64) -> i64 {
        match self.window.width {
            0 => i64::MIN,
            _ => *self.window.range(as_of).start(),
        }
    }
}

/// An epoch second as ISO 8601 text in UTC: `2026-11-01T10:00:00Z`.
///
/// ```
/// use _core::computed::iso_text;
/// assert_eq!(iso_text(1_793_527_200), "2026-11-01T10:00:00Z");
/// assert_eq!(iso_text(-1), "1969-12-31T23:59:59Z");
/// ```
pub fn iso_text(moment: i64) -> String {
    let days = moment.div_euclid(86_400);
    let second = moment.rem_euclid(86_400);
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let of_era = shifted - era * 146_097;
    let year_of_era = (of_era - of_era / 1_460 + of_era / 36_524 - of_era / 146_096) / 365;
    let of_year = of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * of_year + 2) / 153;
    let day = of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    let clock = [second / 3_600, second % 3_600 / 60, second % 60];
    if !(0..=9_999).contains(&year) {
        let [hour, minute, second] = clock;
        return format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z");
    }
    // written digit by digit: a step reads first and last times at every evaluation
    let mut text = *b"0000-00-00T00:00:00Z";
    let mut put = |at: usize, width: usize, mut number: i64| {
        for place in (at..at + width).rev() {
            text[place] = b'0' + (number % 10) as u8;
            number /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    for (at, number) in [11, 14, 17].into_iter().zip(clock) {
        put(at, 2, number);
    }
    text.iter().map(|&b| char::from(b)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn computed(aggregate: &str, window: Value) -> Computed {
        Computed::from_json(&serde_json::json!({
            "names": ["t"], "key": "k",
            "select": {"events": ["Played"], "pages": ["Pricing"], "any": false},
            "where": {"property": "properties.device", "op": "in", "value": ["tv", "web"]},
            "aggregate": aggregate, "of": "properties.show", "window": window}))
        .unwrap()
    }

    fn played(at: i64, device: &str, show: TraitValue) -> Event {
        Event {
            name: Some("Played".into()),
            properties: vec![
                ("properties.device".into(), TraitValue::Text(device.into())),
                ("properties.show".into(), show),
            ],
            ..Event::new("u", "m", Kind::Other, at as f64)
        }
    }

    fn fold(definition: &Computed, events: &[Event]) -> Series {
        let mut series = Series::new(definition.aggregate);
        for event in events {
            if let Some(cell) = definition.cell_of(event) {
                series.add(definition.window.bucket(event.timestamp as i64), &cell);
            }
        }
        series
    }

    fn text(value: &str) -> TraitValue {
        TraitValue::Text(value.into())
    }

    #[test]
    fn a_count_flips_when_the_cell_that_holds_it_up_leaves() {
        let window = serde_json::json!({"width": 1, "buckets": 3600, "skip": 0});
        let definition = computed("count", window);
        let at = |t| played(t, "tv", text("s"));
        let series = fold(&definition, &[at(100), at(200), at(3000)]);
        let test = |op: &str, limit: f64| {
            test_of(
                serde_json::json!({"op": op, "value": limit})
                    .as_object()
                    .unwrap(),
            )
            .unwrap()
        };
        let flips = |test: &TraitTest| {
            let value = definition.value(Some(&series), 3000.0);
            definition.flips_at(Some(&series), 3000.0, test, &value)
        };
        // 3 >= 2 until the cell of 200 leaves at 3800; 3 < 3 turns true when 100's does
        assert_eq!(flips(&test(">=", 2.0)), 3800.0);
        assert_eq!(flips(&test("<", 3.0)), 3700.0);
        assert_eq!(flips(&test("<", 5.0)), NEVER); // it only falls further below 5
        assert_eq!(flips(&test(">=", 5.0)), NEVER); // nor ever reaches 5
        assert_eq!(flips(&test("==", 1.0)), 3800.0);
        // a minimum, a most frequent value: their next change, whatever the test
        let least = computed(
            "min",
            serde_json::json!({"width": 86400, "buckets": 2, "skip": 0}),
        );
        let number = |t, v| played(t, "tv", TraitValue::Number(v));
        let cells = fold(&least, &[number(100, 5.0), number(90_000, 9.0)]);
        let value = least.value(Some(&cells), 90_000.0);
        assert_eq!(value, TraitValue::Number(5.0));
        let falls_below = test("<", 6.0);
        assert_eq!(
            least.flips_at(Some(&cells), 90_000.0, &falls_below, &value),
            172_800.0
        );
        assert_eq!(
            least.flips_at(Some(&cells), 90_000.0, &test("<", 4.0), &value),
            NEVER
        );
    }

    #[test]
    fn most_frequent_breaks_ties_by_the_first_value_and_filters_apply() {
        let definition = computed("most_frequent", Value::Null);
        let events = [
            played(10, "tv", text("b")),
            played(11, "web", text("a")),
            played(12, "phone", text("a")),
            played(13, "tv", TraitValue::Number(2.0)),
            played(14, "tv", TraitValue::Number(2.0)),
        ];
        let series = fold(&definition, &events[..3]);
        assert_eq!(definition.value(Some(&series), 20.0), text("a"));
        let series = fold(&definition, &events);
        assert_eq!(definition.value(Some(&series), 20.0), text("2"));
        let distinct = computed("distinct_count", Value::Null);
        let series = fold(&distinct, &events);
        assert_eq!(distinct.value(Some(&series), 20.0), TraitValue::Number(3.0));
    }

    #[test]
    fn first_and_last_take_time_then_value_in_any_order() {
        let first = computed("first", Value::Null);
        let last = computed("last", Value::Null);
        let events = [
            played(20, "tv", text("z")),
            played(10, "tv", text("m")),
            played(10, "tv", text("c")),
            played(20, "tv", text("y")),
        ];
        for order in [[0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1]] {
            let shuffled: Vec<Event> = order.iter().map(|&i| events[i].clone()).collect();
            assert_eq!(first.value(Some(&fold(&first, &shuffled)), 30.0), text("c"));
            assert_eq!(last.value(Some(&fold(&last, &shuffled)), 30.0), text("z"));
        }
    }

    #[test]
    fn a_between_window_reads_its_buckets_and_times_both_edges() {
        let window = serde_json::json!({"width": 60, "buckets": 2, "skip": 1});
        let definition = computed("count", window);
        let series = fold(&definition, &[played(125, "tv", text("a"))]);
        let value = |at: f64| definition.value(Some(&series), at);
        // bucket 2 (120..180) is read from bucket 3 to bucket 4 of the reading's time
        assert_eq!(value(179.0), TraitValue::Number(0.0));
        assert_eq!(value(180.0), TraitValue::Number(1.0));
        assert_eq!(value(299.0), TraitValue::Number(1.0));
        assert_eq!(value(300.0), TraitValue::Number(0.0));
        assert_eq!(definition.changes_at(Some(&series), 100.0), 180.0);
        assert_eq!(definition.changes_at(Some(&series), 180.0), 300.0);
        assert_eq!(definition.changes_at(Some(&series), 300.0), NEVER);
    }

    #[test]
    fn sums_are_exact_in_millionths_and_empty_windows_are_zero_or_null() {
        let sum = computed(
            "sum",
            serde_json::json!({"width": 1, "buckets": 3600, "skip": 0}),
        );
        let events: Vec<Event> = [0.1, 0.2, 0.3]
            .iter()
            .map(|&v| played(100, "tv", TraitValue::Number(v)))
            .collect();
        assert_eq!(
            sum.value(Some(&fold(&sum, &events)), 100.0),
            TraitValue::Number(0.6)
        );
        assert_eq!(sum.value(None, 100.0), TraitValue::Number(0.0));
        assert_eq!(
            computed("avg", Value::Null).value(None, 1.0),
            TraitValue::Null
        );
        let time = computed("last_time", Value::Null);
        let series = fold(&time, &events);
        assert_eq!(
            time.value(Some(&series), 200.0),
            text("1970-01-01T00:01:40Z")
        );
    }

    #[test]
    fn a_filter_negates_ignores_case_and_compares_booleans() {
        let definition = Computed::from_json(&serde_json::json!({
            "names": ["t"], "key": "k",
            "select": {"events": ["Played"], "pages": [], "any": false},
            "where": {"all": [
                {"not": {"property": "properties.device", "op": "==", "value": "TV",
                         "case": "insensitive"}},
                {"property": "properties.live", "op": "==", "value": true}]},
            "aggregate": "count", "of": null, "window": null}))
        .unwrap();
        let event = |device: &str, live: bool| Event {
            properties: vec![
                ("properties.device".into(), text(device)),
                ("properties.live".into(), TraitValue::Bool(live)),
            ],
            ..played(1, device, text("s"))
        };
        assert!(definition.cell_of(&event("web", true)).is_some());
        assert!(definition.cell_of(&event("tv", true)).is_none());
        assert!(definition.cell_of(&event("web", false)).is_none());
    }

    #[test]
    fn extremes_and_tallies_hold_in_any_arrival_order() {
        let number = TraitValue::Number;
        for definition in [computed("min", Value::Null), computed("max", Value::Null)] {
            let wanted = if definition.aggregate == Aggregate::Min {
                1.0
            } else {
                3.5
            };
            for values in [[1.0, 3.5, 2.0], [3.5, 1.0, 2.0]] {
                let events: Vec<Event> =
                    values.iter().map(|&v| played(5, "tv", number(v))).collect();
                let series = fold(&definition, &events);
                assert_eq!(definition.value(Some(&series), 9.0), number(wanted));
            }
        }
        let frequent = computed("most_frequent", Value::Null);
        let events = [
            played(5, "tv", text("b")),
            played(6, "tv", text("a")),
            played(7, "tv", text("b")),
        ];
        assert_eq!(
            frequent.value(Some(&fold(&frequent, &events)), 9.0),
            text("b")
        );
    }

    #[test]
    fn first_and_last_times_come_from_any_arrival_order() {
        let first = computed("first_time", Value::Null);
        let last = computed("last_time", Value::Null);
        let events = [played(50, "tv", text("a")), played(20, "tv", text("b"))];
        let (earliest, latest) = (fold(&first, &events), fold(&last, &events));
        assert_eq!(
            first.value(Some(&earliest), 60.0),
            text("1970-01-01T00:00:20Z")
        );
        assert_eq!(
            last.value(Some(&latest), 60.0),
            text("1970-01-01T00:00:50Z")
        );
    }

    #[test]
    fn every_aggregate_keeps_its_cells_through_a_state_row() {
        use crate::profile::Profile;
        use crate::rows::{decode, encode};
        use crate::user::User;
        let events: Vec<Event> = [(10, 3.5), (70, 1.0), (70, 2.0)]
            .iter()
            .map(|&(at, n)| played(at, "tv", TraitValue::Number(n)))
            .collect();
        let mut profile = Profile::default();
        let definitions: Vec<Computed> = AGGREGATES
            .iter()
            .enumerate()
            .map(|(number, (_, name))| {
                let mut definition = computed(
                    name,
                    serde_json::json!({"width": 60, "buckets": 5, "skip": 0}),
                );
                definition.key = Key::parse(&format!("k{number}")).unwrap();
                definition
            })
            .collect();
        for event in &events {
            profile.fold(event, &definitions);
        }
        let user = User {
            profile,
            ..User::default()
        };
        let read = decode(&encode(&user)).unwrap();
        assert_eq!(read, user);
        for definition in &definitions {
            let series = read.profile.computed.get(&definition.key);
            assert_eq!(series.map(|s| s.aggregate), Some(definition.aggregate));
        }
    }

    #[test]
    fn iso_text_reads_back_as_the_same_second() {
        use crate::decoding::iso_time;
        let moments = (-700_000..2_900_000) // years 1 to 9999
            .step_by(997)
            .map(|day: i64| day * 86_400 + day.rem_euclid(86_400));
        for moment in moments.chain([0, 951_782_400, 4_107_542_399]) {
            let text = iso_text(moment);
            assert_eq!(iso_time(&text), Some(moment as f64), "{moment} as {text}");
        }
    }

    #[test]
    fn pages_count_by_name_and_identity_calls_never() {
        let definition = computed("count", Value::Null);
        let page = |name: &str| Event {
            name: Some(name.into()),
            properties: vec![("properties.device".into(), text("tv"))],
            ..Event::new("u", "m", Kind::Page, 5.0)
        };
        assert!(definition.cell_of(&page("Pricing")).is_some());
        assert!(definition.cell_of(&page("Played")).is_none());
        let identify = Event {
            kind: Kind::Identify,
            ..page("Played")
        };
        assert!(definition.cell_of(&identify).is_none());
    }
}
