//! Segment Spec events (`track`, `page`, `screen`, `identify`, `alias`, `group`):
//! validation and reduction to an [`Event`], or a rejection naming why not.
//!
//! This is the one definition of the event schema. JSON is parsed by jiter and times by
//! speedate, and the rejection details read as pydantic's (the schema's previous home)
//! did: `track.timestamp: Input should be a valid datetime or date, invalid character in
//! year`. A field is found under its Segment name (`userId`) or its snake-case name
//! (`user_id`); the first problem in field order is the one reported.
//!
//! ```
//! use _core::decoding::decode;
//! let event = decode(br#"{"type": "page", "userId": "u1", "timestamp": "2026-11-01T10:00:00Z"}"#, 32768).unwrap();
//! assert_eq!((event.user_id.as_str(), event.timestamp), ("u1", 1793527200.0));
//! let rejected = decode(br#"{"type": "page", "timestamp": "2026-11-01T10:00:00Z"}"#, 32768).unwrap_err();
//! assert_eq!(rejected.reason, "missing_id");
//! ```

use std::collections::BTreeMap;

use jiter::{JsonError, JsonErrorType, JsonObject, JsonValue, LinePosition, PartialMode};
use sha1::{Digest, Sha1};
use speedate::{
    Date, DateTime, DateTimeConfig, MicrosecondsPrecisionOverflowBehavior, TimeConfig,
    TimestampUnit,
};
use strum::EnumMessage;

use crate::events::{Event, Kind};
use crate::pyrepr::{repr, str_of, truncated};
use crate::traits::{Keep, TraitValue, MAX_TRAITS, MAX_TRAIT_TEXT};

/// Why an event was refused: a reason code (see `processors.events.Reason`) and a detail.
#[derive(Clone, Debug, PartialEq)]
pub struct Rejection {
    pub reason: &'static str,
    pub detail: String,
}

const OVERSIZED: &str = "oversized";
const INVALID_JSON: &str = "invalid_json";
const UNKNOWN_TYPE: &str = "unknown_type";
const INVALID_SCHEMA: &str = "invalid_schema";
const INVALID_TIMESTAMP: &str = "invalid_timestamp";
const MISSING_ID: &str = "missing_id";
const INVALID_PROPERTIES: &str = "invalid_properties";
const INVALID_REVENUE: &str = "invalid_revenue";

const TAGS: [&str; 6] = ["track", "page", "screen", "identify", "alias", "group"];
/// Longest id, message id or event name, in characters.
const MAX_ID: usize = 256;
/// Longest category or product id, in characters.
const MAX_NAME: usize = 128;

/// Segment e-commerce track event names segstream understands, with their kinds.
const TRACK_KINDS: [(&str, Kind); 7] = [
    ("Product Viewed", Kind::ProductViewed),
    ("Products Searched", Kind::Search),
    ("Product Added", Kind::CartAdd),
    ("Product Removed", Kind::CartRemove),
    ("Cart Viewed", Kind::CartViewed),
    ("Checkout Started", Kind::Checkout),
    ("Order Completed", Kind::Order),
];

fn rejected(reason: &'static str, detail: impl Into<String>) -> Rejection {
    Rejection {
        reason,
        detail: detail.into(),
    }
}

/// The value of `key` in `object` (the last one when a key repeats).
fn get<'a, 'j>(object: &'a JsonObject<'j>, key: &str) -> Option<&'a JsonValue<'j>> {
    object
        .iter()
        .rev()
        .find(|(k, _)| k.as_ref() == key)
        .map(|(_, v)| v)
}

/// A field under its Segment name or its snake-case name, and the name it was found under.
fn field<'a, 'j>(
    object: &'a JsonObject<'j>,
    alias: &'static str,
    name: &'static str,
) -> (Option<&'a JsonValue<'j>>, &'static str) {
    match get(object, alias) {
        Some(value) => (Some(value), alias),
        None => match get(object, name) {
            Some(value) => (Some(value), name),
            None => (None, alias),
        },
    }
}

/// A schema problem at `location` (`track.userId`).
struct Invalid {
    location: String,
    message: String,
}

type Checked<T> = Result<T, Invalid>;

/// Where a field is: the call's tag and the field's path (`track`, `context.userAgent`);
/// spelled out only when something is wrong there.
#[derive(Clone, Copy)]
struct At<'a> {
    tag: &'a str,
    path: &'a str,
}

impl At<'_> {
    fn invalid(self, message: impl Into<String>) -> Invalid {
        Invalid {
            location: format!("{}.{}", self.tag, self.path),
            message: message.into(),
        }
    }
}

/// Text, numbers read as text (`12345` is `"12345"`), within `least..=most` characters.
fn text(value: &JsonValue, at: At, least: usize, most: usize) -> Checked<String> {
    let found = match value {
        JsonValue::Str(text) => text.to_string(),
        JsonValue::Int(number) => number.to_string(),
        JsonValue::BigInt(number) => number.to_string(),
        JsonValue::Float(number) => number.to_string(),
        _ => return Err(at.invalid("Input should be a valid string")),
    };
    if least > 0 || most < usize::MAX {
        let length = found.chars().count();
        if length < least {
            let unit = if least == 1 {
                "character"
            } else {
                "characters"
            };
            return Err(at.invalid(format!("String should have at least {least} {unit}")));
        }
        if length > most {
            return Err(at.invalid(format!("String should have at most {most} characters")));
        }
    }
    Ok(found)
}

/// Optional text: absent or null is `None`.
fn optional_text(value: Option<&JsonValue>, at: At, most: usize) -> Checked<Option<String>> {
    match value {
        None | Some(JsonValue::Null) => Ok(None),
        Some(value) => text(value, at, 0, most).map(Some),
    }
}

/// Optional text that is only checked, not kept.
fn checked_text(value: Option<&JsonValue>, at: At) -> Checked<()> {
    match value {
        None | Some(JsonValue::Null) => Ok(()),
        Some(
            JsonValue::Str(_) | JsonValue::Int(_) | JsonValue::BigInt(_) | JsonValue::Float(_),
        ) => Ok(()),
        Some(_) => Err(at.invalid("Input should be a valid string")),
    }
}

/// Required text.
fn required_text(value: Option<&JsonValue>, at: At, least: usize) -> Checked<String> {
    match value {
        None => Err(at.invalid("Field required")),
        Some(value) => text(value, at, least, MAX_ID),
    }
}

/// An optional object: absent or null is `None`.
fn optional_object<'a, 'j>(
    value: Option<&'a JsonValue<'j>>,
    at: At,
) -> Checked<Option<&'a JsonObject<'j>>> {
    match value {
        None | Some(JsonValue::Null) => Ok(None),
        Some(JsonValue::Object(object)) => Ok(Some(object)),
        Some(_) => Err(at.invalid("Input should be an object")),
    }
}

const TIME_CONFIG: DateTimeConfig = DateTimeConfig {
    timestamp_unit: TimestampUnit::Infer,
    time_config: TimeConfig {
        microseconds_precision_overflow_behavior: MicrosecondsPrecisionOverflowBehavior::Truncate,
        unix_timestamp_offset: Some(0),
    },
};

/// The epoch seconds of a time written as event times are (an ISO 8601 date-time, naive
/// being UTC, or a date), or `None` when `text` is not one.
///
/// ```
/// use _core::decoding::iso_time;
/// assert_eq!(iso_time("2026-11-01T10:00:00+01:00"), Some(1793523600.0));
/// assert_eq!(iso_time("2026-11-01"), Some(1793491200.0));
/// assert_eq!(iso_time("soon"), None);
/// ```
pub fn iso_time(text: &str) -> Option<f64> {
    let value = JsonValue::Str(text.into());
    timestamp(Some(&value), At { tag: "", path: "" }).ok()
}

/// Event time in epoch seconds: an ISO 8601 date-time (naive is UTC), a date, or a Unix
/// time in seconds or (above 2e10) milliseconds.
fn timestamp(value: Option<&JsonValue>, at: At) -> Checked<f64> {
    let parsed = match value {
        None => return Err(at.invalid("Field required")),
        Some(JsonValue::Str(text)) => {
            match DateTime::parse_bytes_with_config(text.as_bytes(), &TIME_CONFIG) {
                Ok(moment) => moment,
                Err(_) => match Date::parse_bytes(text.as_bytes()) {
                    Ok(date) => DateTime {
                        date,
                        time: speedate::Time {
                            hour: 0,
                            minute: 0,
                            second: 0,
                            microsecond: 0,
                            tz_offset: None,
                        },
                    },
                    Err(error) => {
                        let message = error.get_documentation().unwrap_or_default();
                        return Err(at.invalid(format!(
                            "Input should be a valid datetime or date, {message}"
                        )));
                    }
                },
            }
        }
        Some(JsonValue::Int(seconds)) => unix_time(*seconds, 0, at)?,
        Some(JsonValue::Float(seconds)) => {
            if seconds.is_nan() {
                return Err(
                    at.invalid("Input should be a valid datetime, NaN values not permitted")
                );
            }
            let whole = seconds.floor();
            let micros = ((seconds - whole) * 1_000_000.0).round() as u32;
            unix_time(whole as i64, micros, at)?
        }
        Some(_) => return Err(at.invalid("Input should be a valid datetime")),
    };
    let offset = parsed.time.tz_offset.unwrap_or(0) as i64;
    let date = &parsed.date;
    let days = days_from_civil(date.year as i64, date.month as i64, date.day as i64);
    let time = &parsed.time;
    let seconds =
        days * 86_400 + time.hour as i64 * 3_600 + time.minute as i64 * 60 + time.second as i64
            - offset;
    let micros = seconds as i128 * 1_000_000 + time.microsecond as i128;
    Ok(micros as f64 / 1e6)
}

fn unix_time(seconds: i64, micros: u32, at: At) -> Checked<DateTime> {
    DateTime::from_timestamp_with_config(seconds, micros, &TIME_CONFIG).map_err(|error| {
        let message = error.get_documentation().unwrap_or_default();
        at.invalid(format!("Input should be a valid datetime, {message}"))
    })
}

/// Days from 1970-01-01 to a proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let of_year = (153 * month_index + 2) / 5 + day - 1;
    let of_era_days = of_era * 365 + of_era / 4 - of_era / 100 + of_year;
    era * 146_097 + of_era_days - 719_468
}

/// The fields every Segment message carries, validated.
struct Common {
    message_id: Option<String>,
    user_id: Option<String>,
    anonymous_id: Option<String>,
    timestamp: f64,
    device: Option<String>,
}

fn common(object: &JsonObject, tag: &str) -> Checked<Common> {
    let at = |path| At { tag, path };
    let (value, name) = field(object, "messageId", "message_id");
    let message_id = optional_text(value, at(name), MAX_ID)?;
    let (value, name) = field(object, "userId", "user_id");
    let user_id = optional_text(value, at(name), MAX_ID)?;
    let (value, name) = field(object, "anonymousId", "anonymous_id");
    let anonymous_id = optional_text(value, at(name), MAX_ID)?;
    let moment = timestamp(get(object, "timestamp"), at("timestamp"))?;
    let mut device = None;
    if let Some(context) = optional_object(get(object, "context"), at("context"))? {
        if let Some(found) = optional_object(get(context, "device"), at("context.device"))? {
            device = optional_text(get(found, "type"), at("context.device.type"), usize::MAX)?;
        }
        let (value, name) = field(context, "userAgent", "user_agent");
        let path = if name == "userAgent" {
            "context.userAgent"
        } else {
            "context.user_agent"
        };
        checked_text(value, at(path))?;
        checked_text(get(context, "locale"), at("context.locale"))?;
    }
    Ok(Common {
        message_id,
        user_id,
        anonymous_id,
        timestamp: moment,
        device,
    })
}

/// What a `track`, `alias` or other call adds to the common fields.
enum Call<'a, 'j> {
    Track {
        event: String,
        properties: Option<&'a JsonObject<'j>>,
    },
    Page,
    Identify,
    Alias {
        previous_id: String,
    },
    Group,
}

fn call<'a, 'j>(object: &'a JsonObject<'j>, tag: &str) -> Checked<Call<'a, 'j>> {
    Ok(match tag {
        "track" => Call::Track {
            event: required_text(get(object, "event"), At { tag, path: "event" }, 1)?,
            properties: optional_object(
                get(object, "properties"),
                At {
                    tag,
                    path: "properties",
                },
            )?,
        },
        "page" | "screen" => {
            checked_text(get(object, "name"), At { tag, path: "name" })?;
            Call::Page
        }
        "identify" => Call::Identify,
        "alias" => {
            let (value, path) = field(object, "previousId", "previous_id");
            Call::Alias {
                previous_id: required_text(value, At { tag, path }, 1)?,
            }
        }
        _ => Call::Group,
    })
}

/// A property with an unusable value: its name, and what was expected.
fn unusable(reason: &'static str, name: &str, value: &JsonValue, expected: &str) -> Rejection {
    let got = truncated(repr(value), 60);
    rejected(
        reason,
        format!("properties.{name}: expected {expected}, got {got}"),
    )
}

/// Whether Python would take the value for false (`None`, `0`, `""`, `[]`, `{}`, ...).
fn falsy(value: &JsonValue) -> bool {
    match value {
        JsonValue::Null => true,
        JsonValue::Bool(flag) => !flag,
        JsonValue::Int(number) => *number == 0,
        JsonValue::BigInt(_) => false,
        JsonValue::Float(number) => *number == 0.0,
        JsonValue::Str(text) => text.is_empty(),
        JsonValue::Array(items) => items.is_empty(),
        JsonValue::Object(object) => object.is_empty(),
    }
}

/// Python's `float(text)`: surrounding whitespace and digit-separating underscores allowed.
fn python_float(text: &str) -> Option<f64> {
    let trimmed = text.trim();
    let bytes = trimmed.as_bytes();
    let mut plain = String::with_capacity(trimmed.len());
    for (index, c) in trimmed.char_indices() {
        if c == '_' {
            let before = index > 0 && bytes[index - 1].is_ascii_digit();
            let after = bytes.get(index + 1).is_some_and(u8::is_ascii_digit);
            if !(before && after) {
                return None;
            }
        } else {
            plain.push(c);
        }
    }
    let lower = plain.to_ascii_lowercase();
    let unsigned = lower.trim_start_matches(['+', '-']);
    if !matches!(unsigned, "inf" | "infinity" | "nan")
        && !unsigned
            .bytes()
            .all(|b| b.is_ascii_digit() || b".e+-".contains(&b))
    {
        return None;
    }
    plain.parse().ok()
}

/// A non-negative finite amount, `None` when absent.
fn amount(
    value: Option<&JsonValue>,
    name: &str,
    reason: &'static str,
) -> Result<Option<f64>, Rejection> {
    let Some(value) = value.filter(|v| !matches!(v, JsonValue::Null)) else {
        return Ok(None);
    };
    let number = match value {
        JsonValue::Int(number) => *number as f64,
        JsonValue::BigInt(number) => number.to_string().parse().unwrap_or(f64::NAN),
        JsonValue::Float(number) => *number,
        JsonValue::Str(text) => python_float(text).unwrap_or(f64::NAN),
        _ => f64::NAN,
    };
    if !number.is_finite() || number < 0.0 {
        return Err(unusable(reason, name, value, "a non-negative number"));
    }
    Ok(Some(number))
}

/// A category name, `None` when absent or empty.
fn category(value: Option<&JsonValue>, name: &str) -> Result<Option<String>, Rejection> {
    match value {
        None | Some(JsonValue::Null) => Ok(None),
        Some(JsonValue::Str(text)) if text.is_empty() => Ok(None),
        Some(JsonValue::Str(text)) if text.chars().count() <= MAX_NAME => {
            Ok(Some(text.to_string()))
        }
        Some(other) => Err(unusable(INVALID_PROPERTIES, name, other, "a category name")),
    }
}

/// Revenue (`revenue`, else `total`, else 0) and the order's product categories.
fn order(properties: Option<&JsonObject>) -> Result<(f64, Vec<String>), Rejection> {
    let Some(properties) = properties else {
        return Ok((0.0, Vec::new()));
    };
    let revenue = match amount(get(properties, "revenue"), "revenue", INVALID_REVENUE)? {
        Some(revenue) => revenue,
        None => amount(get(properties, "total"), "total", INVALID_REVENUE)?.unwrap_or(0.0),
    };
    let mut categories: Vec<String> = Vec::new();
    let products = get(properties, "products").filter(|p| !falsy(p));
    if let Some(products) = products {
        let JsonValue::Array(items) = products else {
            return Err(unusable(INVALID_PROPERTIES, "products", products, "a list"));
        };
        for (index, product) in items.iter().enumerate() {
            let JsonValue::Object(product) = product else {
                let name = format!("products.{index}");
                return Err(unusable(INVALID_PROPERTIES, &name, product, "an object"));
            };
            let name = format!("products.{index}.category");
            if let Some(found) = category(get(product, "category"), &name)? {
                if !categories.contains(&found) {
                    categories.push(found);
                }
            }
        }
    }
    Ok((revenue, categories))
}

/// Cart value (price times quantity, 0 for a view), the product's category and its id
/// (`product_id`, else `sku`, else `name`).
fn product(
    properties: Option<&JsonObject>,
    kind: Kind,
) -> Result<(f64, Vec<String>, Option<String>), Rejection> {
    let Some(properties) = properties else {
        return Ok((0.0, Vec::new(), None));
    };
    let found = category(get(properties, "category"), "category")?;
    let price = amount(get(properties, "price"), "price", INVALID_PROPERTIES)?;
    let quantity = amount(get(properties, "quantity"), "quantity", INVALID_PROPERTIES)?;
    let value = match (kind, price) {
        (Kind::ProductViewed, _) | (_, None) => 0.0,
        (_, Some(price)) => price * quantity.unwrap_or(1.0),
    };
    let id = ["product_id", "sku", "name"]
        .into_iter()
        .filter_map(|name| get(properties, name))
        .find(|value| match value {
            JsonValue::Null | JsonValue::Bool(_) | JsonValue::Array(_) | JsonValue::Object(_) => {
                false
            }
            JsonValue::Str(text) => !text.is_empty(),
            _ => true,
        })
        .map(|value| truncated(str_of(value), MAX_NAME));
    Ok((value, found.into_iter().collect(), id))
}

/// What is wrong with a document that is not JSON, and where: an invalid UTF-8 sequence
/// is placed at its first byte.
fn json_problem(error: &JsonError, raw: &[u8]) -> String {
    let index = match error.error_type {
        JsonErrorType::InvalidUnicodeCodePoint => error.index.saturating_sub(1),
        _ => error.index,
    };
    let position = LinePosition::find(raw, index);
    format!("Invalid JSON: {} at {position}", error.error_type)
}

/// Validate one raw Segment message and reduce it to an [`Event`], keeping no traits,
/// names or properties.
pub fn decode(raw: &[u8], max_bytes: usize) -> Result<Event, Rejection> {
    decode_projected(raw, max_bytes, &Projection::default())
}

/// What the decoder keeps beyond the built-in features, from what the rules in force read:
/// identify traits, the names of the `track` events and `page`/`screen` calls the rules
/// count, and, for those calls only, the properties at `properties` (dotted paths from the
/// message: `properties.plan.tier`, `name`, `context.device.type`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Projection {
    pub traits: Keep,
    pub events: Keep,
    pub properties: Vec<String>,
}

/// Like [`decode`], keeping what `projection` names: traits from `traits` (an `identify`
/// call's) and `context.traits` (any call's; `traits` wins where both set one), and a
/// counted call's name and properties.
///
/// ```
/// use _core::decoding::{decode_projected, Projection};
/// use _core::traits::{Keep, TraitValue};
/// let projection = Projection {
///     events: Keep::Named(["Video Played".to_string()].into()),
///     properties: vec!["properties.show.genre".into()],
///     ..Projection::default()
/// };
/// let raw = br#"{"type": "track", "event": "Video Played", "userId": "u1",
///     "timestamp": "2026-11-01T10:00:00Z", "properties": {"show": {"genre": "drama"}}}"#;
/// let event = decode_projected(raw, 32768, &projection).unwrap();
/// assert_eq!(event.name.as_deref(), Some("Video Played"));
/// assert_eq!(event.properties, vec![("properties.show.genre".into(), TraitValue::Text("drama".into()))]);
/// ```
pub fn decode_projected(
    raw: &[u8],
    max_bytes: usize,
    projection: &Projection,
) -> Result<Event, Rejection> {
    if raw.len() > max_bytes {
        return Err(rejected(
            OVERSIZED,
            format!("{} bytes exceeds the limit of {max_bytes}", raw.len()),
        ));
    }
    let document = JsonValue::parse_with_config(raw, true, PartialMode::Off)
        .map_err(|error| rejected(INVALID_JSON, json_problem(&error, raw)))?;
    let JsonValue::Object(object) = &document else {
        return Err(rejected(INVALID_SCHEMA, "Input should be an object"));
    };
    let tag = match get(object, "type") {
        None => {
            return Err(rejected(
                UNKNOWN_TYPE,
                "Unable to extract tag using discriminator 'type'",
            ))
        }
        Some(JsonValue::Str(tag)) if TAGS.contains(&tag.as_ref()) => tag.to_string(),
        Some(other) => {
            let expected: Vec<String> = TAGS.iter().map(|t| format!("'{t}'")).collect();
            return Err(rejected(
                UNKNOWN_TYPE,
                format!(
                    "Input tag '{}' found using 'type' does not match any of the expected tags: {}",
                    str_of(other),
                    expected.join(", ")
                ),
            ));
        }
    };
    let validated = common(object, &tag).and_then(|c| call(object, &tag).map(|call| (c, call)));
    let (common, call) = validated.map_err(|problem| {
        let reason = if problem.location.ends_with(".timestamp") {
            INVALID_TIMESTAMP
        } else {
            INVALID_SCHEMA
        };
        rejected(reason, format!("{}: {}", problem.location, problem.message))
    })?;
    let user_id = match (&common.user_id, &common.anonymous_id) {
        (Some(user), _) if !user.is_empty() => user.clone(),
        (_, Some(anonymous)) if !anonymous.is_empty() => anonymous.clone(),
        _ => {
            return Err(rejected(
                MISSING_ID,
                "neither userId nor anonymousId is set",
            ))
        }
    };
    let identified = common.user_id.as_deref().is_some_and(|u| !u.is_empty());
    let mut event = Event {
        user_id,
        message_id: match common.message_id {
            Some(id) if !id.is_empty() => id,
            _ => format!("sha1:{:x}", Sha1::digest(raw)),
        },
        kind: Kind::Other,
        timestamp: common.timestamp,
        value: 0.0,
        categories: Vec::new(),
        device: common
            .device
            .filter(|d| !d.is_empty())
            .map(|d| d.to_lowercase()),
        anonymous_id: if identified {
            common.anonymous_id
        } else {
            None
        },
        previous_id: None,
        product: None,
        traits: if projection.traits.nothing() {
            Vec::new()
        } else {
            traits_of(object, &tag, &projection.traits)
        },
        name: None,
        properties: Vec::new(),
    };
    match call {
        Call::Track {
            event: name,
            properties,
        } => {
            let kind = TRACK_KINDS
                .iter()
                .find(|(known, _)| *known == name)
                .map_or(Kind::Other, |(_, kind)| *kind);
            if projection.events.keeps(&name) {
                event.properties = properties_of(object, &projection.properties);
                event.name = Some(name);
            }
            event.kind = kind;
            match kind {
                Kind::Order => (event.value, event.categories) = order(properties)?,
                Kind::ProductViewed | Kind::CartAdd | Kind::CartRemove => {
                    (event.value, event.categories, event.product) = product(properties, kind)?
                }
                _ => {}
            }
        }
        Call::Page => {
            event.kind = Kind::Page;
            let named = get(object, "name").filter(|n| !matches!(n, JsonValue::Null));
            if let Some(name) = named.map(str_of) {
                if projection.events.keeps(&name) {
                    event.properties = properties_of(object, &projection.properties);
                    event.name = Some(name);
                }
            }
        }
        Call::Identify => event.kind = Kind::Identify,
        Call::Alias { previous_id } => {
            event.kind = Kind::Alias;
            event.previous_id = Some(previous_id);
        }
        Call::Group => {}
    }
    Ok(event)
}

/// The traits `keep` names, from `context.traits` and then an `identify` call's own
/// `traits` (a `group` call's are the group's), in name order: a nested trait under its
/// dotted path (`address.country`), each a null, a boolean, a number or text (cut to
/// [`MAX_TRAIT_TEXT`] characters); lists are not kept.
fn traits_of(object: &JsonObject, tag: &str, keep: &Keep) -> Vec<(String, TraitValue)> {
    let mut found: BTreeMap<String, TraitValue> = BTreeMap::new();
    let context = match get(object, "context") {
        Some(JsonValue::Object(context)) => get(context, "traits"),
        _ => None,
    };
    let own = if tag == "identify" {
        get(object, "traits")
    } else {
        None
    };
    for source in [context, own].into_iter().flatten() {
        let JsonValue::Object(source) = source else {
            continue;
        };
        match keep {
            Keep::Nothing => {}
            Keep::Named(names) => {
                for name in names {
                    if let Some(value) = at_path(source, name).and_then(trait_value) {
                        found.insert(name.clone(), value);
                    }
                }
            }
            Keep::All => flatten(source, "", &mut found),
        }
    }
    found.into_iter().take(MAX_TRAITS).collect()
}

/// The values at `paths` in the message that are a null, a boolean, a number or text.
fn properties_of(object: &JsonObject, paths: &[String]) -> Vec<(String, TraitValue)> {
    paths
        .iter()
        .filter_map(|path| {
            let value = at_path(object, path).and_then(trait_value)?;
            Some((path.clone(), value))
        })
        .collect()
}

/// The value at a dotted path inside `object`.
fn at_path<'a, 'j>(object: &'a JsonObject<'j>, path: &str) -> Option<&'a JsonValue<'j>> {
    let mut parts = path.split('.');
    let mut value = get(object, parts.next()?)?;
    for part in parts {
        let JsonValue::Object(inner) = value else {
            return None;
        };
        value = get(inner, part)?;
    }
    Some(value)
}

fn flatten(object: &JsonObject, prefix: &str, found: &mut BTreeMap<String, TraitValue>) {
    for (key, value) in object.iter() {
        let name = format!("{prefix}{key}");
        match value {
            JsonValue::Object(inner) => flatten(inner, &format!("{name}."), found),
            other => {
                if let Some(value) = trait_value(other) {
                    found.insert(name, value);
                }
            }
        }
    }
}

fn trait_value(value: &JsonValue) -> Option<TraitValue> {
    Some(match value {
        JsonValue::Null => TraitValue::Null,
        JsonValue::Bool(flag) => TraitValue::Bool(*flag),
        JsonValue::Int(number) => TraitValue::Number(*number as f64),
        JsonValue::BigInt(number) => TraitValue::Number(number.to_string().parse().ok()?),
        JsonValue::Float(number) if number.is_finite() => TraitValue::Number(*number),
        JsonValue::Str(text) => TraitValue::Text(text.chars().take(MAX_TRAIT_TEXT).collect()),
        _ => return None,
    })
}
