//! The core against plain expected values: `data/oracle_cases.json` holds random
//! one-person streams of raw Segment messages and, at chosen moments, the features and
//! segments `tests/oracle.py` computes from the messages up to each moment (written by
//! `tests/processors/oracle_cases.py`, which a Python test keeps in step with the
//! oracle). Features, segments and pruning must equal them; timers, checked against the
//! core's own readings with no new events, must never come late, and the windows' and
//! clocks' must come exactly when the value changes.

use std::sync::OnceLock;

use _core::decoding::{decode_projected, Projection};
use _core::events::Event;
use _core::features::{count_window, index_of, numeric_features, Reading, Value, FEATURES};
use _core::profile::{Profile, DAY};
use _core::rules::RuleSet;
use _core::timing::{crosses_at, feature_changes_at, next_due, Op};
use _core::traits::Keep;

/// The rules file's `cart_abandonment_after` (20 minutes).
const CART_AFTER: f64 = 1200.0;
const CLOCKS: [&str; 5] = [
    "days_since_last_order",
    "days_since_last_seen",
    "days_since_first_seen",
    "T",
    "cart_idle_minutes",
];

struct Moment {
    at: f64,
    features: Vec<Value>,
    segments: Vec<String>,
}

struct Stream {
    events: Vec<Event>,
    moments: Vec<Moment>,
}

struct Cases {
    rules: RuleSet,
    streams: Vec<Stream>,
}

fn cases() -> &'static Cases {
    static CASES: OnceLock<Cases> = OnceLock::new();
    CASES.get_or_init(|| {
        let text = include_str!("data/oracle_cases.json");
        let file: serde_json::Value = serde_json::from_str(text).expect("the cases' JSON");
        let names: Vec<&str> = file["features"]
            .as_array()
            .expect("feature names")
            .iter()
            .map(|name| name.as_str().expect("a name"))
            .collect();
        let order: Vec<usize> = FEATURES
            .iter()
            .map(|(name, _)| names.iter().position(|n| n == name).expect("every feature"))
            .collect();
        let rules = RuleSet::from_json(&file["rules"].to_string(), &[]).expect("the rules");
        let strings = |value: &serde_json::Value| -> Vec<String> {
            let items = value.as_array().expect("a list");
            items
                .iter()
                .map(|i| i.as_str().unwrap().to_string())
                .collect()
        };
        let projection = Projection {
            traits: Keep::Nothing,
            events: match &file["projection"]["events"] {
                serde_json::Value::Bool(true) => Keep::All,
                names => Keep::Named(strings(names).into_iter().collect()),
            },
            properties: strings(&file["projection"]["properties"]),
        };
        let streams = file["streams"]
            .as_array()
            .expect("streams")
            .iter()
            .map(|stream| Stream {
                events: stream["events"]
                    .as_array()
                    .expect("events")
                    .iter()
                    .map(|raw| {
                        let raw = raw.as_str().unwrap().as_bytes();
                        decode_projected(raw, 32_768, &projection).expect("valid")
                    })
                    .collect(),
                moments: stream["moments"]
                    .as_array()
                    .expect("moments")
                    .iter()
                    .map(|moment| {
                        let values = moment[1].as_array().expect("values");
                        Moment {
                            at: moment[0].as_f64().expect("a moment"),
                            features: order
                                .iter()
                                .map(|&i| match &values[i] {
                                    serde_json::Value::String(text) => Value::Text(text.clone()),
                                    number => Value::Number(number.as_f64().expect("a number")),
                                })
                                .collect(),
                            segments: moment[2]
                                .as_array()
                                .expect("segments")
                                .iter()
                                .map(|name| name.as_str().unwrap().to_string())
                                .collect(),
                        }
                    })
                    .collect(),
            })
            .collect();
        Cases { rules, streams }
    })
}

/// The profile of a stream's events up to `moment` (in whole seconds), in the order sent,
/// with the rules' computed traits.
fn until(stream: &Stream, moment: f64) -> Profile {
    let mut profile = Profile::default();
    for event in &stream.events {
        if event.timestamp.trunc() <= moment {
            profile.apply(event);
            profile.fold(event, &cases().rules.computed);
        }
    }
    profile
}

fn same(got: &Value, expected: &Value) -> bool {
    match (got, expected) {
        (Value::Number(a), Value::Number(b)) => (a - b).abs() <= 1e-12 * b.abs().max(1.0),
        _ => got == expected,
    }
}

fn value_at(profile: &Profile, index: usize, moment: f64) -> Value {
    Reading::new(profile, moment, CART_AFTER).value(index)
}

fn segments_at(profile: &Profile, moment: f64) -> Vec<String> {
    let mut names = cases()
        .rules
        .evaluate(&mut Reading::new(profile, moment, CART_AFTER));
    names.sort();
    names
}

/// Moments strictly between `from` and `to` (a finite one), the last second included.
fn between(from: f64, to: f64) -> Vec<f64> {
    let mut probes: Vec<f64> = (1..8)
        .map(|k| (from + (to - from) * k as f64 / 8.0).floor())
        .collect();
    probes.push(to - 1.0);
    probes.retain(|&p| p > from && p < to);
    probes
}

#[test]
fn features_equal_the_oracles_at_every_chosen_moment() {
    let mut compared = 0;
    for (number, stream) in cases().streams.iter().enumerate() {
        for moment in &stream.moments {
            let got = Reading::new(&until(stream, moment.at), moment.at, CART_AFTER).all();
            for (index, (got, expected)) in got.iter().zip(&moment.features).enumerate() {
                assert!(
                    same(got, expected),
                    "stream {number} at {}: {} is {got:?}, the oracle says {expected:?}",
                    moment.at,
                    FEATURES[index].0
                );
                compared += 1;
            }
        }
    }
    assert!(compared > 50_000, "{compared}");
}

#[test]
fn segments_equal_the_oracles_at_every_chosen_moment() {
    let mut members = 0;
    for (number, stream) in cases().streams.iter().enumerate() {
        for moment in &stream.moments {
            let got = segments_at(&until(stream, moment.at), moment.at);
            assert_eq!(got, moment.segments, "stream {number} at {}", moment.at);
            members += got.len();
        }
    }
    let names = &cases().rules.names;
    for name in names {
        let seen = cases().streams.iter().any(|s| {
            s.moments
                .iter()
                .any(|m| m.segments.iter().any(|n| n == name))
        });
        assert!(seen, "no case has a member of {name}");
    }
    assert!(members > 0);
}

#[test]
fn a_pruned_profile_reads_as_the_whole_one_from_then_on() {
    for (number, stream) in cases().streams.iter().enumerate() {
        let Some(last) = stream
            .events
            .iter()
            .map(|e| e.timestamp.trunc())
            .reduce(f64::max)
        else {
            continue;
        };
        let mut pruned = until(stream, last);
        pruned.prune(last, &cases().rules.computed);
        for moment in stream.moments.iter().filter(|m| m.at >= last) {
            let got = Reading::new(&pruned, moment.at, CART_AFTER).all();
            let wrong: Vec<&str> = (0..FEATURES.len())
                .filter(|&i| !same(&got[i], &moment.features[i]))
                .map(|i| FEATURES[i].0)
                .collect();
            assert!(
                wrong.is_empty(),
                "stream {number} at {}: {wrong:?}",
                moment.at
            );
        }
    }
}

#[test]
fn a_feature_keeps_its_value_until_its_horizon_and_a_window_changes_at_it() {
    let mut timed = 0;
    for stream in &cases().streams {
        for moment in &stream.moments {
            let profile = until(stream, moment.at);
            for (index, (name, _)) in FEATURES.iter().enumerate() {
                if CLOCKS.contains(name) {
                    continue;
                }
                let horizon = feature_changes_at(&profile, index, moment.at, CART_AFTER);
                assert!(horizon > moment.at, "{name} at {}: {horizon}", moment.at);
                let now = value_at(&profile, index, moment.at);
                let far = moment.at + (400 * DAY) as f64;
                let end = if horizon.is_finite() { horizon } else { far };
                for probe in between(moment.at, end) {
                    let then = value_at(&profile, index, probe);
                    assert!(
                        same(&then, &now),
                        "{name} changed at {probe}, before its horizon {horizon} (from {})",
                        moment.at
                    );
                }
                if !horizon.is_finite() {
                    assert!(same(&value_at(&profile, index, far), &now), "{name}");
                } else if count_window(index).is_some() || *name == "sessions_7d" {
                    let then = value_at(&profile, index, horizon);
                    assert!(!same(&then, &now), "{name} did not change at {horizon}");
                    timed += 1;
                }
            }
        }
    }
    assert!(timed > 1_000, "{timed}");
}

#[test]
fn a_clock_comparison_changes_truth_exactly_when_it_says() {
    let ops = [Op::Gt, Op::Ge, Op::Lt, Op::Le, Op::Eq, Op::Ne];
    let mut crossed = 0;
    for stream in &cases().streams {
        for moment in stream.moments.iter().step_by(3) {
            let profile = until(stream, moment.at);
            for name in CLOCKS {
                let index = index_of(name).unwrap();
                let holds = |op: Op, threshold: f64, at: f64| match value_at(&profile, index, at) {
                    Value::Number(value) => op.holds(value, threshold),
                    Value::Text(_) => unreachable!("a clock is a number"),
                };
                for threshold in [0.0f64, 0.5, 1.0, 2.0, 3.0, 20.0, 30.0] {
                    if name == "T" && threshold.fract() != 0.0 {
                        continue; // whole days: a crossing of a half may come early
                    }
                    for op in ops {
                        let at = crosses_at(&profile, name, op, threshold, moment.at);
                        let now = holds(op, threshold, moment.at);
                        let far = moment.at + (400 * DAY) as f64;
                        let end = if at.is_finite() { at } else { far };
                        for probe in between(moment.at, end) {
                            assert_eq!(
                                holds(op, threshold, probe),
                                now,
                                "{name} {op:?} {threshold} at {probe}, before {at}"
                            );
                        }
                        if at.is_finite() {
                            assert!(at > moment.at && at == at.floor(), "{at}");
                            let then = holds(op, threshold, at);
                            assert_ne!(then, now, "{name} {op:?} {threshold} at {at}");
                            crossed += 1;
                        }
                    }
                }
            }
        }
    }
    assert!(crossed > 1_000, "{crossed}");
}

#[test]
fn a_user_is_due_before_any_segment_can_change() {
    let rules = &cases().rules;
    let mut due_count = 0;
    for stream in &cases().streams {
        for moment in &stream.moments {
            let profile = until(stream, moment.at);
            let due = next_due(&profile, moment.at, rules, &[], f64::INFINITY);
            let now = segments_at(&profile, moment.at);
            let end = due.map_or(moment.at + (400 * DAY) as f64, |d| d as f64);
            assert!(end > moment.at, "due {end} at {}", moment.at);
            for probe in between(moment.at, end) {
                assert_eq!(
                    segments_at(&profile, probe),
                    now,
                    "at {probe}, before the timer at {end} (set at {})",
                    moment.at
                );
            }
            due_count += due.is_some() as usize;
        }
    }
    assert!(due_count > 500, "{due_count}");
}

#[test]
fn a_user_is_due_at_their_expiry_and_on_the_refresh_grid() {
    let rules = RuleSet::from_json(
        r#"{"cart_after": 1200.0, "order": [], "segments": []}"#,
        &[],
    )
    .unwrap();
    let retention = (60 * DAY) as f64; // longer than the weekly grid, which then comes first
    for stream in &cases().streams {
        for moment in &stream.moments {
            let profile = until(stream, moment.at);
            let Some(last_seen) = profile.last_seen else {
                continue;
            };
            let expiry = (last_seen as f64 + retention).max(moment.at) + 1.0;
            let due = next_due(&profile, moment.at, &rules, &[], retention);
            assert_eq!(due, Some(expiry.ceil() as i64));
            let slid = numeric_features()
                .iter()
                .filter(|&&i| !CLOCKS.contains(&FEATURES[i].0))
                .map(|&i| feature_changes_at(&profile, i, moment.at, CART_AFTER))
                .fold(f64::INFINITY, f64::min);
            let refreshed = next_due(&profile, moment.at, &rules, numeric_features(), retention);
            let week = (7 * DAY) as f64; // refreshes fall on a weekly grid from the epoch
            let grid = (slid / week).ceil() * week;
            assert_eq!(refreshed, Some(expiry.min(grid).ceil() as i64));
        }
    }
}
