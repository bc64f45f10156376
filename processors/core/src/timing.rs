//! When a feature, or a comparison of one, changes with no new events: the horizons
//! timers are set from.
//!
//! Windows change only when a bucket holding events slides out (or, for the
//! previous-week window, in); sessions when one turns a week old or, with a cart and no
//! order, closes; clock features (days since ...) when they cross a threshold. Every
//! answer may come early, never late.
//!
//! ```
//! use _core::events::{Event, Kind};
//! use _core::features::index_of;
//! use _core::profile::{Profile, DAY};
//! use _core::timing::feature_changes_at;
//! let mut profile = Profile::default();
//! profile.apply(&Event { value: 9.0, ..Event::new("u", "m", Kind::Order, (10 * DAY) as f64 + 5.0) });
//! let orders_7d = index_of("orders_7d").unwrap();
//! assert_eq!(feature_changes_at(&profile, orders_7d, (10 * DAY) as f64 + 5.0, 1800.0), (17 * DAY) as f64);
//! ```

use crate::events::Kind;
use crate::features::{
    count_window, days_since, group_of, minutes_since, set_of, shrinking, Group, Reading,
    CLOCK_FEATURES, FEATURES, LIFETIME_FEATURES,
};
use crate::profile::{Profile, DAY, MINUTE, REVENUE, SESSION_CART, SESSION_GAP};
use crate::rules::{Node, Operand, RuleSet};

/// What a horizon is when nothing but new events can change a value.
pub const NEVER: f64 = f64::INFINITY;

/// The earliest of `moments` later than `as_of`, or [`NEVER`].
fn after(as_of: f64, moments: impl Iterator<Item = f64>) -> f64 {
    moments.filter(|&m| m > as_of).fold(NEVER, f64::min)
}

/// The earliest event time after `as_of` at which a feature of `group` other than a
/// clock feature can change with no new events.
pub fn group_changes_at(profile: &Profile, group: Group, as_of: f64, cart_after: f64) -> f64 {
    let days = &profile.days;
    let week = (7 * DAY) as f64;
    match group {
        Group::Counts1h => profile.minutes.changes_at(as_of, 12, 0, None),
        Group::Counts24h => profile.hours.changes_at(as_of, 24, 0, None),
        Group::Counts7d => days.changes_at(as_of, 7, 0, None),
        Group::Counts30d => days.changes_at(as_of, 30, 0, None),
        Group::Revenue => days
            .changes_at(as_of, 7, 0, Some(REVENUE))
            .min(days.changes_at(as_of, 30, 0, Some(REVENUE))),
        Group::Sessions => after(
            as_of,
            profile.sessions.items.iter().flat_map(|s| {
                let closes = if s[3] == SESSION_CART {
                    (s[1] + SESSION_GAP) as f64
                } else {
                    NEVER
                };
                [s[0] as f64 + week, closes]
            }),
        ),
        // a day with categories counted holds events too: it leaves the 30 days with them
        Group::Affinity => days.changes_at(as_of, 30, 0, None),
        Group::Velocity => days
            .changes_at(as_of, 7, 0, None)
            .min(days.changes_at(as_of, 7, 7, None)),
        Group::Cart => match profile.open_cart().1 {
            None => NEVER,
            Some(last) => after(as_of, std::iter::once(last as f64 + cart_after)),
        },
        Group::Rfm | Group::Recency => NEVER,
    }
}

/// Like [`group_changes_at`], for the one feature at `index`: a count moves only when a
/// bucket holding its own kind slides, a lifetime total never does.
pub fn feature_changes_at(profile: &Profile, index: usize, as_of: f64, cart_after: f64) -> f64 {
    if let Some(window) = count_window(index) {
        return window
            .tier
            .of(profile)
            .changes_at(as_of, window.buckets, 0, Some(window.slot));
    }
    let name = FEATURES[index].0;
    if LIFETIME_FEATURES.contains(&name) {
        return NEVER;
    }
    if name == "sessions_7d" {
        let week = (7 * DAY) as f64;
        return after(
            as_of,
            profile.sessions.items.iter().map(|s| s[0] as f64 + week),
        );
    }
    group_changes_at(profile, group_of(index), as_of, cart_after)
}

/// The key under which [`feature_changes_at`] answers may be shared within one reading:
/// features timed on their own have their own key, the others their group's.
pub fn timing_key(index: usize) -> usize {
    let name = FEATURES[index].0;
    if count_window(index).is_some() || LIFETIME_FEATURES.contains(&name) || name == "sessions_7d" {
        index
    } else {
        FEATURES.len() + group_of(index) as usize
    }
}

/// When the most `kind` events of one category within `within` seconds next changes.
pub fn burst_changes_at(profile: &Profile, kind: Kind, within: f64, as_of: f64) -> f64 {
    let prefix = format!("{}/", kind.name());
    after(
        as_of,
        profile
            .recent
            .iter()
            .filter(|(key, _)| key.starts_with(&prefix))
            .flat_map(|(_, times)| times.iter().map(move |&t| t as f64 + within)),
    )
}

/// A comparison operator of the rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
}

impl Op {
    pub fn parse(text: &str) -> Option<Op> {
        Some(match text {
            ">" => Op::Gt,
            ">=" => Op::Ge,
            "<" => Op::Lt,
            "<=" => Op::Le,
            "==" => Op::Eq,
            "!=" => Op::Ne,
            _ => return None,
        })
    }

    /// `left op right` for numbers (false whenever either is NaN, but `!=`).
    pub fn holds(self, left: f64, right: f64) -> bool {
        match self {
            Op::Gt => left > right,
            Op::Ge => left >= right,
            Op::Lt => left < right,
            Op::Le => left <= right,
            Op::Eq => left == right,
            Op::Ne => left != right,
        }
    }
}

/// A clock feature as a function of event time: its value at any time, the time it
/// was 0 and the seconds per unit; `None` while it stays constant.
struct Clock {
    anchor: i64,
    unit: i64,
    kind: ClockKind,
}

enum ClockKind {
    Days,
    PurchaseDays,
    Minutes,
}

impl Clock {
    fn of(profile: &Profile, feature: &str) -> Option<Clock> {
        let (anchor, unit, kind) = match feature {
            "days_since_last_order" => (profile.last_order?, DAY, ClockKind::Days),
            "days_since_last_seen" => (profile.last_seen?, DAY, ClockKind::Days),
            "days_since_first_seen" => (profile.first_seen?, DAY, ClockKind::Days),
            "T" => {
                let first = *profile.purchase_days.keys().next()?;
                (first, DAY, ClockKind::PurchaseDays)
            }
            "cart_idle_minutes" => (profile.open_cart().1?, MINUTE, ClockKind::Minutes),
            _ => return None,
        };
        Some(Clock { anchor, unit, kind })
    }

    fn at(&self, moment: f64) -> f64 {
        match self.kind {
            ClockKind::Days => days_since(Some(self.anchor), moment),
            ClockKind::PurchaseDays => {
                ((moment / DAY as f64).floor() as i64 - self.anchor).max(0) as f64
            }
            ClockKind::Minutes => minutes_since(self.anchor, moment),
        }
    }

    fn zero_at(&self) -> f64 {
        match self.kind {
            ClockKind::PurchaseDays => (self.anchor * DAY) as f64,
            _ => self.anchor as f64,
        }
    }
}

/// When `feature op threshold` may next change truth, for a clock feature; to the
/// second, [`NEVER`] when it never will.
pub fn crosses_at(profile: &Profile, feature: &str, op: Op, threshold: f64, as_of: f64) -> f64 {
    let Some(clock) = Clock::of(profile, feature) else {
        return NEVER;
    };
    let now = clock.at(as_of);
    let above =
        matches!(op, Op::Gt | Op::Le) || (matches!(op, Op::Eq | Op::Ne) && now == threshold);
    if now > threshold || (now == threshold && !above) {
        return NEVER;
    }
    let guess = clock.zero_at() + threshold * clock.unit as f64;
    if above {
        first_second(as_of, guess, |moment| clock.at(moment) > threshold)
    } else {
        first_second(as_of, guess, |moment| clock.at(moment) >= threshold)
    }
}

/// The first whole second after `as_of` at which `reached` (monotone in time) holds,
/// searched from `guess`, which rounding leaves a few steps from the answer. A search
/// that takes more than [`SEARCH_STEPS`] steps answers the earliest second instead: early,
/// never late, and never stuck.
fn first_second(as_of: f64, guess: f64, reached: impl Fn(f64) -> bool) -> f64 {
    if !guess.is_finite() || guess > as_of + 2f64.powi(40) {
        return NEVER;
    }
    let earliest = as_of.floor() + 1.0;
    let mut moment = earliest.max(guess.ceil());
    let mut steps = 0;
    while steps < SEARCH_STEPS && moment > earliest && reached(moment - 1.0) {
        moment -= 1.0;
        steps += 1;
    }
    while steps < SEARCH_STEPS && !reached(moment) {
        moment += 1.0;
        steps += 1;
    }
    if steps < SEARCH_STEPS {
        moment
    } else {
        earliest
    }
}

/// The most steps [`first_second`] takes from its guess: rounding to 0.0001 day leaves
/// the guess at most 9 seconds away, and `T > n` (whole days) holds a day after `T = n`.
const SEARCH_STEPS: usize = 2 * DAY as usize;

/// The grid, in seconds of event time from the Unix epoch, that refreshes of idle users'
/// feature vectors fall on: an idle user costs one timer a week for clustering.
pub const REFRESH_EVERY: f64 = (7 * DAY) as f64;

/// Horizons of one reading's features, each computed once.
struct Horizons {
    known: Vec<Option<f64>>,
}

impl Horizons {
    fn feature(&mut self, reading: &Reading, index: usize) -> f64 {
        let key = timing_key(index);
        if let Some(moment) = self.known[key] {
            return moment;
        }
        let moment = feature_changes_at(reading.profile, index, reading.as_of, reading.cart_after);
        self.known[key] = Some(moment);
        moment
    }

    /// The first moment after the reading's at which the condition `node` (one that is
    /// not `all`, `any`, `not` or `segment`) may change its truth for a user who sends
    /// nothing. A comparison of a feature that time can only lower is left out while
    /// lowering it cannot change its truth (`orders_30d >= 1` when there is no order).
    fn leaf(&mut self, rules: &RuleSet, node: &Node, reading: &mut Reading) -> f64 {
        let (profile, as_of) = (reading.profile, reading.as_of);
        match node {
            Node::Compare(comparison)
                if set_of(&CLOCK_FEATURES) & (1 << comparison.feature) != 0 =>
            {
                let threshold = rules.threshold(&comparison.value).unwrap_or(f64::NAN);
                if threshold.is_nan() {
                    return NEVER;
                }
                let name = FEATURES[comparison.feature].0;
                crosses_at(profile, name, comparison.op, threshold, as_of)
            }
            Node::Compare(comparison) => {
                if let Operand::Number(threshold) = comparison.value {
                    let value = reading.number(comparison.feature);
                    if shrinking(comparison.feature) && settled(value, comparison.op, threshold) {
                        return NEVER;
                    }
                }
                self.feature(reading, comparison.feature)
            }
            Node::Burst { kind, within, .. } => burst_changes_at(profile, *kind, *within, as_of),
            Node::Trait { name, test } => test.changes_at(profile.traits.get(name), as_of),
            Node::Computed { index, test } => {
                let value = rules.computed_read(*index, reading);
                rules.test_flips_at(*index, test, profile, as_of, value)
            }
            Node::Sequence(sequence) => sequence.changes_at(&rules.computed, profile, as_of),
            Node::Absence(absence) => absence.changes_at(&rules.computed, profile, as_of),
            Node::Prediction { .. } => rules.predictions_change_at(as_of),
            Node::All(_) | Node::Any(_) | Node::Not(_) | Node::InSegment(_) => NEVER,
        }
    }
}

/// When a user's timer is next due, and the least moment it may be brought forward to.
#[derive(Clone, Debug, PartialEq)]
pub struct Timer {
    /// See [`next_due`].
    pub due: Option<i64>,
    /// The earliest moment at which any condition of any segment may change its truth,
    /// whether or not that can move a membership now: `due` leaves out a part of an `all`
    /// that does not hold while another part cannot flip sooner, but an event that makes
    /// the other part hold brings that part's moment back. An event that moves what
    /// conditions read brings the timer forward to no sooner than the earlier of this and
    /// its own deadlines.
    pub floor: f64,
    /// The segments the reading meets, as [`RuleSet::evaluate`] gives them: the timer
    /// evaluates every condition on its way.
    pub segments: Vec<String>,
}

/// Whether `value op threshold` keeps its truth while `value` only falls toward 0.
fn settled(value: f64, op: Op, threshold: f64) -> bool {
    if value == 0.0 {
        return true;
    }
    match op {
        Op::Gt | Op::Ge | Op::Eq => {
            !op.holds(value, threshold) && (op != Op::Eq || value < threshold)
        }
        Op::Lt | Op::Le | Op::Ne => {
            op.holds(value, threshold) && (op != Op::Ne || value < threshold)
        }
    }
}

/// The user's next timer as of their latest evaluation (whole epoch seconds) for anything
/// but a snapshot (see [`crate::examples`]), or `None`: the earliest time at which a
/// segment's membership may change (see [`RuleSet::membership_changes_at`]), a computed
/// trait compared with a percentile changes value, one of the `refreshed` features (the
/// clustering features) changes as windows slide (on the weekly grid), or the user
/// expires after `retention` seconds without events. It may come early, never late.
/// Clock features among `refreshed` go along with the others.
pub fn next_due(
    profile: &Profile,
    as_of: f64,
    rules: &RuleSet,
    refreshed: &[usize],
    retention: f64,
) -> Option<i64> {
    let mut reading = Reading::new(profile, as_of, rules.cart_after);
    timer(&mut reading, rules, refreshed, retention).due
}

/// [`next_due`] of the reading's user as of the reading's moment (a reading made with the
/// rules' `cart_after`), with the least moment an event can bring it forward to.
pub fn timer(reading: &mut Reading, rules: &RuleSet, refreshed: &[usize], retention: f64) -> Timer {
    let (profile, as_of) = (reading.profile, reading.as_of);
    let mut horizons = Horizons {
        known: vec![None; FEATURES.len() + 11],
    };
    let mut floor = NEVER;
    let (mut moment, segments) = rules.membership_changes_at(reading, &mut |node, reading| {
        let moment = horizons.leaf(rules, node, reading);
        floor = floor.min(moment);
        moment
    });
    for &index in &rules.sampled {
        let definition = &rules.computed[index];
        let changes = definition.changes_at(profile.computed.get(&definition.key), as_of);
        moment = moment.min(changes);
    }
    let clock = set_of(&CLOCK_FEATURES);
    let slid = refreshed
        .iter()
        .filter(|&&index| clock & (1 << index) == 0)
        .map(|&index| horizons.feature(reading, index))
        .fold(NEVER, f64::min);
    if slid.is_finite() {
        moment = moment.min((slid / REFRESH_EVERY).ceil() * REFRESH_EVERY);
    }
    if let Some(last_seen) = profile.last_seen {
        moment = moment.min((last_seen as f64 + retention).max(as_of) + 1.0);
    }
    Timer {
        due: moment.is_finite().then(|| moment.ceil() as i64),
        floor: floor.min(moment),
        segments,
    }
}

/// Whether a user last seen at `last_seen` has had no events for longer than `retention`
/// at `moment`.
pub fn expires(last_seen: Option<i64>, moment: f64, retention: f64) -> bool {
    last_seen.is_some_and(|seen| (seen as f64) < moment - retention)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Event;
    use crate::features::{index_of, Reading};

    fn order(moment: f64) -> Event {
        Event {
            value: 9.0,
            ..Event::new("u", "m", Kind::Order, moment)
        }
    }

    #[test]
    fn a_computed_percentile_is_false_until_known_and_its_timers_follow_every_change() {
        let ir = r#"{"cart_after": 1800.0, "order": [0], "segments": [
            {"name": "Busy", "group": null,
             "condition": {"computed": 0, "op": ">=", "percentile": "p90(computed.orders)"}}],
            "computed": [{"names": ["orders"], "key": "k", "aggregate": "count",
             "select": {"events": ["Order Completed"], "pages": [], "any": false},
             "where": null, "of": null,
             "window": {"width": 86400, "buckets": 30, "skip": 0}}]}"#;
        let mut profile = Profile::default();
        let ordered = Event {
            name: Some("Order Completed".into()),
            ..Event::new("u", "m", Kind::Other, 1_000.0)
        };
        let unknown = RuleSet::from_json(ir, &[]).unwrap();
        profile.fold(&ordered, &unknown.computed);
        let again = Event {
            message_id: "m2".into(),
            timestamp: 90_000.0,
            ..ordered.clone()
        };
        profile.fold(&again, &unknown.computed);
        let segments =
            |rules: &RuleSet| rules.evaluate(&mut Reading::new(&profile, 90_000.0, 1800.0));
        assert!(segments(&unknown).is_empty());
        assert_eq!(unknown.sampled, [0]);
        let known = [("p90(computed.orders)".to_string(), 1.0)];
        let rules = RuleSet::from_json(ir, &known).unwrap();
        assert_eq!(segments(&rules), ["Busy"]);
        // 2 >= 1 until day 31, but the store's index of values, which a moving threshold
        // reads, must follow the change at day 30 as well
        let due = next_due(&profile, 90_000.0, &rules, &[], f64::INFINITY);
        assert_eq!(due, Some(30 * 86_400));
        let user = crate::user::User {
            profile,
            as_of: 90_000.0,
            ..Default::default()
        };
        let vector = crate::step::vector_of("u", &user, Some(&rules), false, false);
        assert_eq!(vector.computed, [("orders".to_string(), 2.0)]);
    }

    #[test]
    fn a_clock_crosses_to_the_second() {
        let mut profile = Profile::default();
        profile.apply(&order(1_000.0));
        let moment = crosses_at(&profile, "days_since_last_order", Op::Gt, 30.0, 1_000.0);
        let index = index_of("days_since_last_order").unwrap();
        let before = Reading::new(&profile, moment - 1.0, 1800.0).number(index);
        let at = Reading::new(&profile, moment, 1800.0).number(index);
        assert!(before <= 30.0 && at > 30.0, "{before} {at}");
    }

    #[test]
    fn a_comparison_time_cannot_flip_sets_no_timer() {
        let mut profile = Profile::default();
        profile.apply(&Event::new("u", "m", Kind::Page, 1_000.0));
        let due = |condition: &str| {
            let ir = format!(
                r#"{{"cart_after": 1800.0, "order": [0], "segments": [
                    {{"name": "S", "group": null, "condition": {condition}}}]}}"#
            );
            let rules = RuleSet::from_json(&ir, &[]).unwrap();
            next_due(&profile, 1_000.0, &rules, &[], f64::INFINITY)
        };
        // no order to lose; one page, which can only fall further from 5; a trait
        assert_eq!(
            due(r#"{"feature": "orders_30d", "op": ">=", "value": 1.0}"#),
            None
        );
        assert_eq!(
            due(r#"{"feature": "page_views_7d", "op": ">=", "value": 5.0}"#),
            None
        );
        assert_eq!(
            due(r#"{"trait": "plan", "op": "==", "value": "pro"}"#),
            None
        );
        // the page's day leaves the week, and its session turns a week old to the second
        let page = r#"{"feature": "page_views_7d", "op": ">=", "value": 1.0}"#;
        assert_eq!(due(page), Some(7 * DAY));
        let session = r#"{"feature": "sessions_7d", "op": "==", "value": 1.0}"#;
        assert_eq!(due(session), Some(7 * DAY + 1_000));
    }

    #[test]
    fn a_comparison_is_left_untimed_exactly_while_falling_values_keep_its_truth() {
        let mut profile = Profile::default();
        profile.apply(&Event::new("u", "m", Kind::Page, 1_000.0)); // page_views_7d = 1
        let due = |op: &str, value: f64| {
            let ir = format!(
                r#"{{"cart_after": 1800.0, "order": [0], "segments": [{{"name": "S",
                    "group": null, "condition": {{"feature": "page_views_7d", "op": "{op}",
                    "value": {value:?}}}}}]}}"#
            );
            let rules = RuleSet::from_json(&ir, &[]).unwrap();
            next_due(&profile, 1_000.0, &rules, &[], f64::INFINITY).is_some()
        };
        // 1 can only fall to 0: these keep their truth
        for (op, value) in [(">", 1.0), (">", 5.0), (">=", 5.0), ("==", 5.0)] {
            assert!(!due(op, value), "{op} {value}");
        }
        for (op, value) in [("<", 5.0), ("<=", 1.0), ("<=", 5.0), ("!=", 5.0)] {
            assert!(!due(op, value), "{op} {value}");
        }
        // and these may change it
        for (op, value) in [
            (">", 0.5),
            (">=", 1.0),
            ("==", 1.0),
            ("<", 1.0),
            ("!=", 0.5),
        ] {
            assert!(due(op, value), "{op} {value}");
        }
    }

    #[test]
    fn a_horizon_is_after_the_reading_never_at_it() {
        let mut profile = Profile::default();
        profile.apply(&Event::new("u", "m", Kind::Page, 1_000.0));
        let sessions = index_of("sessions_7d").unwrap();
        let week_later = 1_000.0 + (7 * DAY) as f64; // the session turns a week old now
        assert_eq!(
            feature_changes_at(&profile, sessions, week_later, 1800.0),
            NEVER
        );
        assert_eq!(
            feature_changes_at(&profile, sessions, week_later - 1.0, 1800.0),
            week_later
        );
    }

    #[test]
    fn a_search_for_a_crossing_is_exact_and_bounded() {
        let from_150 = |moment: f64| moment >= 150.0;
        assert_eq!(first_second(100.0, 200.0, from_150), 150.0); // a guess above
        assert_eq!(first_second(100.0, 120.0, from_150), 150.0); // and below
        assert_eq!(first_second(100.5, 90.0, |_| true), 101.0); // after as_of
        assert_eq!(first_second(100.0, 200.0, |_| false), 101.0); // never: early
        let far = 100.0 + (3 * DAY) as f64; // further than the search goes: early
        assert_eq!(first_second(100.0, far, from_150), 101.0);
        assert_eq!(first_second(100.0, 2f64.powi(41), from_150), NEVER);
        assert_eq!(first_second(100.0, f64::INFINITY, from_150), NEVER);
        let mut profile = Profile::default();
        profile.apply(&order(1_000.0));
        let huge = crosses_at(&profile, "days_since_last_seen", Op::Gt, 1e13, 1_000.0);
        assert_eq!(huge, NEVER);
    }

    #[test]
    fn a_user_expires_after_their_retention_not_at_it() {
        let retention = (400 * DAY) as f64;
        assert!(!expires(None, 1e12, retention));
        assert!(!expires(Some(1_000), 1_000.0 + retention, retention));
        assert!(expires(Some(1_000), 1_001.0 + retention, retention));
        assert!(!expires(Some(1_000), 1_000.0, retention));
    }

    #[test]
    fn windows_change_when_their_buckets_slide() {
        let mut profile = Profile::default();
        profile.apply(&order((10 * DAY) as f64 + 5.0));
        profile.apply(&Event::new("u", "m2", Kind::Page, (12 * DAY) as f64 + 5.0));
        let as_of = (12 * DAY) as f64 + 5.0;
        let days = |name: &str| {
            feature_changes_at(&profile, index_of(name).unwrap(), as_of, 1800.0) / DAY as f64
        };
        assert_eq!(days("orders_7d"), 17.0);
        assert_eq!(days("page_views_7d"), 19.0);
        assert_eq!(days("orders_lifetime"), f64::INFINITY);
        let velocity = group_changes_at(&profile, Group::Velocity, as_of, 1800.0);
        assert_eq!(velocity, (17 * DAY) as f64);
    }

    #[test]
    fn a_previous_week_window_changes_when_a_bucket_slides_in() {
        let mut profile = Profile::default();
        profile.apply(&Event::new("u", "m", Kind::Page, 125.0));
        let counts = &profile.days;
        assert_eq!(counts.changes_at(130.0, 7, 0, None), (7 * DAY) as f64);
        assert_eq!(counts.changes_at(130.0, 7, 7, None), (7 * DAY) as f64);
        let minutes = &profile.minutes;
        assert_eq!(minutes.changes_at(130.0, 3, 2, None), 600.0);
    }
}
