//! The compiled rules and the clustering model's placement, as one `Classifier`.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::features::{Reading, Value};
use crate::placement::Placement;
use crate::predictions::{Predictor, Scorer, PREDICTIONS};
use crate::rules::RuleSet;
use crate::step::Classifier;

/// Compiled rules with their percentile thresholds, and the model's placement, if any.
#[pyclass(module = "processors._core", name = "Classifier", frozen)]
pub(crate) struct PyClassifier {
    pub(crate) inner: Classifier,
}

#[pymethods]
impl PyClassifier {
    /// `rules`: the rules' intermediate form (JSON); `thresholds`: known percentiles by
    /// name; `clustered`: the features users are clustered on; `model`: the placement
    /// parameters of a snapshot; `predictions`: its scored predictions' coefficients by
    /// name, with the snapshot's version under `version` (see `processors.classifier`);
    /// `examples`: whether users take a point-in-time example at every UTC midnight.
    #[new]
    #[pyo3(signature = (rules, thresholds, clustered, model=None, predictions=None,
                        examples=false))]
    fn new(
        rules: &str,
        thresholds: Vec<(String, f64)>,
        clustered: Vec<String>,
        model: Option<&Bound<'_, PyDict>>,
        predictions: Option<&Bound<'_, PyDict>>,
        examples: bool,
    ) -> PyResult<Self> {
        let mut rules = RuleSet::from_json(rules, &thresholds).map_err(PyValueError::new_err)?;
        if let Some(predictions) = predictions {
            rules.predictor = predictor(predictions)?;
        }
        let model = model.map(placement).transpose()?;
        let clustered = clustered
            .iter()
            .map(|name| {
                crate::features::index_of(name)
                    .ok_or_else(|| PyValueError::new_err(format!("unknown feature {name:?}")))
            })
            .collect::<PyResult<_>>()?;
        Ok(PyClassifier {
            inner: Classifier {
                rules,
                model,
                clustered,
                examples,
            },
        })
    }

    /// The segments a user with these feature values is in (features not given read as
    /// a user with no events has them; bursts count nothing).
    fn segments_of<'py>(
        &self,
        py: Python<'py>,
        features: &Bound<'py, PyDict>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let rules = &self.inner.rules;
        let empty = crate::profile::Profile::default();
        let mut reading = Reading::new(&empty, 0.0, rules.cart_after);
        for (name, value) in features.iter() {
            let name: String = name.extract()?;
            let index = crate::features::index_of(&name)
                .ok_or_else(|| PyValueError::new_err(format!("unknown feature {name:?}")))?;
            let value = match value.extract::<f64>() {
                Ok(number) => Value::Number(number),
                Err(_) => Value::Text(value.extract()?),
            };
            reading.assume(index, value);
        }
        PyTuple::new(py, rules.evaluate(&mut reading))
    }

    /// The least time after an on-time event at which it can bring a change of its own.
    #[getter]
    fn min_delay(&self) -> f64 {
        self.inner.rules.min_delay
    }
}

/// Each row of raw prediction inputs (`PREDICTION_INPUTS` order) scored by `predictions`
/// (coefficients by name, as `Classifier` takes them): per row, a value per prediction,
/// `None` for one not given.
#[pyfunction]
pub(crate) fn score_predictions(
    predictions: &Bound<'_, PyDict>,
    rows: Vec<Vec<f64>>,
) -> PyResult<Vec<Vec<Option<f64>>>> {
    let predictor = predictor(predictions)?;
    let width = crate::predictions::INPUTS.len();
    rows.into_iter()
        .map(|row| {
            let inputs: [f64; crate::predictions::INPUTS.len()] = row
                .try_into()
                .map_err(|_| PyValueError::new_err(format!("a row of {width} inputs")))?;
            Ok(predictor
                .scorers
                .iter()
                .map(|scorer| scorer.as_ref().map(|s| s.score(&inputs)))
                .collect())
        })
        .collect()
}

/// The predictor of `{"version": n, "purchase_30d": {"mean": [...], "std": [...],
/// "weights": [...], "intercept": c, "calibration": [a, b], "spend": [[...], c] or
/// None}, ...}`; a prediction not named is gated.
fn predictor(predictions: &Bound<'_, PyDict>) -> PyResult<Predictor> {
    let mut predictor = Predictor {
        version: match predictions.get_item("version")? {
            Some(version) => version.extract()?,
            None => 0,
        },
        ..Predictor::default()
    };
    for (name, slot) in PREDICTIONS.iter().zip(predictor.scorers.iter_mut()) {
        let Some(model) = predictions.get_item(name)? else {
            continue;
        };
        let get = |key: &str| -> PyResult<Bound<'_, PyAny>> {
            model
                .get_item(key)
                .map_err(|_| PyValueError::new_err(format!("prediction {name} lacks {key}")))
        };
        let scorer = Scorer {
            mean: get("mean")?.extract()?,
            std: get("std")?.extract()?,
            weights: get("weights")?.extract()?,
            intercept: get("intercept")?.extract()?,
            calibration: get("calibration")?.extract()?,
            spend: get("spend")?.extract()?,
        };
        let inputs = crate::predictions::INPUTS.len();
        let lengths = [scorer.mean.len(), scorer.std.len(), scorer.weights.len()];
        if lengths.iter().any(|&n| n != inputs)
            || scorer
                .spend
                .as_ref()
                .is_some_and(|(w, _)| w.len() != inputs)
        {
            return Err(PyValueError::new_err(format!(
                "prediction {name} needs {inputs} coefficients of each kind"
            )));
        }
        *slot = Some(scorer);
    }
    Ok(predictor)
}

pub(crate) fn placement(model: &Bound<'_, PyDict>) -> PyResult<Placement> {
    let get = |key: &str| -> PyResult<Bound<'_, PyAny>> {
        model
            .get_item(key)?
            .ok_or_else(|| PyValueError::new_err(format!("model lacks {key}")))
    };
    Ok(Placement {
        version: get("version")?.extract()?,
        columns: get("columns")?.extract()?,
        logged: get("logged")?.extract()?,
        mean: get("mean")?.extract()?,
        std: get("std")?.extract()?,
        centroids: get("centroids")?.extract()?,
        ids: get("ids")?.extract()?,
        events_column: get("events_column")?.extract()?,
        min_events: get("min_events")?.extract()?,
    })
}
