//! The byte form of a user's state in the store: a versioned msgpack array.
//!
//! Version 2 (written now) is `[2, profile, segments, version, as_of, recent, linked,
//! absorbed, alias_of, cluster, model_version, due, examples]`, `examples` (`[history,
//! before, [[first_day, days, early_done], ...], predicted, others_due]`: the day buckets
//! kept for the inputs, as the profile's, the latest day with an event they no longer
//! hold, the pending days as runs of consecutive days, nil while every prediction was
//! gated or one `[prediction, ...]` (32-bit floats, nil for a gated one) or nil per
//! pending day, and when the user's timer is next due for anything but a snapshot (nil:
//! never; left out while not known)) only when the user has pending examples; version 1 rows, written before
//! rows carried their version, are the same array without the leading `2` (and may
//! lack the last three fields). `profile` is `[minutes, hours, days, categories,
//! sessions, purchase_days, orders, events, first_seen, last_seen, last_order,
//! last_device, recent, cart, traits, computed]`, `traits` (`[[name, set_at, value], ...]`)
//! only when the user has traits or computed traits, `computed` (`[[key, aggregate,
//! [[bucket, *cell], ...]], ...]`) only when the user has computed traits;
//! docs/redis-keys.md describes every field.
//!
//! ```
//! use _core::rows::{decode, encode};
//! use _core::user::User;
//! let user = User { as_of: 60.0, ..User::default() };
//! assert_eq!(decode(&encode(&user)).unwrap(), user);
//! ```

use std::collections::BTreeMap;

use crate::msgpack::Pack;

use crate::computed::{Aggregate, Cell, Key, Series};
use crate::examples::{Examples, Pending, HISTORY_DAYS};
use crate::predictions::PREDICTIONS;
use crate::profile::Profile;
use crate::traits::TraitValue;
use crate::user::{Labels, User};
use crate::windows::SlidingCounts;

/// The format version rows are written in.
pub const ROW_VERSION: i64 = 2;

/// A row that cannot be read.
#[derive(Debug, PartialEq)]
pub struct RowError(pub String);

impl std::fmt::Display for RowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unreadable user state: {}", self.0)
    }
}

fn bad(what: &str) -> RowError {
    RowError(what.to_string())
}

/// The user in `row`, of any version.
pub fn decode(row: &[u8]) -> Result<User, RowError> {
    let mut read = Reader { data: row, at: 0 };
    let mut fields = read.array()?;
    let versioned = match read.peek()? {
        0x90..=0x9f | 0xdc | 0xdd => false, // version 1: the aggregates come first
        _ => {
            if read.int()? != ROW_VERSION {
                return Err(bad("not a state row of a known version"));
            }
            true
        }
    };
    fields -= versioned as usize;
    if fields < 8 {
        return Err(bad("too few fields"));
    }
    let profile = read.profile()?;
    let segments = read.strings()?;
    let version = read.int()?;
    let as_of = read.number()?;
    let mut recent = BTreeMap::new();
    for _ in 0..read.array()? {
        read.pair()?;
        let digest = read.int()? as u64;
        recent.insert(digest, read.int()?);
    }
    let linked = read.strings()?;
    let absorbed = read.strings()?;
    let alias_of = read.text_or_nil()?;
    let cluster = if fields > 8 {
        read.text_or_nil()?
    } else {
        None
    };
    let model_version = if fields > 9 { read.int_or_nil()? } else { None };
    let due = if fields > 10 {
        read.int_or_nil()?
    } else {
        None
    };
    let examples = if fields > 11 {
        read.examples()?
    } else {
        Examples::default()
    };
    Ok(User {
        profile,
        labels: Labels {
            segments,
            version,
            cluster,
            model_version,
        },
        as_of,
        recent,
        linked,
        absorbed,
        alias_of,
        due,
        examples,
    })
}

/// Reads msgpack values one at a time, without building a tree of them.
struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn peek(&self) -> Result<u8, RowError> {
        self.data
            .get(self.at)
            .copied()
            .ok_or(bad("the row ends early"))
    }

    fn take(&mut self, count: usize) -> Result<&[u8], RowError> {
        let end = self.at + count;
        let taken = self
            .data
            .get(self.at..end)
            .ok_or(bad("the row ends early"))?;
        self.at = end;
        Ok(taken)
    }

    fn byte(&mut self) -> Result<u8, RowError> {
        Ok(self.take(1)?[0])
    }

    fn be<const N: usize>(&mut self) -> Result<[u8; N], RowError> {
        Ok(self.take(N)?.try_into().expect("N bytes taken"))
    }

    fn array(&mut self) -> Result<usize, RowError> {
        match self.byte()? {
            marker @ 0x90..=0x9f => Ok((marker & 0x0f) as usize),
            0xdc => Ok(u16::from_be_bytes(self.be()?) as usize),
            0xdd => Ok(u32::from_be_bytes(self.be()?) as usize),
            _ => Err(bad("a list was expected")),
        }
    }

    /// A two-element list's header.
    fn pair(&mut self) -> Result<(), RowError> {
        match self.array()? {
            2 => Ok(()),
            _ => Err(bad("a pair was expected")),
        }
    }

    fn nil(&mut self) -> Result<bool, RowError> {
        if self.peek()? == 0xc0 {
            self.at += 1;
            return Ok(true);
        }
        Ok(false)
    }

    /// An integer (a float is cut to one); a u64 above i64's range keeps its bits.
    fn int(&mut self) -> Result<i64, RowError> {
        Ok(match self.byte()? {
            marker @ 0x00..=0x7f => marker as i64,
            marker @ 0xe0..=0xff => marker as i8 as i64,
            0xcc => self.byte()? as i64,
            0xcd => u16::from_be_bytes(self.be()?) as i64,
            0xce => u32::from_be_bytes(self.be()?) as i64,
            0xcf => u64::from_be_bytes(self.be()?) as i64,
            0xd0 => self.byte()? as i8 as i64,
            0xd1 => i16::from_be_bytes(self.be()?) as i64,
            0xd2 => i32::from_be_bytes(self.be()?) as i64,
            0xd3 => i64::from_be_bytes(self.be()?),
            0xca => f32::from_be_bytes(self.be()?).trunc() as i64,
            0xcb => f64::from_be_bytes(self.be()?).trunc() as i64,
            _ => return Err(bad("a number was expected")),
        })
    }

    fn number(&mut self) -> Result<f64, RowError> {
        match self.peek()? {
            0xca => {
                self.at += 1;
                Ok(f32::from_be_bytes(self.be()?) as f64)
            }
            0xcb => {
                self.at += 1;
                Ok(f64::from_be_bytes(self.be()?))
            }
            _ => Ok(self.int()? as f64),
        }
    }

    fn trait_value(&mut self) -> Result<TraitValue, RowError> {
        Ok(match self.peek()? {
            0xc0 => {
                self.at += 1;
                TraitValue::Null
            }
            marker @ (0xc2 | 0xc3) => {
                self.at += 1;
                TraitValue::Bool(marker == 0xc3)
            }
            0xa0..=0xbf | 0xd9..=0xdb => TraitValue::Text(self.text()?),
            _ => TraitValue::Number(self.number()?),
        })
    }

    fn int_or_nil(&mut self) -> Result<Option<i64>, RowError> {
        Ok(if self.nil()? { None } else { Some(self.int()?) })
    }

    fn text(&mut self) -> Result<String, RowError> {
        let length = match self.byte()? {
            marker @ 0xa0..=0xbf => (marker & 0x1f) as usize,
            0xd9 => self.byte()? as usize,
            0xda => u16::from_be_bytes(self.be()?) as usize,
            0xdb => u32::from_be_bytes(self.be()?) as usize,
            _ => return Err(bad("text was expected")),
        };
        let bytes = self.take(length)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| bad("text is not UTF-8"))
    }

    fn text_or_nil(&mut self) -> Result<Option<String>, RowError> {
        Ok(if self.nil()? {
            None
        } else {
            Some(self.text()?)
        })
    }

    fn strings(&mut self) -> Result<Vec<String>, RowError> {
        (0..self.array()?).map(|_| self.text()).collect()
    }

    fn examples(&mut self) -> Result<Examples, RowError> {
        let fields = self.array()?;
        if !(4..=5).contains(&fields) {
            return Err(bad(
                "examples are [history, before, days, predicted, others_due]",
            ));
        }
        let mut examples = Examples::default();
        self.counts(&mut examples.history)?;
        examples.before = self.int_or_nil()?;
        for _ in 0..self.array()? {
            if self.array()? != 3 {
                return Err(bad(
                    "a run of pending days is [first_day, days, early_done]",
                ));
            }
            let (first, days, early_done) = (self.int()?, self.int()?, self.boolean()?);
            if !(1..=HISTORY_DAYS).contains(&days) {
                return Err(bad("a run of pending days of another length"));
            }
            for day in first..first + days {
                let mut pending = Pending::new(day, [f32::NAN; PREDICTIONS.len()]);
                pending.early_done = early_done;
                examples.pending.push(pending);
            }
        }
        if !self.nil()? {
            if self.array()? != examples.pending.len() {
                return Err(bad("one prediction entry per pending day"));
            }
            for pending in &mut examples.pending {
                if self.nil()? {
                    continue;
                }
                if self.array()? != PREDICTIONS.len() {
                    return Err(bad("a pending day's predictions of another width"));
                }
                for value in &mut pending.predicted {
                    *value = if self.nil()? {
                        f32::NAN
                    } else {
                        self.number()? as f32
                    };
                }
            }
        }
        if fields == 5 {
            examples.others_due = Some(self.int_or_nil()?);
        }
        Ok(examples)
    }

    fn boolean(&mut self) -> Result<bool, RowError> {
        match self.byte()? {
            0xc2 => Ok(false),
            0xc3 => Ok(true),
            _ => Err(bad("a boolean was expected")),
        }
    }

    fn ints(&mut self) -> Result<Vec<i64>, RowError> {
        (0..self.array()?).map(|_| self.int()).collect()
    }

    fn pairs(&mut self) -> Result<BTreeMap<i64, i64>, RowError> {
        let mut found = BTreeMap::new();
        for _ in 0..self.array()? {
            self.pair()?;
            let key = self.int()?;
            found.insert(key, self.int()?);
        }
        Ok(found)
    }

    fn counts(&mut self, counts: &mut SlidingCounts) -> Result<(), RowError> {
        for _ in 0..self.array()? {
            let length = self.array()?;
            if length == 0 {
                return Err(bad("empty bucket"));
            }
            let index = self.int()?;
            let vector = (1..length).map(|_| self.int()).collect::<Result<_, _>>()?;
            counts.buckets.insert(index, vector);
        }
        Ok(())
    }

    fn profile(&mut self) -> Result<Profile, RowError> {
        let fields = self.array()?;
        if fields < 13 {
            return Err(bad("profile has too few fields"));
        }
        let mut profile = Profile::default();
        self.counts(&mut profile.minutes)?;
        self.counts(&mut profile.hours)?;
        self.counts(&mut profile.days)?;
        for _ in 0..self.array()? {
            self.pair()?;
            let name = self.text()?;
            let per_day = self.pairs()?;
            profile.category_days.insert(name, per_day);
        }
        for _ in 0..self.array()? {
            let session: [i64; 4] = self
                .ints()?
                .try_into()
                .map_err(|_| bad("a session has 4 fields"))?;
            profile.sessions.items.push(session);
        }
        profile.purchase_days = self.pairs()?;
        profile.orders = self.int()?;
        profile.events = self.int()?;
        profile.first_seen = self.int_or_nil()?;
        profile.last_seen = self.int_or_nil()?;
        profile.last_order = self.int_or_nil()?;
        if !self.nil()? {
            self.pair()?;
            let moment = self.int()?;
            profile.last_device = Some((moment, self.text()?));
        }
        for _ in 0..self.array()? {
            self.pair()?;
            let key = self.text()?;
            profile.recent.insert(key, self.ints()?);
        }
        if fields > 13 {
            for _ in 0..self.array()? {
                if self.array()? != 5 {
                    return Err(bad("a cart entry has 5 fields"));
                }
                let moment = self.int()?;
                let sign = self.int()?;
                let product = self.text()?;
                let category = self.text()?;
                profile
                    .cart
                    .push((moment, sign, product, category, self.int()?));
            }
        }
        if fields > 14 {
            for _ in 0..self.array()? {
                if self.array()? != 3 {
                    return Err(bad("a trait has 3 fields"));
                }
                let name = self.text()?;
                let moment = self.int()?;
                let value = self.trait_value()?;
                profile.traits.0.insert(name, (moment, value));
            }
        }
        if fields > 15 {
            for _ in 0..self.array()? {
                if self.array()? != 3 {
                    return Err(bad("a computed trait has 3 fields"));
                }
                let key = Key::parse(&self.text()?).map_err(|_| bad("a computed trait's key"))?;
                let aggregate =
                    Aggregate::from_code(self.int()?).ok_or(bad("an unknown aggregate"))?;
                let mut series = Series::new(aggregate);
                for _ in 0..self.array()? {
                    let length = self.array()?;
                    let bucket = self.int()?;
                    let cell = self.cell(aggregate, length)?;
                    series.buckets.insert(bucket, cell);
                }
                profile.computed.insert(key, series);
            }
        }
        Ok(profile)
    }

    /// A cell of `aggregate` whose bucket (the first of `length` fields) was read.
    fn cell(&mut self, aggregate: Aggregate, length: usize) -> Result<Cell, RowError> {
        let wanted = match aggregate {
            Aggregate::Sum | Aggregate::Avg | Aggregate::First | Aggregate::Last => 3,
            Aggregate::DistinctCount | Aggregate::MostFrequent => length | 1,
            _ => 2,
        };
        if length != wanted {
            return Err(bad("a computed trait's cell has the wrong length"));
        }
        Ok(match aggregate {
            Aggregate::Count => Cell::Count(self.int()?),
            Aggregate::Sum | Aggregate::Avg => Cell::Sum(self.int()?, self.int()?),
            Aggregate::Min => Cell::Least(self.number()?),
            Aggregate::Max => Cell::Most(self.number()?),
            Aggregate::DistinctCount | Aggregate::MostFrequent => {
                let mut tally = BTreeMap::new();
                for _ in 0..length / 2 {
                    let value = self.text()?;
                    tally.insert(value, self.int()?);
                }
                Cell::Tally(tally)
            }
            Aggregate::First => Cell::First(self.int()?, self.trait_value()?),
            Aggregate::Last => Cell::Last(self.int()?, self.trait_value()?),
            Aggregate::FirstTime => Cell::Earliest(self.int()?),
            Aggregate::LastTime => Cell::Latest(self.int()?),
        })
    }
}

/// The row of `user`, in the current version.
pub fn encode(user: &User) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    encode_into(&mut out, user);
    out
}

/// The row of `user` written at the end of `w`: a step writes every user's row into one
/// buffer and copies out the rows that moved, at their size.
pub fn encode_into(w: &mut Vec<u8>, user: &User) {
    let fields = if user.examples.pending.is_empty() {
        12
    } else {
        13
    };
    w.array(fields);
    w.int(ROW_VERSION);
    write_profile(w, &user.profile);
    write_strings(w, &user.labels.segments);
    w.int(user.labels.version);
    w.float(user.as_of);
    w.array(user.recent.len());
    for (digest, when) in &user.recent {
        w.array(2);
        w.uint(*digest);
        w.int(*when);
    }
    write_strings(w, &user.linked);
    write_strings(w, &user.absorbed);
    write_text_or_nil(w, user.alias_of.as_deref());
    write_text_or_nil(w, user.labels.cluster.as_deref());
    write_int_or_nil(w, user.labels.model_version);
    write_int_or_nil(w, user.due);
    if !user.examples.pending.is_empty() {
        write_examples(w, &user.examples);
    }
}

fn write_examples(w: &mut Vec<u8>, examples: &Examples) {
    let fields = 4 + usize::from(examples.others_due.is_some());
    w.array(fields);
    write_counts(w, &examples.history);
    write_int_or_nil(w, examples.before);
    let mut runs: Vec<(i64, i64, bool)> = Vec::new();
    for p in &examples.pending {
        match runs.last_mut() {
            Some((first, days, done)) if *first + *days == p.day && *done == p.early_done => {
                *days += 1
            }
            _ => runs.push((p.day, 1, p.early_done)),
        }
    }
    w.array(runs.len());
    for (first, days, early_done) in runs {
        w.array(3);
        w.int(first);
        w.int(days);
        w.boolean(early_done);
    }
    write_predicted(w, &examples.pending);
    if let Some(others_due) = examples.others_due {
        write_int_or_nil(w, others_due);
    }
}

fn write_predicted(w: &mut Vec<u8>, pending: &[Pending]) {
    let gated = |p: &Pending| p.predicted.iter().all(|v| v.is_nan());
    if pending.iter().all(gated) {
        w.nil();
        return;
    }
    w.array(pending.len());
    for p in pending {
        if gated(p) {
            w.nil();
            continue;
        }
        w.array(p.predicted.len());
        for value in p.predicted {
            if value.is_nan() {
                w.nil();
            } else {
                w.float32(value);
            }
        }
    }
}

/// The aggregates alone, in their row form: equal bytes, equal aggregates.
pub fn encode_profile(profile: &Profile) -> Vec<u8> {
    let mut out = Vec::with_capacity(200);
    write_profile(&mut out, profile);
    out
}

fn write_profile(w: &mut Vec<u8>, profile: &Profile) {
    let traits = &profile.traits.0;
    let fields = if !profile.computed.is_empty() {
        16
    } else if !traits.is_empty() {
        15
    } else {
        14
    };
    w.array(fields);
    for counts in [&profile.minutes, &profile.hours, &profile.days] {
        write_counts(w, counts);
    }
    w.array(profile.category_days.len());
    for (name, per_day) in &profile.category_days {
        w.array(2);
        w.text(name);
        write_pairs(w, per_day);
    }
    w.array(profile.sessions.items.len());
    for session in &profile.sessions.items {
        write_ints(w, session);
    }
    write_pairs(w, &profile.purchase_days);
    w.int(profile.orders);
    w.int(profile.events);
    write_int_or_nil(w, profile.first_seen);
    write_int_or_nil(w, profile.last_seen);
    write_int_or_nil(w, profile.last_order);
    match &profile.last_device {
        None => w.nil(),
        Some((moment, device)) => {
            w.array(2);
            w.int(*moment);
            w.text(device);
        }
    }
    w.array(profile.recent.len());
    for (key, times) in &profile.recent {
        w.array(2);
        w.text(key);
        write_ints(w, times);
    }
    w.array(profile.cart.len());
    for (moment, sign, product, category, amount) in &profile.cart {
        w.array(5);
        w.int(*moment);
        w.int(*sign);
        w.text(product);
        w.text(category);
        w.int(*amount);
    }
    if fields > 14 {
        w.array(traits.len());
        for (name, (moment, value)) in traits {
            w.array(3);
            w.text(name);
            w.int(*moment);
            write_value(w, value);
        }
    }
    if fields > 15 {
        w.array(profile.computed.len());
        for (key, series) in &profile.computed {
            w.array(3);
            let key = key.bytes();
            w.text_bytes(key.as_slice());
            w.int(series.aggregate.code());
            w.array(series.buckets.len());
            for (bucket, cell) in series.buckets.iter() {
                write_cell(w, *bucket, cell);
            }
        }
    }
}

fn write_value(w: &mut Vec<u8>, value: &TraitValue) {
    match value {
        TraitValue::Null => w.nil(),
        TraitValue::Bool(flag) => w.boolean(*flag),
        TraitValue::Number(number) => w.float(*number),
        TraitValue::Text(text) => w.text(text),
    }
}

/// A cell as `[bucket, *fields]`: a count; numbers and millionths; a value; value and
/// count pairs; time and value; a time.
fn write_cell(w: &mut Vec<u8>, bucket: i64, cell: &Cell) {
    let length = match cell {
        Cell::Sum(..) | Cell::First(..) | Cell::Last(..) => 3,
        Cell::Tally(values) => 1 + 2 * values.len(),
        _ => 2,
    };
    w.array(length);
    w.int(bucket);
    let int = |w: &mut Vec<u8>, value: i64| {
        w.int(value);
    };
    match cell {
        Cell::Count(count) => int(w, *count),
        Cell::Sum(numbers, millionths) => {
            int(w, *numbers);
            int(w, *millionths);
        }
        Cell::Least(value) | Cell::Most(value) => {
            w.float(*value);
        }
        Cell::Tally(values) => {
            for (value, count) in values {
                w.text(value);
                int(w, *count);
            }
        }
        Cell::First(moment, value) | Cell::Last(moment, value) => {
            int(w, *moment);
            write_value(w, value);
        }
        Cell::Earliest(moment) | Cell::Latest(moment) => int(w, *moment),
    }
}

/// Buckets as `[index, *counters]` sorted by index, trailing zeros cut.
fn write_counts(w: &mut Vec<u8>, counts: &SlidingCounts) {
    let rows: Vec<(i64, &[i64])> = counts
        .buckets
        .iter()
        .map(|(index, vector)| {
            let end = vector.iter().rposition(|&v| v != 0).map_or(0, |i| i + 1);
            (*index, &vector[..end])
        })
        .filter(|(_, vector)| !vector.is_empty())
        .collect();
    w.array(rows.len());
    for (index, vector) in rows {
        w.array(vector.len() + 1);
        w.int(index);
        for value in vector {
            w.int(*value);
        }
    }
}

fn write_ints(w: &mut Vec<u8>, values: &[i64]) {
    w.array(values.len());
    for value in values {
        w.int(*value);
    }
}

fn write_pairs(w: &mut Vec<u8>, pairs: &BTreeMap<i64, i64>) {
    w.array(pairs.len());
    for (key, value) in pairs {
        write_ints(w, &[*key, *value]);
    }
}

fn write_strings(w: &mut Vec<u8>, values: &[String]) {
    w.array(values.len());
    for value in values {
        w.text(value);
    }
}

fn write_text_or_nil(w: &mut Vec<u8>, value: Option<&str>) {
    match value {
        None => w.nil(),
        Some(text) => w.text(text),
    }
}

fn write_int_or_nil(w: &mut Vec<u8>, value: Option<i64>) {
    match value {
        None => w.nil(),
        Some(number) => {
            w.int(number);
        }
    }
}
