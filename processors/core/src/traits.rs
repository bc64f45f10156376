//! Identify traits kept per user: the latest value of each trait, with the event time it
//! was set, and which traits the decoder keeps.
//!
//! A trait set later in event time wins; at the same second the greater value wins (null
//! < false < true < numbers < text), so the result does not depend on arrival order or on
//! which of two merged profiles held it.
//!
//! ```
//! use _core::traits::{Traits, TraitValue};
//! let mut traits = Traits::default();
//! traits.set("plan", 100, TraitValue::Text("pro".into()));
//! traits.set("plan", 50, TraitValue::Text("free".into())); // set earlier: not kept
//! assert_eq!(traits.get("plan"), Some(&TraitValue::Text("pro".into())));
//! assert_eq!(traits.get("country"), None);
//! ```

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use regex::{Regex, RegexBuilder};

use crate::decoding::iso_time;

/// The longest trait text kept, in characters; longer text is cut.
pub const MAX_TRAIT_TEXT: usize = 1024;
/// The most traits kept from one message when every trait is kept.
pub const MAX_TRAITS: usize = 200;

/// A trait's value as the tracker sent it.
#[derive(Clone, Debug, PartialEq)]
pub enum TraitValue {
    Null,
    Bool(bool),
    Number(f64),
    Text(String),
}

impl TraitValue {
    /// The order that breaks ties between values set at the same second.
    pub fn order(&self, other: &TraitValue) -> Ordering {
        let rank = |value: &TraitValue| match value {
            TraitValue::Null => 0,
            TraitValue::Bool(_) => 1,
            TraitValue::Number(_) => 2,
            TraitValue::Text(_) => 3,
        };
        match (self, other) {
            (TraitValue::Bool(a), TraitValue::Bool(b)) => a.cmp(b),
            (TraitValue::Number(a), TraitValue::Number(b)) => a.total_cmp(b),
            (TraitValue::Text(a), TraitValue::Text(b)) => a.cmp(b),
            _ => rank(self).cmp(&rank(other)),
        }
    }
}

/// Each kept trait's latest value and the event time (whole seconds) it was set at.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Traits(pub BTreeMap<String, (i64, TraitValue)>);

impl Traits {
    /// Set `name` to `value` as of `moment`, unless a later (or greater, at the same
    /// second) value is kept; whether the value kept changed.
    pub fn set(&mut self, name: &str, moment: i64, value: TraitValue) -> bool {
        let newer = match self.0.get(name) {
            None => true,
            Some((kept, old)) => {
                moment.cmp(kept).then_with(|| value.order(old)) == Ordering::Greater
            }
        };
        if newer {
            self.0.insert(name.to_string(), (moment, value));
        }
        newer
    }

    /// The value of `name`, if it was ever set.
    pub fn get(&self, name: &str) -> Option<&TraitValue> {
        self.0.get(name).map(|(_, value)| value)
    }

    /// When the latest kept value was set, if any was.
    pub fn last_set(&self) -> Option<i64> {
        self.0.values().map(|(moment, _)| *moment).max()
    }

    /// Take every trait of `other` (another id of the same person) that is newer.
    pub fn merge(&mut self, other: &Traits) {
        for (name, (moment, value)) in &other.0 {
            self.set(name, *moment, value.clone());
        }
    }
}

/// How a trait condition compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraitOp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Between,
    In,
    NotIn,
    Exists,
    Missing,
    Contains,
    StartsWith,
    EndsWith,
    Matches,
    WithinLast,
    MoreThanAgo,
}

impl TraitOp {
    pub fn parse(text: &str) -> Option<TraitOp> {
        Some(match text {
            "==" => TraitOp::Eq,
            "!=" => TraitOp::Ne,
            ">" => TraitOp::Gt,
            ">=" => TraitOp::Ge,
            "<" => TraitOp::Lt,
            "<=" => TraitOp::Le,
            "between" => TraitOp::Between,
            "in" => TraitOp::In,
            "not_in" => TraitOp::NotIn,
            "exists" => TraitOp::Exists,
            "missing" => TraitOp::Missing,
            "contains" => TraitOp::Contains,
            "starts_with" => TraitOp::StartsWith,
            "ends_with" => TraitOp::EndsWith,
            "matches" => TraitOp::Matches,
            "within_last" => TraitOp::WithinLast,
            "more_than_ago" => TraitOp::MoreThanAgo,
            _ => return None,
        })
    }
}

/// A trait condition's test: its operator, its values (one, or the list of `in` and
/// `not_in`), whether text compares case-insensitively (both sides lower-cased), and the
/// compiled pattern of `matches`.
///
/// A null or unset trait meets only `missing`. `>`, `>=`, `<`, `<=` and `between` (`[low,
/// high]`, both included) hold between numbers only; `contains`, `starts_with`, `ends_with` and `matches` (a regular
/// expression found anywhere in the text, linear-time) between texts only; `==`, `in`
/// and their negations compare value and type (`1` is not `"1"`). `within_last D` holds
/// for a time (ISO 8601 text) `t` with `as_of - D <= t <= as_of`, `more_than_ago D` for
/// `t < as_of - D`: they flip as event time passes (see [`TraitTest::changes_at`]).
///
/// ```
/// use _core::traits::{TraitOp, TraitTest, TraitValue};
/// let text = |t: &str| TraitValue::Text(t.into());
/// let pro = TraitTest::new(TraitOp::In, vec![text("Pro")], true).unwrap();
/// assert!(pro.holds(Some(&text("PRO")), 0.0) && !pro.holds(None, 0.0));
/// let gmail = TraitTest::new(TraitOp::Matches, vec![text(r"@gmail\.com$")], false).unwrap();
/// assert!(gmail.holds(Some(&text("ann@gmail.com")), 0.0));
/// assert!(TraitTest::new(TraitOp::Matches, vec![text("(")], false).is_err());
/// ```
#[derive(Clone, Debug)]
pub struct TraitTest {
    pub op: TraitOp,
    values: Vec<TraitValue>,
    insensitive: bool,
    pattern: Option<Regex>,
}

impl TraitTest {
    /// The test, or why its pattern does not compile.
    pub fn new(op: TraitOp, values: Vec<TraitValue>, insensitive: bool) -> Result<Self, String> {
        let pattern = match (op, values.first()) {
            (TraitOp::Matches, Some(TraitValue::Text(pattern))) => Some(
                RegexBuilder::new(pattern)
                    .case_insensitive(insensitive)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|error| error.to_string())?,
            ),
            (TraitOp::Matches, _) => return Err("matches takes a pattern".into()),
            _ => None,
        };
        let insensitive = insensitive && !matches!(op, TraitOp::WithinLast | TraitOp::MoreThanAgo);
        let values = values
            .into_iter()
            .map(|value| match value {
                TraitValue::Text(text) if insensitive => TraitValue::Text(text.to_lowercase()),
                other => other,
            })
            .collect();
        Ok(TraitTest {
            op,
            values,
            insensitive,
            pattern,
        })
    }

    /// For `within_last` and `more_than_ago`, the duration in seconds.
    pub fn duration(&self) -> Option<f64> {
        match (self.op, self.values.first()) {
            (TraitOp::WithinLast | TraitOp::MoreThanAgo, Some(TraitValue::Number(d))) => Some(*d),
            _ => None,
        }
    }

    /// The first whole second after `as_of` at which the test of `value` may change
    /// truth with no new events ([`f64::INFINITY`] if never): a time's entering or
    /// leaving the last `D` seconds.
    pub fn changes_at(&self, value: Option<&TraitValue>, as_of: f64) -> f64 {
        let (Some(duration), Some(TraitValue::Text(text))) = (self.duration(), value) else {
            return f64::INFINITY;
        };
        let Some(moment) = iso_time(text) else {
            return f64::INFINITY;
        };
        [moment.ceil(), (moment + duration).floor() + 1.0]
            .into_iter()
            .filter(|&m| m > as_of)
            .fold(f64::INFINITY, f64::min)
    }

    /// Whether a trait's value (`None` when never set) meets the test as of `as_of`.
    pub fn holds(&self, value: Option<&TraitValue>, as_of: f64) -> bool {
        let lowered;
        let value = match value {
            None | Some(TraitValue::Null) => return self.op == TraitOp::Missing,
            Some(TraitValue::Text(text)) if self.insensitive => {
                lowered = TraitValue::Text(text.to_lowercase());
                &lowered
            }
            Some(value) => value,
        };
        let equal = |other: &TraitValue| value == other;
        let first = self.values.first();
        let numbers = || match (value, first) {
            (TraitValue::Number(a), Some(TraitValue::Number(b))) => Some((*a, *b)),
            _ => None,
        };
        let texts = || match (value, first) {
            (TraitValue::Text(a), Some(TraitValue::Text(b))) => Some((a.as_str(), b.as_str())),
            _ => None,
        };
        match self.op {
            TraitOp::Exists => true,
            TraitOp::Missing => false,
            TraitOp::Eq => first.is_some_and(equal),
            TraitOp::Ne => first.is_some_and(|other| !equal(other)),
            TraitOp::In => self.values.iter().any(equal),
            TraitOp::NotIn => !self.values.iter().any(equal),
            TraitOp::Gt => numbers().is_some_and(|(a, b)| a > b),
            TraitOp::Ge => numbers().is_some_and(|(a, b)| a >= b),
            TraitOp::Lt => numbers().is_some_and(|(a, b)| a < b),
            TraitOp::Le => numbers().is_some_and(|(a, b)| a <= b),
            TraitOp::Between => match (value, &self.values[..]) {
                (TraitValue::Number(v), [TraitValue::Number(low), TraitValue::Number(high)]) => {
                    low <= v && v <= high
                }
                _ => false,
            },
            TraitOp::Contains => texts().is_some_and(|(a, b)| a.contains(b)),
            TraitOp::StartsWith => texts().is_some_and(|(a, b)| a.starts_with(b)),
            TraitOp::EndsWith => texts().is_some_and(|(a, b)| a.ends_with(b)),
            TraitOp::Matches => match (value, &self.pattern) {
                (TraitValue::Text(text), Some(pattern)) => pattern.is_match(text),
                _ => false,
            },
            TraitOp::WithinLast | TraitOp::MoreThanAgo => {
                let (TraitValue::Text(text), Some(duration)) = (value, self.duration()) else {
                    return false;
                };
                iso_time(text).is_some_and(|t| match self.op {
                    TraitOp::WithinLast => as_of - duration <= t && t <= as_of,
                    _ => t < as_of - duration,
                })
            }
        }
    }
}

/// Which traits (or event names) the decoder keeps: those the rules in force name, or
/// every one.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Keep {
    Named(BTreeSet<String>),
    #[default]
    Nothing,
    All,
}

impl Keep {
    /// Whether nothing is kept, so the decoder need not look.
    pub fn nothing(&self) -> bool {
        match self {
            Keep::Named(names) => names.is_empty(),
            Keep::Nothing => true,
            Keep::All => false,
        }
    }

    /// Whether `name` is kept.
    pub fn keeps(&self, name: &str) -> bool {
        match self {
            Keep::Named(names) => names.contains(name),
            Keep::Nothing => false,
            Keep::All => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_later_value_wins_in_any_order() {
        let values = [
            (10, TraitValue::Text("free".into())),
            (30, TraitValue::Text("pro".into())),
            (30, TraitValue::Number(3.0)),
            (20, TraitValue::Null),
        ];
        let mut forward = Traits::default();
        let mut backward = Traits::default();
        for (moment, value) in &values {
            forward.set("plan", *moment, value.clone());
        }
        for (moment, value) in values.iter().rev() {
            backward.set("plan", *moment, value.clone());
        }
        assert_eq!(forward, backward);
        assert_eq!(forward.get("plan"), Some(&TraitValue::Text("pro".into())));
        assert!(!forward.set("plan", 30, TraitValue::Bool(true)));
        assert!(forward.set("plan", 31, TraitValue::Null));
    }

    #[test]
    fn merging_keeps_the_newer_of_each_trait() {
        let mut mine = Traits::default();
        mine.set("plan", 10, TraitValue::Text("free".into()));
        mine.set("country", 50, TraitValue::Text("DE".into()));
        let mut theirs = Traits::default();
        theirs.set("plan", 20, TraitValue::Text("pro".into()));
        theirs.set("country", 40, TraitValue::Text("FR".into()));
        mine.merge(&theirs);
        assert_eq!(mine.get("plan"), Some(&TraitValue::Text("pro".into())));
        assert_eq!(mine.get("country"), Some(&TraitValue::Text("DE".into())));
    }
}

#[cfg(test)]
mod kept {
    use std::collections::BTreeSet;

    use super::*;
    use crate::decoding::{decode, decode_projected, Projection, Rejection};
    use crate::events::Event;
    use crate::features::Reading;
    use crate::profile::Profile;
    use crate::rows::{decode as read_row, encode as write_row};
    use crate::rules::RuleSet;
    use crate::user::User;

    fn decode_keeping(raw: &[u8], max_bytes: usize, traits: &Keep) -> Result<Event, Rejection> {
        let projection = Projection {
            traits: traits.clone(),
            ..Projection::default()
        };
        decode_projected(raw, max_bytes, &projection)
    }

    const IDENTIFY: &[u8] =
        br#"{"type": "identify", "userId": "u1", "timestamp": "2026-11-01T10:00:00Z",
        "traits": {"plan": "pro", "seats": 3, "address": {"country": "DE"}, "tags": ["a"]},
        "context": {"traits": {"plan": "free", "beta": true}}}"#;

    fn named(names: &[&str]) -> Keep {
        Keep::Named(names.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>())
    }

    #[test]
    fn the_decoder_keeps_only_the_traits_asked_for() {
        assert!(decode(IDENTIFY, 32_768).unwrap().traits.is_empty());
        let event = decode_keeping(IDENTIFY, 32_768, &named(&["plan", "address.country", "x"]));
        let expected = vec![
            ("address.country".to_string(), TraitValue::Text("DE".into())),
            ("plan".to_string(), TraitValue::Text("pro".into())), // the call's own wins
        ];
        assert_eq!(event.unwrap().traits, expected);
        let every = decode_keeping(IDENTIFY, 32_768, &Keep::All).unwrap().traits;
        let names: Vec<&str> = every.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["address.country", "beta", "plan", "seats"]); // no lists
    }

    #[test]
    fn a_profile_keeps_its_traits_through_its_row() {
        let mut user = User::default();
        let event = decode_keeping(IDENTIFY, 32_768, &Keep::All).unwrap();
        user.profile.apply(&event);
        assert_eq!(user.profile.events, 0); // an identify call is not behaviour
        assert_eq!(
            user.profile.traits.get("seats"),
            Some(&TraitValue::Number(3.0))
        );
        assert_eq!(read_row(&write_row(&user)).unwrap(), user);
        let plain = User::default();
        assert_eq!(
            write_row(&plain)[..],
            write_row(&User { ..plain.clone() })[..]
        );
        let mut other = Profile::default();
        other.traits.set("plan", 2_000_000_000, TraitValue::Null);
        user.profile.merge(&other);
        assert_eq!(user.profile.traits.get("plan"), Some(&TraitValue::Null));
    }

    #[test]
    fn a_rule_compares_a_trait() {
        let ir = r#"{"cart_after": 1800.0, "order": [0], "segments": [{"name": "Pro",
            "group": null, "condition": {"trait": "plan", "op": "in", "value": ["pro", "family"]}}]}"#;
        let rules = RuleSet::from_json(ir, &[]).unwrap();
        assert!(rules.reads_traits);
        let mut profile = Profile::default();
        assert!(rules
            .evaluate(&mut Reading::new(&profile, 0.0, 1800.0))
            .is_empty());
        profile
            .traits
            .set("plan", 1, TraitValue::Text("family".into()));
        assert_eq!(
            rules.evaluate(&mut Reading::new(&profile, 0.0, 1800.0)),
            ["Pro"]
        );
        let bad = ir.replace(
            r#""in", "value": ["pro", "family"]"#,
            r#""matches", "value": "(""#,
        );
        let refused = RuleSet::from_json(&bad, &[]).unwrap_err();
        assert!(refused.contains("regex parse error"), "{refused}");
    }

    #[test]
    fn every_operator_tells_its_values_apart() {
        let three = TraitValue::Number(3.0);
        let pro = TraitValue::Text("pro".into());
        let cases = [
            (TraitOp::Eq, &three, vec![TraitValue::Number(3.0)], true),
            (
                TraitOp::Eq,
                &three,
                vec![TraitValue::Text("3".into())],
                false,
            ),
            (TraitOp::Ne, &three, vec![TraitValue::Number(4.0)], true),
            (TraitOp::Gt, &three, vec![TraitValue::Number(2.0)], true),
            (TraitOp::Gt, &three, vec![TraitValue::Number(3.0)], false),
            (TraitOp::Ge, &three, vec![TraitValue::Number(3.0)], true),
            (TraitOp::Lt, &three, vec![TraitValue::Number(3.0)], false),
            (TraitOp::Le, &three, vec![TraitValue::Number(3.0)], true),
            (TraitOp::Gt, &pro, vec![TraitValue::Text("a".into())], false),
            (TraitOp::In, &pro, vec![three.clone(), pro.clone()], true),
            (TraitOp::NotIn, &pro, vec![three.clone()], true),
            (TraitOp::NotIn, &pro, vec![pro.clone()], false),
            (TraitOp::Exists, &pro, vec![], true),
            (TraitOp::Missing, &pro, vec![], false),
        ];
        let test = |op, values: Vec<TraitValue>| TraitTest::new(op, values, false).unwrap();
        for (op, value, values, expected) in cases {
            let holds = test(op, values.clone()).holds(Some(value), 0.0);
            assert_eq!(holds, expected, "{op:?} {value:?} {values:?}");
        }
        assert!(test(TraitOp::Missing, vec![]).holds(None, 0.0));
        assert!(!test(TraitOp::Exists, vec![]).holds(None, 0.0));
        assert!(!test(TraitOp::NotIn, vec![pro]).holds(None, 0.0));
    }

    #[test]
    fn time_operators_flip_as_event_time_passes() {
        let signed_up = TraitValue::Text("1970-01-02T00:00:00Z".into()); // 86,400
        let day = 86_400.0;
        let within = TraitTest::new(TraitOp::WithinLast, vec![TraitValue::Number(day)], true);
        let within = within.unwrap();
        let ago = TraitTest::new(TraitOp::MoreThanAgo, vec![TraitValue::Number(day)], false);
        let ago = ago.unwrap();
        let value = Some(&signed_up);
        for (as_of, inside, older) in [
            (86_399.0, false, false), // not yet
            (86_400.0, true, false),
            (172_800.0, true, false), // exactly a day ago: still within
            (172_800.5, false, true),
            (172_801.0, false, true),
        ] {
            assert_eq!(within.holds(value, as_of), inside, "{as_of}");
            assert_eq!(ago.holds(value, as_of), older, "{as_of}");
        }
        assert_eq!(within.changes_at(value, 0.0), 86_400.0);
        assert_eq!(within.changes_at(value, 86_400.0), 172_801.0);
        assert_eq!(ago.changes_at(value, 100_000.0), 172_801.0);
        assert_eq!(ago.changes_at(value, 172_801.0), f64::INFINITY);
        let text = TraitValue::Text("soon".into());
        assert!(!within.holds(Some(&text), 0.0) && !ago.holds(Some(&text), 1e12));
        assert_eq!(within.changes_at(Some(&text), 0.0), f64::INFINITY);
    }

    #[test]
    fn text_operators_compare_text_and_may_ignore_case() {
        let text = |t: &str| TraitValue::Text(t.into());
        let test = |op, value: &str, insensitive| {
            TraitTest::new(op, vec![text(value)], insensitive).unwrap()
        };
        let email = text("Ann@Example.COM");
        assert!(test(TraitOp::Contains, "@Example", false).holds(Some(&email), 0.0));
        assert!(!test(TraitOp::Contains, "@example", false).holds(Some(&email), 0.0));
        assert!(test(TraitOp::Contains, "@example", true).holds(Some(&email), 0.0));
        assert!(test(TraitOp::StartsWith, "ann", true).holds(Some(&email), 0.0));
        assert!(!test(TraitOp::StartsWith, "Example", false).holds(Some(&email), 0.0));
        assert!(test(TraitOp::EndsWith, ".com", true).holds(Some(&email), 0.0));
        assert!(!test(TraitOp::EndsWith, ".com", false).holds(Some(&email), 0.0));
        assert!(test(TraitOp::Matches, "^ann@.*[.]com$", true).holds(Some(&email), 0.0));
        assert!(!test(TraitOp::Matches, "^ann@", false).holds(Some(&email), 0.0));
        assert!(test(TraitOp::Eq, "ann@example.com", true).holds(Some(&email), 0.0));
        assert!(!test(TraitOp::Contains, "3", false).holds(Some(&TraitValue::Number(3.0)), 0.0));
    }
}
