//! Per-user behavioural aggregates over sliding event-time windows: the fold of events.
//!
//! Every aggregate is commutative (integer counters, minimums and maximums, mergeable
//! session windows, revenue in integer cents), so the same events give the same profile
//! in any arrival order. `features` reads them; `timing` says when time alone moves them.
//!
//! ```
//! use _core::events::{Event, Kind};
//! use _core::profile::Profile;
//! let mut profile = Profile::default();
//! profile.apply(&Event::new("u1", "m1", Kind::Page, 1_000.0));
//! profile.apply(&Event { value: 30.0, ..Event::new("u1", "m2", Kind::Order, 1_060.0) });
//! assert_eq!((profile.events, profile.orders, profile.last_order), (2, 1, Some(1_060)));
//! ```

use std::collections::BTreeMap;

use crate::buckets::Buckets;
use crate::computed::{Computed, Key, Series};
use crate::events::{Event, Kind};
use crate::traits::Traits;
use crate::windows::{Sessions, SlidingCounts};

pub const MINUTE: i64 = 60;
pub const HOUR: i64 = 3_600;
pub const DAY: i64 = 86_400;
/// How far back exact event times are kept for burst conditions, in seconds.
pub const RECENT_SECONDS: i64 = HOUR;
/// Inactivity that ends a session: events 30 minutes or more apart are two sessions.
pub const SESSION_GAP: i64 = 30 * MINUTE;
/// Default idle time after which an open cart counts as abandoned, in seconds.
pub const CART_ABANDONMENT_AFTER: f64 = (30 * MINUTE) as f64;
/// Cart additions and removals kept per user; the oldest go first beyond this.
pub const CART_LIMIT: usize = 200;

/// The counter slot of the six counted kinds, in the order of their features.
pub const COUNTED: [(Kind, &str); 6] = [
    (Kind::Page, "page_views"),
    (Kind::ProductViewed, "product_views"),
    (Kind::Search, "searches"),
    (Kind::CartAdd, "cart_adds"),
    (Kind::Checkout, "checkouts"),
    (Kind::Order, "orders"),
];
/// Slots of the day buckets beyond the counted kinds.
pub const EVENTS: usize = 6;
pub const MOBILE: usize = 7;
pub const REVENUE: usize = 8;
/// Session flags.
pub const SESSION_CART: i64 = 1;
pub const SESSION_ORDER: i64 = 2;

/// The counter slot of a counted kind.
pub fn kind_slot(kind: Kind) -> Option<usize> {
    COUNTED.iter().position(|(counted, _)| *counted == kind)
}

/// One cart addition or removal: time, +1 or -1, product, category, cents.
pub type CartEntry = (i64, i64, String, String, i64);

/// One product in an open cart: its category, how many times it was added (less removed)
/// and their value.
#[derive(Clone, Debug, PartialEq)]
pub struct CartLine {
    pub product: String,
    pub category: String,
    pub count: i64,
    pub value: f64,
}

/// Everything segstream knows of one user's behaviour; times are epoch seconds.
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    pub minutes: SlidingCounts,
    pub hours: SlidingCounts,
    pub days: SlidingCounts,
    pub category_days: BTreeMap<String, BTreeMap<i64, i64>>,
    /// Event times of the last `RECENT_SECONDS`, per `"<KIND>/<category>"` (sorted).
    pub recent: BTreeMap<String, Vec<i64>>,
    pub sessions: Sessions,
    pub purchase_days: BTreeMap<i64, i64>,
    pub orders: i64,
    pub events: i64,
    pub first_seen: Option<i64>,
    pub last_seen: Option<i64>,
    pub last_order: Option<i64>,
    pub last_device: Option<(i64, String)>,
    /// Cart additions and removals since the last order, sorted.
    pub cart: Vec<CartEntry>,
    /// Identify traits the rules keep, each with the time it was set.
    pub traits: Traits,
    /// The cells of the rules' computed traits, by their definitions' keys.
    pub computed: BTreeMap<Key, Series>,
}

impl Default for Profile {
    fn default() -> Self {
        Profile {
            minutes: SlidingCounts::new(5 * MINUTE, 12),
            hours: SlidingCounts::new(HOUR, 24),
            days: SlidingCounts::new(DAY, 30),
            category_days: BTreeMap::new(),
            recent: BTreeMap::new(),
            sessions: Sessions::new(SESSION_GAP),
            purchase_days: BTreeMap::new(),
            orders: 0,
            events: 0,
            first_seen: None,
            last_seen: None,
            last_order: None,
            last_device: None,
            cart: Vec::new(),
            traits: Traits::default(),
            computed: BTreeMap::new(),
        }
    }
}

/// Amounts in currency units to whole cents, as Python's `round(value * 100)`.
pub fn cents(value: f64) -> i64 {
    (value * 100.0).round_ties_even() as i64
}

impl Profile {
    /// Fold one event into the aggregates (in any order); whether it started a session
    /// (changed the sessions' starts). Identity calls change nothing.
    pub fn apply(&mut self, event: &Event) -> bool {
        let kind = event.kind;
        for (name, value) in &event.traits {
            self.traits
                .set(name, event.timestamp.trunc() as i64, value.clone());
        }
        if !kind.is_behaviour() {
            return false;
        }
        let moment = event.timestamp.trunc() as i64;
        self.events += 1;
        self.first_seen = Some(self.first_seen.map_or(moment, |t| t.min(moment)));
        self.last_seen = Some(self.last_seen.map_or(moment, |t| t.max(moment)));
        if let Some(device) = event.device.as_deref().filter(|d| !d.is_empty()) {
            let newer = match &self.last_device {
                None => true,
                Some((t, d)) => (moment, device) > (*t, d.as_str()),
            };
            if newer {
                self.last_device = Some((moment, device.to_string()));
            }
        }
        if let Some(slot) = kind_slot(kind) {
            self.minutes.add(moment, slot, 1);
            self.hours.add(moment, slot, 1);
            self.days.add(moment, slot, 1);
        }
        self.days.add(moment, EVENTS, 1);
        if event.device.as_deref() == Some("mobile") {
            self.days.add(moment, MOBILE, 1);
        }
        let day = moment.div_euclid(DAY);
        for category in &event.categories {
            *self
                .category_days
                .entry(category.clone())
                .or_default()
                .entry(day)
                .or_insert(0) += 1;
            let times = self
                .recent
                .entry(format!("{}/{}", kind.name(), category))
                .or_default();
            let at = times.partition_point(|&t| t <= moment);
            times.insert(at, moment);
        }
        let mut flags = 0;
        match kind {
            Kind::CartAdd | Kind::CartRemove => {
                if kind == Kind::CartAdd {
                    flags = SESSION_CART;
                }
                if self.last_order.is_none_or(|last| moment > last) {
                    let sign = if kind == Kind::CartAdd { 1 } else { -1 };
                    let category = event.categories.first().cloned().unwrap_or_default();
                    let product = event.product.clone().unwrap_or_default();
                    let entry = (moment, sign, product, category, cents(event.value));
                    let at = self.cart.partition_point(|e| *e <= entry);
                    self.cart.insert(at, entry);
                    if self.cart.len() > CART_LIMIT {
                        self.cart.drain(..self.cart.len() - CART_LIMIT);
                    }
                }
            }
            Kind::Order => {
                flags = SESSION_ORDER;
                let amount = cents(event.value);
                self.orders += 1;
                self.days.add(moment, REVENUE, amount);
                *self.purchase_days.entry(day).or_insert(0) += amount;
                let last = self.last_order.map_or(moment, |t| t.max(moment));
                self.last_order = Some(last);
                self.cart.retain(|entry| entry.0 > last);
            }
            _ => {}
        }
        self.sessions.add(moment, flags)
    }

    /// Fold one event into the computed traits that count it; their indexes in `computed`.
    pub fn fold(&mut self, event: &Event, computed: &[Computed]) -> Vec<usize> {
        let mut counted = Vec::new();
        for (index, definition) in computed.iter().enumerate() {
            if let Some(cell) = definition.cell_of(event) {
                let bucket = definition.window.bucket(event.timestamp.trunc() as i64);
                match self.computed.get_mut(&definition.key) {
                    Some(series) => series.add(bucket, &cell),
                    None => {
                        let mut series = Series::new(definition.aggregate);
                        series.add(bucket, &cell);
                        self.computed.insert(definition.key, series);
                    }
                }
                counted.push(index);
            }
        }
        counted
    }

    /// The latest event time it holds: of a behaviour event, or of a trait kept.
    pub fn latest(&self) -> Option<i64> {
        self.last_seen.max(self.traits.last_set())
    }

    /// The most `kind` events of one category in the `within` seconds up to `as_of`.
    pub fn burst(&self, kind: Kind, within: f64, as_of: f64) -> i64 {
        let prefix = format!("{}/", kind.name());
        self.recent
            .iter()
            .filter(|(key, _)| key.starts_with(&prefix))
            .map(|(_, times)| {
                let start = times.partition_point(|&t| t as f64 <= as_of - within);
                let end = times.partition_point(|&t| t as f64 <= as_of);
                end as i64 - start as i64
            })
            .max()
            .unwrap_or(0)
            .max(0)
    }

    /// Add `other`'s aggregates (another id of the same person) into this profile.
    pub fn merge(&mut self, other: &Profile) {
        for (key, times) in &other.recent {
            let mine = self.recent.entry(key.clone()).or_default();
            mine.extend(times);
            mine.sort_unstable();
        }
        self.minutes.merge(&other.minutes);
        self.hours.merge(&other.hours);
        self.days.merge(&other.days);
        for (category, per_day) in &other.category_days {
            let mine = self.category_days.entry(category.clone()).or_default();
            for (day, count) in per_day {
                *mine.entry(*day).or_insert(0) += count;
            }
        }
        self.sessions.merge(&other.sessions);
        for (day, amount) in &other.purchase_days {
            *self.purchase_days.entry(*day).or_insert(0) += amount;
        }
        self.orders += other.orders;
        self.events += other.events;
        self.first_seen = least(self.first_seen, other.first_seen);
        self.last_seen = most(self.last_seen, other.last_seen);
        self.last_order = most(self.last_order, other.last_order);
        if let Some(theirs) = &other.last_device {
            if self.last_device.as_ref().is_none_or(|mine| theirs > mine) {
                self.last_device = Some(theirs.clone());
            }
        }
        self.traits.merge(&other.traits);
        for (key, series) in &other.computed {
            match self.computed.get_mut(key) {
                Some(mine) => mine.merge(series),
                None => {
                    self.computed.insert(*key, series.clone());
                }
            }
        }
        let ordered = self.last_order;
        self.cart.extend(other.cart.iter().cloned());
        self.cart
            .retain(|entry| ordered.is_none_or(|last| entry.0 > last));
        self.cart.sort();
        if self.cart.len() > CART_LIMIT {
            self.cart.drain(..self.cart.len() - CART_LIMIT);
        }
    }

    /// The products in the cart (added since the last order and not removed), by product,
    /// and when the cart last changed; `([], None)` when the cart is empty.
    pub fn open_cart(&self) -> (Vec<CartLine>, Option<i64>) {
        let mut lines: BTreeMap<&str, (&str, i64, i64)> = BTreeMap::new();
        let mut last = None;
        for (moment, sign, product, category, amount) in &self.cart {
            let line = lines.entry(product.as_str()).or_insert((category, 0, 0));
            if line.0.is_empty() {
                line.0 = category;
            }
            line.1 += sign;
            line.2 += sign * amount;
            last = Some(*moment);
        }
        let found: Vec<CartLine> = lines
            .into_iter()
            .filter(|(_, (_, count, _))| *count > 0)
            .map(|(product, (category, count, amount))| CartLine {
                product: product.to_string(),
                category: category.to_string(),
                count,
                value: amount.max(0) as f64 / 100.0,
            })
            .collect();
        let changed = if found.is_empty() { None } else { last };
        (found, changed)
    }

    /// Drop what no window as of `as_of` or later can see, and the cells of computed
    /// traits that are not among `computed` (the rules in force); the day buckets dropped
    /// are returned.
    pub fn prune(&mut self, as_of: f64, computed: &[Computed]) -> BTreeMap<i64, Vec<i64>> {
        // most steps drop nothing: each map is rebuilt only when something in it goes
        let mut emptied = false;
        for (key, series) in self.computed.iter_mut() {
            match computed.iter().find(|c| c.key == *key) {
                Some(definition) => series.drop_before(definition.oldest(as_of)),
                None => series.buckets = Buckets::new(),
            }
            emptied |= series.buckets.is_empty();
        }
        if emptied {
            self.computed.retain(|_, series| !series.buckets.is_empty());
        }
        self.minutes.prune(as_of);
        self.hours.prune(as_of);
        let dropped = self.days.prune(as_of);
        let oldest_day = (as_of / DAY as f64).floor() as i64 - self.days.span;
        let mut emptied = false;
        for per_day in self.category_days.values_mut() {
            if per_day
                .first_key_value()
                .is_some_and(|(&day, _)| day <= oldest_day)
            {
                *per_day = per_day.split_off(&(oldest_day + 1));
                emptied |= per_day.is_empty();
            }
        }
        if emptied {
            self.category_days.retain(|_, per_day| !per_day.is_empty());
        }
        self.sessions.prune(as_of - (7 * DAY) as f64);
        let horizon = as_of - RECENT_SECONDS as f64;
        let mut emptied = false;
        for times in self.recent.values_mut() {
            let gone = times.partition_point(|&t| t as f64 <= horizon);
            if gone > 0 {
                times.drain(..gone);
                emptied |= times.is_empty();
            }
        }
        if emptied {
            self.recent.retain(|_, times| !times.is_empty());
        }
        dropped
    }
}

fn least(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        _ => a.or(b),
    }
}

fn most(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        _ => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cart_add(id: &str, moment: f64, value: f64, product: &str) -> Event {
        Event {
            value,
            categories: vec!["shoes".into()],
            product: Some(product.into()),
            ..Event::new("u", id, Kind::CartAdd, moment)
        }
    }

    #[test]
    fn an_order_empties_the_cart_before_it() {
        let mut profile = Profile::default();
        profile.apply(&cart_add("m1", 100.0, 20.0, "sku-1"));
        let (lines, changed) = profile.open_cart();
        assert_eq!((lines.len(), lines[0].value, changed), (1, 20.0, Some(100)));
        profile.apply(&Event {
            value: 20.0,
            ..Event::new("u", "m2", Kind::Order, 200.0)
        });
        assert_eq!(profile.open_cart(), (vec![], None));
        profile.apply(&cart_add("m3", 150.0, 5.0, "sku-2"));
        assert!(
            profile.cart.is_empty(),
            "an addition before the order is not in the cart"
        );
    }

    #[test]
    fn merging_is_the_same_as_applying_both() {
        let events = [
            cart_add("m1", 100.0, 20.0, "a"),
            Event::new("u", "m2", Kind::Page, 5_000.0),
            Event {
                value: 9.5,
                ..Event::new("u", "m3", Kind::Order, 90_000.0)
            },
        ];
        let mut whole = Profile::default();
        let (mut left, mut right) = (Profile::default(), Profile::default());
        for (index, event) in events.iter().enumerate() {
            whole.apply(event);
            if index % 2 == 0 {
                &mut left
            } else {
                &mut right
            }
            .apply(event);
        }
        left.merge(&right);
        assert_eq!(left, whole);
    }
}
