//! Reading a profile as named features as of an event time.
//!
//! Features come in groups computed together; a [`Reading`] computes a group the first
//! time one of its features is read, so a rule set that reads few groups costs little.
//! The README's "Features" section defines each feature, its unit, window and edge cases.
//!
//! ```
//! use _core::events::{Event, Kind};
//! use _core::features::{index_of, Reading};
//! use _core::profile::Profile;
//! let mut profile = Profile::default();
//! profile.apply(&Event { value: 30.0, ..Event::new("u1", "m1", Kind::Order, 1_060.0) });
//! let mut reading = Reading::new(&profile, 1_060.0, 1_800.0);
//! assert_eq!(reading.number(index_of("orders_1h").unwrap()), 1.0);
//! assert_eq!(reading.number(index_of("revenue_lifetime").unwrap()), 30.0);
//! ```

use std::sync::OnceLock;

use crate::events::Kind;
use crate::profile::{
    kind_slot, Profile, COUNTED, DAY, EVENTS, MINUTE, MOBILE, REVENUE, SESSION_CART, SESSION_GAP,
    SESSION_ORDER,
};
use crate::traits::TraitValue;
use crate::windows::SlidingCounts;

/// A feature's value: a number, or a name for the two text features.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Number(f64),
    Text(String),
}

/// The groups features are computed in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    Counts1h,
    Counts24h,
    Counts7d,
    Counts30d,
    Revenue,
    Rfm,
    Recency,
    Sessions,
    Affinity,
    Velocity,
    Cart,
}

/// Every feature, with its group, in the order of `FEATURE_GROUPS`.
pub const FEATURES: [(&str, Group); 52] = [
    ("page_views_1h", Group::Counts1h),
    ("product_views_1h", Group::Counts1h),
    ("searches_1h", Group::Counts1h),
    ("cart_adds_1h", Group::Counts1h),
    ("checkouts_1h", Group::Counts1h),
    ("orders_1h", Group::Counts1h),
    ("page_views_24h", Group::Counts24h),
    ("product_views_24h", Group::Counts24h),
    ("searches_24h", Group::Counts24h),
    ("cart_adds_24h", Group::Counts24h),
    ("checkouts_24h", Group::Counts24h),
    ("orders_24h", Group::Counts24h),
    ("page_views_7d", Group::Counts7d),
    ("product_views_7d", Group::Counts7d),
    ("searches_7d", Group::Counts7d),
    ("cart_adds_7d", Group::Counts7d),
    ("checkouts_7d", Group::Counts7d),
    ("orders_7d", Group::Counts7d),
    ("page_views_30d", Group::Counts30d),
    ("product_views_30d", Group::Counts30d),
    ("searches_30d", Group::Counts30d),
    ("cart_adds_30d", Group::Counts30d),
    ("checkouts_30d", Group::Counts30d),
    ("orders_30d", Group::Counts30d),
    ("revenue_7d", Group::Revenue),
    ("revenue_30d", Group::Revenue),
    ("revenue_lifetime", Group::Revenue),
    ("orders_lifetime", Group::Revenue),
    ("avg_order_value", Group::Revenue),
    ("frequency", Group::Rfm),
    ("recency", Group::Rfm),
    ("T", Group::Rfm),
    ("monetary_value", Group::Rfm),
    ("days_since_last_order", Group::Recency),
    ("days_since_last_seen", Group::Recency),
    ("days_since_first_seen", Group::Recency),
    ("events_lifetime", Group::Recency),
    ("last_device", Group::Recency),
    ("sessions_7d", Group::Sessions),
    ("session_duration_7d", Group::Sessions),
    ("bounce_rate_7d", Group::Sessions),
    ("abandoned_carts_7d", Group::Sessions),
    ("mobile_share_30d", Group::Affinity),
    ("top_category_30d", Group::Affinity),
    ("top_category_share_30d", Group::Affinity),
    ("events_per_active_day_7d", Group::Velocity),
    ("events_per_active_day_prev_7d", Group::Velocity),
    ("engagement_velocity", Group::Velocity),
    ("cart_products", Group::Cart),
    ("cart_value", Group::Cart),
    ("cart_idle_minutes", Group::Cart),
    ("cart_abandoned", Group::Cart),
];

/// The index of each feature in [`FEATURES`].
#[allow(missing_docs)]
pub mod at {
    pub const PAGE_VIEWS_1H: usize = 0;
    pub const PRODUCT_VIEWS_1H: usize = 1;
    pub const SEARCHES_1H: usize = 2;
    pub const CART_ADDS_1H: usize = 3;
    pub const CHECKOUTS_1H: usize = 4;
    pub const ORDERS_1H: usize = 5;
    pub const PAGE_VIEWS_24H: usize = 6;
    pub const PRODUCT_VIEWS_24H: usize = 7;
    pub const SEARCHES_24H: usize = 8;
    pub const CART_ADDS_24H: usize = 9;
    pub const CHECKOUTS_24H: usize = 10;
    pub const ORDERS_24H: usize = 11;
    pub const PAGE_VIEWS_7D: usize = 12;
    pub const PRODUCT_VIEWS_7D: usize = 13;
    pub const SEARCHES_7D: usize = 14;
    pub const CART_ADDS_7D: usize = 15;
    pub const CHECKOUTS_7D: usize = 16;
    pub const ORDERS_7D: usize = 17;
    pub const PAGE_VIEWS_30D: usize = 18;
    pub const PRODUCT_VIEWS_30D: usize = 19;
    pub const SEARCHES_30D: usize = 20;
    pub const CART_ADDS_30D: usize = 21;
    pub const CHECKOUTS_30D: usize = 22;
    pub const ORDERS_30D: usize = 23;
    pub const REVENUE_7D: usize = 24;
    pub const REVENUE_30D: usize = 25;
    pub const REVENUE_LIFETIME: usize = 26;
    pub const ORDERS_LIFETIME: usize = 27;
    pub const AVG_ORDER_VALUE: usize = 28;
    pub const FREQUENCY: usize = 29;
    pub const RECENCY: usize = 30;
    pub const T: usize = 31;
    pub const MONETARY_VALUE: usize = 32;
    pub const DAYS_SINCE_LAST_ORDER: usize = 33;
    pub const DAYS_SINCE_LAST_SEEN: usize = 34;
    pub const DAYS_SINCE_FIRST_SEEN: usize = 35;
    pub const EVENTS_LIFETIME: usize = 36;
    pub const LAST_DEVICE: usize = 37;
    pub const SESSIONS_7D: usize = 38;
    pub const SESSION_DURATION_7D: usize = 39;
    pub const BOUNCE_RATE_7D: usize = 40;
    pub const ABANDONED_CARTS_7D: usize = 41;
    pub const MOBILE_SHARE_30D: usize = 42;
    pub const TOP_CATEGORY_30D: usize = 43;
    pub const TOP_CATEGORY_SHARE_30D: usize = 44;
    pub const EVENTS_PER_ACTIVE_DAY_7D: usize = 45;
    pub const EVENTS_PER_ACTIVE_DAY_PREV_7D: usize = 46;
    pub const ENGAGEMENT_VELOCITY: usize = 47;
    pub const CART_PRODUCTS: usize = 48;
    pub const CART_VALUE: usize = 49;
    pub const CART_IDLE_MINUTES: usize = 50;
    pub const CART_ABANDONED: usize = 51;
}

/// A set of features, one bit per index of [`FEATURES`].
pub type FeatureSet = u64;

pub const TEXT_FEATURES: [&str; 2] = ["last_device", "top_category_30d"];
/// Features that grow with event time alone; `timing::crosses_at` says when they pass a
/// threshold.
pub const CLOCK_FEATURES: [&str; 5] = [
    "days_since_last_order",
    "days_since_last_seen",
    "days_since_first_seen",
    "T",
    "cart_idle_minutes",
];
/// Features that only events change, never the passing of time.
pub const LIFETIME_FEATURES: [&str; 8] = [
    "orders_lifetime",
    "revenue_lifetime",
    "avg_order_value",
    "events_lifetime",
    "last_device",
    "frequency",
    "recency",
    "monetary_value",
];

/// The index of the feature `name` in [`FEATURES`].
pub fn index_of(name: &str) -> Option<usize> {
    FEATURES.iter().position(|(feature, _)| *feature == name)
}

/// The group of the feature at `index`.
pub fn group_of(index: usize) -> Group {
    FEATURES[index].1
}

/// The set of the named features (names not features are left out).
pub fn set_of(names: &[&str]) -> FeatureSet {
    names
        .iter()
        .filter_map(|name| index_of(name))
        .fold(0, |set, index| set | 1 << index)
}

/// The indexes of the numeric features, in the order of feature vectors.
pub fn numeric_features() -> &'static [usize] {
    static NUMERIC: OnceLock<Vec<usize>> = OnceLock::new();
    NUMERIC.get_or_init(|| {
        let text = set_of(&TEXT_FEATURES);
        (0..FEATURES.len())
            .filter(|i| text & (1 << i) == 0)
            .collect()
    })
}

/// The window of a windowed count: its tier, buckets summed, skip and counter slot.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CountWindow {
    pub tier: Tier,
    pub buckets: i64,
    pub slot: usize,
}

/// The bucket tiers of a profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    Minutes,
    Hours,
    Days,
}

impl Tier {
    pub fn of(self, profile: &Profile) -> &SlidingCounts {
        match self {
            Tier::Minutes => &profile.minutes,
            Tier::Hours => &profile.hours,
            Tier::Days => &profile.days,
        }
    }
}

const WINDOWS: [(Tier, i64); 4] = [
    (Tier::Minutes, 12),
    (Tier::Hours, 24),
    (Tier::Days, 7),
    (Tier::Days, 30),
];

/// The window of the feature at `index` when it is a windowed sum (counts and revenue).
pub fn count_window(index: usize) -> Option<CountWindow> {
    if index < 24 {
        let (tier, buckets) = WINDOWS[index / 6];
        return Some(CountWindow {
            tier,
            buckets,
            slot: index % 6,
        });
    }
    match FEATURES[index].0 {
        "revenue_7d" => Some(CountWindow {
            tier: Tier::Days,
            buckets: 7,
            slot: REVENUE,
        }),
        "revenue_30d" => Some(CountWindow {
            tier: Tier::Days,
            buckets: 30,
            slot: REVENUE,
        }),
        _ => None,
    }
}

/// The features an event of `kind` may change, besides clock features and bursts;
/// `started`: it changed the sessions' starts.
pub fn touched_features(kind: Kind, started: bool) -> FeatureSet {
    static TABLE: OnceLock<[[FeatureSet; 2]; 11]> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut table = [[0; 2]; 11];
        for code in 0..11 {
            let kind = Kind::from_code(code).expect("a kind code");
            for started in [false, true] {
                table[code as usize][started as usize] = touched_by(kind, started);
            }
        }
        table
    });
    table[kind as usize][started as usize]
}

fn touched_by(kind: Kind, started: bool) -> FeatureSet {
    if !kind.is_behaviour() {
        return 0;
    }
    let mut groups = vec![
        Group::Recency,
        Group::Sessions,
        Group::Affinity,
        Group::Velocity,
    ];
    match kind {
        Kind::Order => groups.extend([Group::Revenue, Group::Rfm, Group::Cart]),
        Kind::CartAdd | Kind::CartRemove => groups.push(Group::Cart),
        _ => {}
    }
    let mut set: FeatureSet = 0;
    for (index, (_, group)) in FEATURES.iter().enumerate() {
        if groups.contains(group) {
            set |= 1 << index;
        }
    }
    if let Some(slot) = kind_slot(kind) {
        for window in 0..4 {
            set |= 1 << (window * 6 + slot);
        }
    }
    if !started {
        set &= !set_of(&["sessions_7d"]);
    }
    set & !set_of(&CLOCK_FEATURES)
}

/// Python's `round(value, digits)`: to the nearest decimal, ties to even on the exact value.
pub fn py_round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    let scaled = value * scale;
    let fraction = scaled - scaled.floor();
    if (fraction - 0.5).abs() > 1e-6 && scaled.abs() < 1e15 {
        return scaled.round() / scale;
    }
    format!("{:.*}", digits as usize, value)
        .parse()
        .unwrap_or(value)
}

/// Days from `moment` to `as_of` (never negative), -1 when there is no moment.
pub fn days_since(moment: Option<i64>, as_of: f64) -> f64 {
    match moment {
        None => -1.0,
        Some(moment) => py_round((as_of - moment as f64).max(0.0) / DAY as f64, 4),
    }
}

/// Minutes from `moment` to `as_of` (never negative).
pub fn minutes_since(moment: i64, as_of: f64) -> f64 {
    py_round((as_of - moment as f64).max(0.0) / MINUTE as f64, 2)
}

fn day_of(as_of: f64) -> i64 {
    (as_of / DAY as f64).floor() as i64
}

/// A profile's features as of a time, each group computed when first read.
pub struct Reading<'a> {
    pub profile: &'a Profile,
    pub as_of: f64,
    pub cart_after: f64,
    numbers: [f64; FEATURES.len()],
    last_device: String,
    top_category: String,
    /// Bit `g` set: group `g` is computed.
    computed: u16,
    /// The rules' computed traits read so far, by index (see `RuleSet::computed_value`).
    pub traits: Vec<Option<TraitValue>>,
    /// The predictions, once read (see `Predictor::predict`).
    pub predictions: Option<[f64; crate::predictions::PREDICTIONS.len()]>,
}

impl<'a> Reading<'a> {
    pub fn new(profile: &'a Profile, as_of: f64, cart_after: f64) -> Reading<'a> {
        Reading {
            profile,
            as_of,
            cart_after,
            numbers: [f64::NAN; FEATURES.len()],
            last_device: String::new(),
            top_category: String::new(),
            computed: 0,
            traits: Vec::new(),
            predictions: None,
        }
    }

    fn ensure(&mut self, index: usize) {
        let group = group_of(index);
        if self.computed & (1 << group as u16) == 0 {
            self.computed |= 1 << group as u16;
            self.compute(group);
        }
    }

    /// The value of a numeric feature (a text feature reads as NaN).
    pub fn number(&mut self, index: usize) -> f64 {
        self.ensure(index);
        self.numbers[index]
    }

    /// The value of a text feature (a numeric one reads as empty).
    pub fn text(&mut self, index: usize) -> &str {
        self.ensure(index);
        match index {
            at::LAST_DEVICE => &self.last_device,
            at::TOP_CATEGORY_30D => &self.top_category,
            _ => "",
        }
    }

    /// The value of the feature at `index`.
    pub fn value(&mut self, index: usize) -> Value {
        match index {
            at::LAST_DEVICE | at::TOP_CATEGORY_30D => Value::Text(self.text(index).to_string()),
            _ => Value::Number(self.number(index)),
        }
    }

    /// Read the feature at `index` as `value` from now on (what-if evaluation).
    pub fn assume(&mut self, index: usize, value: Value) {
        self.ensure(index);
        match (index, value) {
            (at::LAST_DEVICE, Value::Text(text)) => self.last_device = text,
            (at::TOP_CATEGORY_30D, Value::Text(text)) => self.top_category = text,
            (at::LAST_DEVICE | at::TOP_CATEGORY_30D, Value::Number(_)) => {}
            (_, Value::Number(number)) => self.numbers[index] = number,
            (_, Value::Text(_)) => self.numbers[index] = f64::NAN,
        }
    }

    /// Every feature, in [`FEATURES`] order.
    pub fn all(&mut self) -> Vec<Value> {
        (0..FEATURES.len()).map(|i| self.value(i)).collect()
    }

    fn compute(&mut self, group: Group) {
        let profile = self.profile;
        let as_of = self.as_of;
        let numbers = &mut self.numbers;
        match group {
            Group::Counts1h | Group::Counts24h | Group::Counts7d | Group::Counts30d => {
                let window = group as usize;
                let (tier, buckets) = WINDOWS[window];
                let mut counts = [0i64; COUNTED.len()];
                tier.of(profile).sum_into(as_of, buckets, 0, &mut counts);
                for (slot, count) in counts.iter().enumerate() {
                    numbers[window * 6 + slot] = *count as f64;
                }
            }
            Group::Revenue => {
                let revenue: i64 = profile.purchase_days.values().sum();
                let days = &profile.days;
                numbers[at::REVENUE_7D] = days.slot(as_of, 7, 0, REVENUE) as f64 / 100.0;
                numbers[at::REVENUE_30D] = days.slot(as_of, 30, 0, REVENUE) as f64 / 100.0;
                numbers[at::REVENUE_LIFETIME] = revenue as f64 / 100.0;
                numbers[at::ORDERS_LIFETIME] = profile.orders as f64;
                numbers[at::AVG_ORDER_VALUE] = if profile.orders != 0 {
                    revenue as f64 / profile.orders as f64 / 100.0
                } else {
                    0.0
                };
            }
            Group::Rfm => {
                let (frequency, recency, age, monetary) =
                    rfm(profile.purchase_days.iter(), day_of(as_of));
                numbers[at::FREQUENCY] = frequency;
                numbers[at::RECENCY] = recency;
                numbers[at::T] = age;
                numbers[at::MONETARY_VALUE] = monetary;
            }
            Group::Recency => {
                numbers[at::DAYS_SINCE_LAST_ORDER] = days_since(profile.last_order, as_of);
                numbers[at::DAYS_SINCE_LAST_SEEN] = days_since(profile.last_seen, as_of);
                numbers[at::DAYS_SINCE_FIRST_SEEN] = days_since(profile.first_seen, as_of);
                numbers[at::EVENTS_LIFETIME] = profile.events as f64;
                self.last_device = profile
                    .last_device
                    .as_ref()
                    .map(|d| d.1.clone())
                    .unwrap_or_default();
            }
            Group::Sessions => self.sessions(),
            Group::Affinity => self.affinity(),
            Group::Velocity => {
                let days = &profile.days;
                let recent = days.slot(as_of, 7, 0, EVENTS) as f64;
                let before = days.slot(as_of, 7, 7, EVENTS) as f64;
                let recent_days = days.active(as_of, 7, 0);
                let before_days = days.active(as_of, 7, 7);
                let per_day = if recent_days != 0 {
                    recent / recent_days as f64
                } else {
                    0.0
                };
                let per_day_before = if before_days != 0 {
                    before / before_days as f64
                } else {
                    0.0
                };
                let velocity = ((per_day + 1.0) / (per_day_before + 1.0)).log2();
                numbers[at::EVENTS_PER_ACTIVE_DAY_7D] = py_round(per_day, 4);
                numbers[at::EVENTS_PER_ACTIVE_DAY_PREV_7D] = py_round(per_day_before, 4);
                numbers[at::ENGAGEMENT_VELOCITY] = py_round(velocity, 4);
            }
            Group::Cart => {
                let (lines, last) = if profile.cart.is_empty() {
                    (Vec::new(), None)
                } else {
                    profile.open_cart()
                };
                match last {
                    None => {
                        numbers[at::CART_PRODUCTS] = 0.0;
                        numbers[at::CART_VALUE] = 0.0;
                        numbers[at::CART_IDLE_MINUTES] = -1.0;
                        numbers[at::CART_ABANDONED] = 0.0;
                    }
                    Some(last) => {
                        let value: f64 = lines.iter().map(|line| line.value).sum();
                        numbers[at::CART_PRODUCTS] = lines.len() as f64;
                        numbers[at::CART_VALUE] = py_round(value, 2);
                        numbers[at::CART_IDLE_MINUTES] = minutes_since(last, as_of);
                        let abandoned = as_of - last as f64 >= self.cart_after;
                        numbers[at::CART_ABANDONED] = if abandoned { 1.0 } else { 0.0 };
                    }
                }
            }
        }
    }

    fn sessions(&mut self) {
        let as_of = self.as_of;
        let week = (7 * DAY) as f64;
        let (mut count, mut total, mut bounced, mut abandoned) = (0usize, 0i64, 0usize, 0usize);
        for s in &self.profile.sessions.items {
            if !(as_of - week < s[0] as f64 && s[0] as f64 <= as_of) {
                continue;
            }
            count += 1;
            total += s[1] - s[0];
            if s[2] == 1 {
                bounced += 1;
            }
            let closed = (s[1] + SESSION_GAP) as f64 <= as_of;
            if closed && s[3] & SESSION_CART != 0 && s[3] & SESSION_ORDER == 0 {
                abandoned += 1;
            }
        }
        let (duration, bounce) = if count != 0 {
            (
                py_round(total as f64 / count as f64, 1),
                py_round(bounced as f64 / count as f64, 4),
            )
        } else {
            (0.0, 0.0)
        };
        let numbers = &mut self.numbers;
        numbers[at::SESSIONS_7D] = count as f64;
        numbers[at::SESSION_DURATION_7D] = duration;
        numbers[at::BOUNCE_RATE_7D] = bounce;
        numbers[at::ABANDONED_CARTS_7D] = abandoned as f64;
    }

    fn affinity(&mut self) {
        let profile = self.profile;
        let as_of = self.as_of;
        let events = profile.days.slot(as_of, 30, 0, EVENTS);
        let mobile = profile.days.slot(as_of, 30, 0, MOBILE);
        self.numbers[at::MOBILE_SHARE_30D] = if events != 0 {
            py_round(mobile as f64 / events as f64, 4)
        } else {
            0.0
        };
        let last_day = day_of(as_of);
        let mut top: Option<(&str, i64)> = None;
        let mut total = 0;
        for (category, per_day) in &profile.category_days {
            let count: i64 = per_day
                .range(last_day - 29..=last_day)
                .map(|(_, n)| n)
                .sum();
            if count == 0 {
                continue;
            }
            total += count;
            if top.is_none_or(|(_, most)| count > most) {
                top = Some((category, count));
            }
        }
        let (name, share) = match top {
            None => (String::new(), 0.0),
            Some((name, count)) => (name.to_string(), py_round(count as f64 / total as f64, 4)),
        };
        self.top_category = name;
        self.numbers[at::TOP_CATEGORY_SHARE_30D] = share;
    }
}

/// Buy-Till-You-Die RFM with daily periods, as lifetimes' summary computes it, over the
/// purchase days (day to cents, ascending) up to day `today`: frequency, recency, T and
/// monetary value.
pub fn rfm<'a>(
    mut days: impl Iterator<Item = (&'a i64, &'a i64)>,
    today: i64,
) -> (f64, f64, f64, f64) {
    let Some((&first, _)) = days.next() else {
        return (0.0, 0.0, 0.0, 0.0);
    };
    let (mut last, mut repeats, mut spent) = (first, 0_i64, 0_i64);
    for (&day, &cents) in days {
        (last, repeats, spent) = (day, repeats + 1, spent + cents);
    }
    let monetary = if repeats == 0 {
        0.0
    } else {
        spent as f64 / repeats as f64 / 100.0
    };
    (
        repeats as f64,
        (last - first) as f64,
        (today - first).max(0) as f64,
        monetary,
    )
}

/// Whether `name` is a feature the passing of time alone can only lower, never below 0.
pub fn shrinking(index: usize) -> bool {
    count_window(index).is_some() || FEATURES[index].0 == "sessions_7d"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_pythons() {
        assert_eq!(py_round(0.125, 2), 0.12);
        assert_eq!(py_round(0.375, 2), 0.38);
        assert_eq!(py_round(2.675, 2), 2.67);
        assert_eq!(py_round(1.0 / 3.0, 4), 0.3333);
        assert_eq!(py_round(-0.5, 0), -0.0);
    }

    #[test]
    fn touched_by_an_order() {
        let set = touched_features(Kind::Order, false);
        assert!(set & set_of(&["orders_30d", "frequency"]) == set_of(&["orders_30d", "frequency"]));
        assert_eq!(set & set_of(&["sessions_7d", "days_since_last_order"]), 0);
    }

    #[test]
    fn an_assumed_value_is_read_until_the_reading_ends() {
        let mut profile = Profile::default();
        profile.apply(&crate::events::Event::new("u", "m", Kind::Order, 100.0));
        let mut reading = Reading::new(&profile, 100.0, 1800.0);
        reading.assume(at::ORDERS_7D, Value::Number(9.0));
        reading.assume(at::LAST_DEVICE, Value::Text("tv".into()));
        assert_eq!(reading.number(at::ORDERS_24H), 1.0); // its group computed once
        assert_eq!(reading.number(at::ORDERS_7D), 9.0);
        assert_eq!(reading.number(at::PAGE_VIEWS_7D), 0.0);
        assert_eq!(reading.text(at::LAST_DEVICE), "tv");
        assert_eq!(reading.number(at::ORDERS_7D), 9.0);
    }

    #[test]
    fn a_set_holds_each_named_feature_once() {
        assert_eq!(
            set_of(&["orders_7d", "orders_7d", "nothing"]),
            1 << at::ORDERS_7D
        );
        assert_eq!(set_of(&["T", "frequency"]), 1 << at::T | 1 << at::FREQUENCY);
    }

    #[test]
    fn feature_vectors_hold_every_numeric_feature_in_order() {
        let numeric = numeric_features();
        assert_eq!(numeric.len(), FEATURES.len() - TEXT_FEATURES.len());
        assert!(numeric.windows(2).all(|pair| pair[0] < pair[1]));
        assert!(!numeric.contains(&at::LAST_DEVICE) && !numeric.contains(&at::TOP_CATEGORY_30D));
        assert_eq!(numeric[..3], [0, 1, 2]);
    }

    #[test]
    fn revenue_windows_are_windowed_sums_of_the_revenue_counter() {
        let days = |buckets| {
            Some(CountWindow {
                tier: Tier::Days,
                buckets,
                slot: REVENUE,
            })
        };
        assert_eq!(count_window(at::REVENUE_7D), days(7));
        assert_eq!(count_window(at::REVENUE_30D), days(30));
        assert_eq!(count_window(at::REVENUE_LIFETIME), None);
        let orders_24h = count_window(at::ORDERS_24H).unwrap();
        assert_eq!(
            (orders_24h.tier, orders_24h.buckets, orders_24h.slot),
            (Tier::Hours, 24, 5)
        );
    }
}

#[cfg(test)]
mod touched {
    use super::*;
    use crate::events::Event;

    /// A small deterministic generator (xorshift), for random histories.
    struct Random(u64);

    impl Random {
        fn next(&mut self, below: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % below
        }
    }

    #[test]
    fn an_event_changes_no_feature_outside_those_it_says() {
        let clock = set_of(&CLOCK_FEATURES);
        let mut random = Random(0x9e37_79b9_7f4a_7c15);
        for _ in 0..300 {
            let mut profile = Profile::default();
            for number in 0..random.next(30) + 1 {
                let kind = Kind::from_code(random.next(9) as i64).expect("a kind");
                let moment = (1_000 * DAY + random.next((40 * DAY) as u64) as i64) as f64;
                let event = Event {
                    value: random.next(200) as f64,
                    categories: ["shoes", "hats"][..random.next(2) as usize]
                        .iter()
                        .map(|c| c.to_string())
                        .collect(),
                    device: [None, Some("mobile".to_string())][random.next(2) as usize].clone(),
                    product: Some("p1".to_string()),
                    ..Event::new("u", &number.to_string(), kind, moment)
                };
                let before = profile.clone();
                let started = profile.apply(&event);
                let said = touched_features(kind, started);
                let later = moment + random.next((3 * DAY) as u64) as f64;
                for at in [moment, later] {
                    let old = Reading::new(&before, at, 1800.0).all();
                    let new = Reading::new(&profile, at, 1800.0).all();
                    for index in 0..FEATURES.len() {
                        let moved = old[index] != new[index];
                        let allowed = said & (1 << index) != 0 || clock & (1 << index) != 0;
                        assert!(!moved || allowed, "{kind:?} moved {}", FEATURES[index].0);
                    }
                }
            }
        }
    }
}
