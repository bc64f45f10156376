//! Point-in-time training examples for the predictions, labelled when their horizon has
//! passed.
//!
//! At every UTC midnight `D` of event time, each live user takes a *pending* example: the
//! prediction inputs as of `D` and the predictions the model in force made then. When
//! the user's timer reaches `D + 30 days`, the `purchase_30d` example matures (label 1
//! when the user has an order on a day in `[D, D + 30 d)`); at `D + 90 days`, `churn_90d`
//! (1 when no behavioural event in `[D, D + 90 d)`) and `revenue_90d` (the revenue of
//! orders on days in `[D, D + 90 d)`) do, and the pending example is dropped. A timer
//! fires before any later event of its user, so the user's state holds exactly the
//! events before the horizon.
//!
//! ```
//! use _core::events::{Event, Kind};
//! use _core::examples::{mature, Pending};
//! use _core::profile::{Profile, DAY};
//! let mut profile = Profile::default();
//! profile.apply(&Event { value: 20.0, ..Event::new("u", "m", Kind::Order, (12 * DAY) as f64) });
//! let mut pending = vec![Pending::new(10, [0.0; 15], [f32::NAN; 3])];
//! let matured = mature("u", &profile, &mut pending, 40);
//! assert_eq!((matured[0].prediction, matured[0].label), (0, 1.0));
//! assert_eq!(pending.len(), 1); // the 90-day labels are still to come
//! ```

use rmp::encode as mp;

use crate::features::Reading;
use crate::predictions::{Predictor, HORIZON_DAYS, INPUTS, PREDICTIONS};
use crate::profile::{Profile, DAY};

/// The longest horizon: a pending example is dropped once it has passed.
const LONGEST_DAYS: i64 = 90;

/// A snapshot waiting for its labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Pending {
    /// The UTC day it was taken at the start of.
    pub day: i64,
    pub inputs: [f32; INPUTS.len()],
    /// The predictions made then, NaN for a gated one.
    pub predicted: [f32; PREDICTIONS.len()],
    /// Whether the 30-day label went out already.
    pub early_done: bool,
}

impl Pending {
    pub fn new(day: i64, inputs: [f32; INPUTS.len()], predicted: [f32; PREDICTIONS.len()]) -> Self {
        Pending {
            day,
            inputs,
            predicted,
            early_done: false,
        }
    }

    /// The snapshot of a reading taken at a UTC midnight, scored by `predictor`.
    pub fn of(reading: &mut Reading, predictor: &Predictor) -> Pending {
        let day = (reading.as_of / DAY as f64).floor() as i64;
        let inputs = crate::predictions::inputs(reading).map(|v| v as f32);
        let predicted = predictor.predict(reading).map(|v| v as f32);
        Pending::new(day, inputs, predicted)
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

/// The examples of `pending` whose horizon `today` (a UTC day) has reached, labelled from
/// `profile`; pending examples with every label out are dropped.
pub fn mature(
    user_id: &str,
    profile: &Profile,
    pending: &mut Vec<Pending>,
    today: i64,
) -> Vec<Example> {
    let mut matured = Vec::new();
    let example = |p: &Pending, prediction: usize, label: f64| Example {
        user_id: user_id.to_string(),
        prediction,
        day: p.day,
        matured: today,
        inputs: p.inputs,
        predicted: (!p.predicted[prediction].is_nan()).then_some(p.predicted[prediction]),
        label,
    };
    for p in pending.iter_mut() {
        let revenue = |days: i64| -> (bool, i64) {
            let mut ordered = profile.purchase_days.range(p.day..p.day + days).peekable();
            let any = ordered.peek().is_some();
            (any, ordered.map(|(_, cents)| cents).sum())
        };
        if !p.early_done && today >= p.day + HORIZON_DAYS[0] {
            let (ordered, _) = revenue(HORIZON_DAYS[0]);
            matured.push(example(p, 0, f64::from(u8::from(ordered))));
            p.early_done = true;
        }
        if today >= p.day + LONGEST_DAYS {
            let active = profile.last_seen.is_some_and(|seen| seen >= p.day * DAY);
            matured.push(example(p, 1, f64::from(u8::from(!active))));
            let (_, cents) = revenue(HORIZON_DAYS[2]);
            matured.push(example(p, 2, cents as f64 / 100.0));
        }
    }
    pending.retain(|p| today < p.day + LONGEST_DAYS);
    matured
}

/// Another id's pending examples taken in (a merge): those of days not pending already.
pub fn absorb(pending: &mut Vec<Pending>, other: &[Pending]) {
    for theirs in other {
        if !pending.iter().any(|mine| mine.day == theirs.day) {
            pending.push(theirs.clone());
        }
    }
    pending.sort_by_key(|p| p.day);
}

/// One message of the examples topic holding `examples`: a msgpack map naming the inputs
/// and holding one row per example, `[user_id, prediction, day, matured, inputs, predicted,
/// label]` (`predicted` nil for a gated prediction); read back by `processors.examples`.
pub fn pack(examples: &[Example]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + examples.len() * (48 + 5 * INPUTS.len()));
    mp::write_map_len(&mut out, 2).expect("writing to a Vec");
    mp::write_str(&mut out, "inputs").expect("writing to a Vec");
    mp::write_array_len(&mut out, INPUTS.len() as u32).expect("writing to a Vec");
    for name in INPUTS {
        mp::write_str(&mut out, name).expect("writing to a Vec");
    }
    mp::write_str(&mut out, "rows").expect("writing to a Vec");
    mp::write_array_len(&mut out, examples.len() as u32).expect("writing to a Vec");
    for example in examples {
        mp::write_array_len(&mut out, 7).expect("writing to a Vec");
        mp::write_str(&mut out, &example.user_id).expect("writing to a Vec");
        mp::write_str(&mut out, PREDICTIONS[example.prediction]).expect("writing to a Vec");
        mp::write_sint(&mut out, example.day).expect("writing to a Vec");
        mp::write_sint(&mut out, example.matured).expect("writing to a Vec");
        mp::write_array_len(&mut out, INPUTS.len() as u32).expect("writing to a Vec");
        for value in example.inputs {
            mp::write_f32(&mut out, value).expect("writing to a Vec");
        }
        match example.predicted {
            None => mp::write_nil(&mut out).expect("writing to a Vec"),
            Some(value) => mp::write_f32(&mut out, value).expect("writing to a Vec"),
        }
        mp::write_f64(&mut out, example.label).expect("writing to a Vec");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Event, Kind};

    fn at(day: i64, second: i64) -> f64 {
        (day * DAY + second) as f64
    }

    #[test]
    fn labels_count_whole_days_from_the_snapshot_on() {
        let mut profile = Profile::default();
        profile.apply(&Event::new("u", "p", Kind::Page, at(10, 0)));
        for (day, value) in [(9, 5.0), (39, 7.5), (40, 100.0), (99, 1.0)] {
            let order = Event::new("u", &format!("o{day}"), Kind::Order, at(day, 3600));
            profile.apply(&Event { value, ..order });
        }
        let mut pending = vec![Pending::new(10, [0.0; 15], [0.25, f32::NAN, 3.0])];
        let early = mature("u", &profile, &mut pending, 39);
        assert!(early.is_empty());
        let early = mature("u", &profile, &mut pending, 40);
        assert_eq!(early.len(), 1);
        assert_eq!((early[0].label, early[0].predicted), (1.0, Some(0.25)));
        assert!(mature("u", &profile, &mut pending, 41).is_empty());
        let late = mature("u", &profile, &mut pending, 100);
        let labels: Vec<_> = late
            .iter()
            .map(|e| (e.prediction, e.label, e.predicted))
            .collect();
        // an event on day 10 or later: not churned; orders of days 39, 40 and 99
        assert_eq!(labels, [(1, 0.0, None), (2, 108.5, Some(3.0))]);
        assert!(pending.is_empty());
    }

    #[test]
    fn a_user_gone_quiet_churns() {
        let mut profile = Profile::default();
        profile.apply(&Event::new("u", "p", Kind::Page, at(10, 86_399)));
        let mut pending = vec![Pending::new(11, [0.0; 15], [f32::NAN; 3])];
        let labels: Vec<_> = mature("u", &profile, &mut pending, 101)
            .iter()
            .map(|e| (e.prediction, e.label))
            .collect();
        assert_eq!(labels, [(0, 0.0), (1, 1.0), (2, 0.0)]);
    }
}
