//! The byte form of a user's state in the store: a versioned msgpack array.
//!
//! Version 2 (written now) is `[2, profile, segments, version, as_of, recent, linked,
//! absorbed, alias_of, cluster, model_version, due]`; version 1 rows, written before
//! rows carried their version, are the same array without the leading `2` (and may
//! lack the last three fields). `profile` is `[minutes, hours, days, categories,
//! sessions, purchase_days, orders, events, first_seen, last_seen, last_order,
//! last_device, recent, cart]`; docs/redis-keys.md describes every field.
//!
//! ```
//! use _core::rows::{decode, encode};
//! use _core::user::User;
//! let user = User { as_of: 60.0, ..User::default() };
//! assert_eq!(decode(&encode(&user)).unwrap(), user);
//! ```

use std::collections::BTreeMap;

use rmp::encode as mp;
use rmpv::Value;

use crate::profile::Profile;
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
    let value = rmpv::decode::read_value(&mut &row[..]).map_err(|e| RowError(e.to_string()))?;
    let fields = list(&value, "row")?;
    let fields = match fields.first() {
        Some(Value::Integer(version)) if version.as_i64() == Some(ROW_VERSION) => &fields[1..],
        Some(Value::Array(_)) => fields, // version 1
        _ => return Err(bad("not a state row of a known version")),
    };
    if fields.len() < 8 {
        return Err(bad("too few fields"));
    }
    let field = |i: usize| fields.get(i).unwrap_or(&Value::Nil);
    Ok(User {
        profile: profile(list(&fields[0], "profile")?)?,
        labels: Labels {
            segments: strings(&fields[1])?,
            version: int(&fields[2])?,
            cluster: text_or_nil(field(8))?,
            model_version: int_or_nil(field(9))?,
        },
        as_of: number(&fields[3])?,
        recent: pairs(&fields[4])?
            .into_iter()
            .map(|(digest, when)| (digest as u64, when))
            .collect(),
        linked: strings(&fields[5])?,
        absorbed: strings(&fields[6])?,
        alias_of: text_or_nil(&fields[7])?,
        due: int_or_nil(field(10))?,
    })
}

/// The row of `user`, in the current version.
pub fn encode(user: &User) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let w = &mut out;
    mp::write_array_len(w, 12).expect("writing to a Vec");
    mp::write_sint(w, ROW_VERSION).expect("writing to a Vec");
    write_profile(w, &user.profile);
    write_strings(w, &user.labels.segments);
    mp::write_sint(w, user.labels.version).expect("writing to a Vec");
    mp::write_f64(w, user.as_of).expect("writing to a Vec");
    mp::write_array_len(w, user.recent.len() as u32).expect("writing to a Vec");
    for (digest, when) in &user.recent {
        mp::write_array_len(w, 2).expect("writing to a Vec");
        mp::write_uint(w, *digest).expect("writing to a Vec");
        mp::write_sint(w, *when).expect("writing to a Vec");
    }
    write_strings(w, &user.linked);
    write_strings(w, &user.absorbed);
    write_text_or_nil(w, user.alias_of.as_deref());
    write_text_or_nil(w, user.labels.cluster.as_deref());
    write_int_or_nil(w, user.labels.model_version);
    write_int_or_nil(w, user.due);
    out
}

/// The aggregates alone, in their row form: equal bytes, equal aggregates.
pub fn encode_profile(profile: &Profile) -> Vec<u8> {
    let mut out = Vec::with_capacity(200);
    write_profile(&mut out, profile);
    out
}

fn write_profile(w: &mut Vec<u8>, profile: &Profile) {
    mp::write_array_len(w, 14).expect("writing to a Vec");
    for counts in [&profile.minutes, &profile.hours, &profile.days] {
        write_counts(w, counts);
    }
    mp::write_array_len(w, profile.category_days.len() as u32).expect("writing to a Vec");
    for (name, per_day) in &profile.category_days {
        mp::write_array_len(w, 2).expect("writing to a Vec");
        mp::write_str(w, name).expect("writing to a Vec");
        write_pairs(w, per_day);
    }
    mp::write_array_len(w, profile.sessions.items.len() as u32).expect("writing to a Vec");
    for session in &profile.sessions.items {
        write_ints(w, session);
    }
    write_pairs(w, &profile.purchase_days);
    mp::write_sint(w, profile.orders).expect("writing to a Vec");
    mp::write_sint(w, profile.events).expect("writing to a Vec");
    write_int_or_nil(w, profile.first_seen);
    write_int_or_nil(w, profile.last_seen);
    write_int_or_nil(w, profile.last_order);
    match &profile.last_device {
        None => mp::write_nil(w).expect("writing to a Vec"),
        Some((moment, device)) => {
            mp::write_array_len(w, 2).expect("writing to a Vec");
            mp::write_sint(w, *moment).expect("writing to a Vec");
            mp::write_str(w, device).expect("writing to a Vec");
        }
    }
    mp::write_array_len(w, profile.recent.len() as u32).expect("writing to a Vec");
    for (key, times) in &profile.recent {
        mp::write_array_len(w, 2).expect("writing to a Vec");
        mp::write_str(w, key).expect("writing to a Vec");
        write_ints(w, times);
    }
    mp::write_array_len(w, profile.cart.len() as u32).expect("writing to a Vec");
    for (moment, sign, product, category, amount) in &profile.cart {
        mp::write_array_len(w, 5).expect("writing to a Vec");
        mp::write_sint(w, *moment).expect("writing to a Vec");
        mp::write_sint(w, *sign).expect("writing to a Vec");
        mp::write_str(w, product).expect("writing to a Vec");
        mp::write_str(w, category).expect("writing to a Vec");
        mp::write_sint(w, *amount).expect("writing to a Vec");
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
    mp::write_array_len(w, rows.len() as u32).expect("writing to a Vec");
    for (index, vector) in rows {
        mp::write_array_len(w, vector.len() as u32 + 1).expect("writing to a Vec");
        mp::write_sint(w, index).expect("writing to a Vec");
        for value in vector {
            mp::write_sint(w, *value).expect("writing to a Vec");
        }
    }
}

fn write_ints(w: &mut Vec<u8>, values: &[i64]) {
    mp::write_array_len(w, values.len() as u32).expect("writing to a Vec");
    for value in values {
        mp::write_sint(w, *value).expect("writing to a Vec");
    }
}

fn write_pairs(w: &mut Vec<u8>, pairs: &BTreeMap<i64, i64>) {
    mp::write_array_len(w, pairs.len() as u32).expect("writing to a Vec");
    for (key, value) in pairs {
        write_ints(w, &[*key, *value]);
    }
}

fn write_strings(w: &mut Vec<u8>, values: &[String]) {
    mp::write_array_len(w, values.len() as u32).expect("writing to a Vec");
    for value in values {
        mp::write_str(w, value).expect("writing to a Vec");
    }
}

fn write_text_or_nil(w: &mut Vec<u8>, value: Option<&str>) {
    match value {
        None => mp::write_nil(w).expect("writing to a Vec"),
        Some(text) => mp::write_str(w, text).expect("writing to a Vec"),
    }
}

fn write_int_or_nil(w: &mut Vec<u8>, value: Option<i64>) {
    match value {
        None => mp::write_nil(w).expect("writing to a Vec"),
        Some(number) => {
            mp::write_sint(w, number).expect("writing to a Vec");
        }
    }
}

fn profile(fields: &[Value]) -> Result<Profile, RowError> {
    if fields.len() < 13 {
        return Err(bad("profile has too few fields"));
    }
    let mut profile = Profile::default();
    for (counts, value) in [
        (&mut profile.minutes, &fields[0]),
        (&mut profile.hours, &fields[1]),
        (&mut profile.days, &fields[2]),
    ] {
        for row in list(value, "buckets")? {
            let numbers = ints(row)?;
            let (index, vector) = numbers.split_first().ok_or(bad("empty bucket"))?;
            counts.buckets.insert(*index, vector.to_vec());
        }
    }
    for entry in list(&fields[3], "categories")? {
        let pair = list(entry, "category")?;
        let [name, per_day] = pair else {
            return Err(bad("category is [name, days]"));
        };
        profile
            .category_days
            .insert(text(name)?, pairs(per_day)?.into_iter().collect());
    }
    for session in list(&fields[4], "sessions")? {
        let numbers = ints(session)?;
        let session: [i64; 4] = numbers
            .try_into()
            .map_err(|_| bad("session has 4 fields"))?;
        profile.sessions.items.push(session);
    }
    profile.purchase_days = pairs(&fields[5])?.into_iter().collect();
    profile.orders = int(&fields[6])?;
    profile.events = int(&fields[7])?;
    profile.first_seen = int_or_nil(&fields[8])?;
    profile.last_seen = int_or_nil(&fields[9])?;
    profile.last_order = int_or_nil(&fields[10])?;
    profile.last_device = match &fields[11] {
        Value::Nil => None,
        device => {
            let pair = list(device, "last_device")?;
            let [moment, name] = pair else {
                return Err(bad("last_device is [time, name]"));
            };
            Some((int(moment)?, text(name)?))
        }
    };
    for entry in list(&fields[12], "recent")? {
        let pair = list(entry, "recent")?;
        let [key, times] = pair else {
            return Err(bad("recent is [key, times]"));
        };
        profile.recent.insert(text(key)?, ints(times)?);
    }
    if let Some(cart) = fields.get(13) {
        for entry in list(cart, "cart")? {
            let entry = list(entry, "cart entry")?;
            let [moment, sign, product, category, amount] = entry else {
                return Err(bad("cart entry has 5 fields"));
            };
            profile.cart.push((
                int(moment)?,
                int(sign)?,
                text(product)?,
                text(category)?,
                int(amount)?,
            ));
        }
    }
    Ok(profile)
}

fn list<'a>(value: &'a Value, what: &str) -> Result<&'a [Value], RowError> {
    match value {
        Value::Array(items) => Ok(items),
        _ => Err(RowError(format!("{what} is not a list"))),
    }
}

fn int(value: &Value) -> Result<i64, RowError> {
    match value {
        Value::Integer(number) => number
            .as_i64()
            .or(number.as_u64().map(|n| n as i64))
            .ok_or(bad("integer out of range")),
        Value::F64(number) => Ok(number.trunc() as i64),
        Value::F32(number) => Ok(number.trunc() as i64),
        _ => Err(bad("not a number")),
    }
}

fn number(value: &Value) -> Result<f64, RowError> {
    match value {
        Value::F64(number) => Ok(*number),
        Value::F32(number) => Ok(*number as f64),
        Value::Integer(number) => number.as_f64().ok_or(bad("not a number")),
        _ => Err(bad("not a number")),
    }
}

fn int_or_nil(value: &Value) -> Result<Option<i64>, RowError> {
    match value {
        Value::Nil => Ok(None),
        other => int(other).map(Some),
    }
}

fn text(value: &Value) -> Result<String, RowError> {
    match value {
        Value::String(text) => text
            .as_str()
            .map(str::to_string)
            .ok_or(bad("text is not UTF-8")),
        _ => Err(bad("not text")),
    }
}

fn text_or_nil(value: &Value) -> Result<Option<String>, RowError> {
    match value {
        Value::Nil => Ok(None),
        other => text(other).map(Some),
    }
}

fn strings(value: &Value) -> Result<Vec<String>, RowError> {
    list(value, "names")?.iter().map(text).collect()
}

fn ints(value: &Value) -> Result<Vec<i64>, RowError> {
    list(value, "numbers")?.iter().map(int).collect()
}

fn pairs(value: &Value) -> Result<Vec<(i64, i64)>, RowError> {
    list(value, "pairs")?
        .iter()
        .map(|pair| match list(pair, "pair")? {
            [key, value] => Ok((int_unsigned(key)?, int(value)?)),
            _ => Err(bad("a pair has 2 fields")),
        })
        .collect()
}

/// An integer that may be a u64 above i64's range (message digests), kept bit for bit.
fn int_unsigned(value: &Value) -> Result<i64, RowError> {
    match value {
        Value::Integer(number) if number.as_u64().is_some() => {
            Ok(number.as_u64().unwrap_or(0) as i64)
        }
        other => int(other),
    }
}
