//! Predictions the core scores from a model snapshot's coefficients: the probability of
//! an order within 30 days, of no behavioural event within 90 days, and the revenue
//! expected over 90 days.
//!
//! Their inputs are whole-day quantities (lifetime totals, 30-day counts of daily
//! buckets, RFM days, whole UTC days since an event), so a prediction changes only with
//! an event, a new model, or at a UTC midnight. Each input goes through `log1p` of its
//! value floored at 0 and is standardised with the snapshot's mean and deviation; a
//! probability is Platt-calibrated logistic regression, `sigmoid(a·(w·x + c) + b)`; an
//! amount is that probability times a linear estimate of the spend, floored at 0.
//!
//! ```
//! use _core::predictions::{Scorer, INPUTS};
//! let n = INPUTS.len();
//! let mut weights = vec![0.0; n];
//! weights[0] = 1.0; // orders_lifetime
//! let scorer = Scorer { mean: vec![0.0; n], std: vec![1.0; n], weights, intercept: 0.0,
//!                       calibration: (1.0, 0.0), spend: None };
//! let mut inputs = [0.0; INPUTS.len()];
//! assert_eq!(scorer.score(&inputs), 0.5);
//! inputs[0] = 1.0_f64.exp() - 1.0; // log1p gives 1
//! assert!((scorer.score(&inputs) - 0.7310585786).abs() < 1e-9);
//! ```

use crate::features::{index_of, Reading};
use crate::profile::DAY;

/// The predictions, in the order rules and snapshots number them.
pub const PREDICTIONS: [&str; 3] = ["purchase_30d", "churn_90d", "revenue_90d"];

/// Each prediction's horizon, in days after the snapshot its example is taken at.
pub const HORIZON_DAYS: [i64; 3] = [30, 90, 90];

/// The inputs every prediction reads, in coefficient order: features by name, and three
/// counts of whole UTC days from the evaluation day back to the day of the latest
/// behavioural event (`idle_days`), of the first (`tenure_days`) and of the latest order
/// (`order_idle_days`, `tenure_days` without one); each 0 without events.
pub const INPUTS: [&str; 15] = [
    "orders_lifetime",
    "revenue_lifetime",
    "frequency",
    "recency",
    "T",
    "monetary_value",
    "orders_30d",
    "revenue_30d",
    "events_lifetime",
    "page_views_30d",
    "product_views_30d",
    "cart_adds_30d",
    "idle_days",
    "tenure_days",
    "order_idle_days",
];

/// How many of [`INPUTS`] are features (the rest are day counts).
const FEATURE_INPUTS: usize = 12;

/// The index of a prediction by name.
pub fn prediction_index(name: &str) -> Option<usize> {
    PREDICTIONS.iter().position(|p| *p == name)
}

/// The raw [`INPUTS`] of a reading.
pub fn inputs(reading: &mut Reading) -> [f64; INPUTS.len()] {
    let mut values = [0.0; INPUTS.len()];
    for (value, name) in values.iter_mut().zip(&INPUTS[..FEATURE_INPUTS]) {
        *value = reading.number(index_of(name).expect("a feature"));
    }
    let profile = reading.profile;
    let today = (reading.as_of / DAY as f64).floor() as i64;
    let days_since = |moment: Option<i64>| moment.map(|m| (today - m.div_euclid(DAY)).max(0));
    let tenure = days_since(profile.first_seen).unwrap_or(0);
    values[FEATURE_INPUTS] = days_since(profile.last_seen).unwrap_or(0) as f64;
    values[FEATURE_INPUTS + 1] = tenure as f64;
    values[FEATURE_INPUTS + 2] = days_since(profile.last_order).unwrap_or(tenure) as f64;
    values
}

/// One prediction's coefficients, as a snapshot ships them.
#[derive(Clone, Debug, PartialEq)]
pub struct Scorer {
    /// Standardisation of the `log1p` inputs.
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    /// The logistic regression on the standardised inputs.
    pub weights: Vec<f64>,
    pub intercept: f64,
    /// Platt scaling of its log-odds: `(a, b)` in `sigmoid(a·z + b)`.
    pub calibration: (f64, f64),
    /// For an amount: the linear estimate of the spend on the standardised inputs.
    pub spend: Option<(Vec<f64>, f64)>,
}

impl Scorer {
    /// The prediction for raw `inputs` in [`INPUTS`] order.
    pub fn score(&self, inputs: &[f64; INPUTS.len()]) -> f64 {
        let mut z = self.intercept;
        let mut spend = self.spend.as_ref().map_or(0.0, |(_, c)| *c);
        for (i, raw) in inputs.iter().enumerate() {
            let x = (raw.max(0.0).ln_1p() - self.mean[i]) / self.std[i];
            z += self.weights[i] * x;
            if let Some((weights, _)) = &self.spend {
                spend += weights[i] * x;
            }
        }
        let (a, b) = self.calibration;
        let probability = 1.0 / (1.0 + (-(a * z + b)).exp());
        match self.spend {
            None => probability,
            Some(_) => probability * spend.max(0.0),
        }
    }
}

/// The predictions of a model snapshot: a scorer per prediction, `None` while gated.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Predictor {
    pub version: i64,
    pub scorers: [Option<Scorer>; PREDICTIONS.len()],
}

impl Predictor {
    /// Every prediction of a reading, NaN while gated; computed once a reading.
    pub fn predict(&self, reading: &mut Reading) -> [f64; PREDICTIONS.len()] {
        if let Some(known) = reading.predictions {
            return known;
        }
        let values = inputs(reading);
        let predicted = self
            .scorers
            .each_ref()
            .map(|scorer| scorer.as_ref().map_or(f64::NAN, |s| s.score(&values)));
        reading.predictions = Some(predicted);
        predicted
    }

    /// Whether any prediction is scored (not gated).
    pub fn any(&self) -> bool {
        self.scorers.iter().any(Option::is_some)
    }
}

/// The first UTC midnight after `as_of`: when whole-day inputs next change.
pub fn next_midnight(as_of: f64) -> f64 {
    ((as_of / DAY as f64).floor() + 1.0) * DAY as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Event, Kind};
    use crate::profile::Profile;

    #[test]
    fn day_counts_are_whole_utc_days() {
        let mut profile = Profile::default();
        let day = DAY as f64;
        profile.apply(&Event::new("u", "a", Kind::Page, 3.0 * day + 5.0));
        profile.apply(&Event {
            value: 5.0,
            ..Event::new("u", "b", Kind::Order, 5.0 * day - 1.0)
        });
        let mut reading = Reading::new(&profile, 9.0 * day, 1800.0);
        let values = inputs(&mut reading);
        assert_eq!(&values[FEATURE_INPUTS..], &[5.0, 6.0, 5.0]);
        assert_eq!(values[0], 1.0); // orders_lifetime
        let mut before_midnight = Reading::new(&profile, 9.0 * day - 1.0, 1800.0);
        assert_eq!(inputs(&mut before_midnight)[FEATURE_INPUTS], 4.0);
        assert_eq!(next_midnight(9.0 * day - 1.0), 9.0 * day);
        assert_eq!(next_midnight(9.0 * day), 10.0 * day);
    }

    #[test]
    fn an_amount_is_the_probability_times_the_spend() {
        let n = INPUTS.len();
        let scorer = Scorer {
            mean: vec![0.0; n],
            std: vec![1.0; n],
            weights: vec![0.0; n],
            intercept: 0.0,
            calibration: (1.0, 0.0),
            spend: Some((vec![0.0; n], 80.0)),
        };
        assert_eq!(scorer.score(&[0.0; INPUTS.len()]), 40.0);
        let negative = Scorer {
            spend: Some((vec![0.0; n], -3.0)),
            ..scorer
        };
        assert_eq!(negative.score(&[0.0; INPUTS.len()]), 0.0);
    }
}
