//! A user as Python sees it: `User` (its features and cart), its `SegmentChange`s and
//! `FeatureVector`s, and the vectors packed for the trainer.

use std::collections::BTreeMap;
use std::sync::Arc;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyTuple};

use super::classifier::PyClassifier;
use super::traits::{to_python, traits_dict};
use crate::features::{numeric_features, Reading, Value, FEATURES};
use crate::profile::{CartLine, CART_ABANDONMENT_AFTER};
use crate::rows;
use crate::step::{self, Vector};
use crate::user::{Change, User};
use crate::vectors;

/// One user's state: aggregates, labels, identity links, timer. Shared with the
/// partition's resident users (see [`crate::resident`]) while a step's users are read.
#[pyclass(module = "processors._core", name = "User", frozen, eq)]
#[derive(Clone, PartialEq)]
pub(crate) struct PyUser {
    pub(crate) inner: Arc<User>,
}

pub(crate) fn feature_dict<'py>(
    py: Python<'py>,
    values: Vec<Value>,
) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for ((name, _), value) in FEATURES.iter().zip(values) {
        match value {
            Value::Number(number) => dict.set_item(name, number)?,
            Value::Text(text) => dict.set_item(name, text)?,
        }
    }
    Ok(dict)
}

#[pymethods]
impl PyUser {
    #[new]
    fn new() -> Self {
        PyUser {
            inner: Arc::default(),
        }
    }

    /// The user in a stored row (any row version).
    #[staticmethod]
    fn from_bytes(data: &[u8]) -> PyResult<Self> {
        Ok(PyUser {
            inner: Arc::new(rows::decode(data)?),
        })
    }

    /// The stored row, in the current version.
    fn to_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &rows::encode(&self.inner))
    }

    /// This user with `other`'s labels (segments, version, cluster), or none when `other`
    /// is `None`: how a rebuilt generation takes over the labels readers have seen, so
    /// that re-evaluating it gives the changes between the two and continues the versions.
    #[pyo3(signature = (other))]
    fn with_labels_of(&self, other: Option<&PyUser>) -> Self {
        let mut user = User::clone(&self.inner);
        user.labels = other.map(|o| o.inner.labels.clone()).unwrap_or_default();
        PyUser {
            inner: Arc::new(user),
        }
    }

    /// The user's feature vector as of their latest evaluation, with the computed traits
    /// `classifier`'s rules compare with a percentile.
    #[pyo3(signature = (user_id, classifier=None))]
    fn vector(&self, user_id: &str, classifier: Option<&PyClassifier>) -> PyVector {
        let rules = classifier.map(|c| &c.inner.rules);
        PyVector {
            inner: step::vector_of(user_id, &self.inner, rules, false, false),
        }
    }

    /// The aggregates in their canonical byte form: equal bytes, equal aggregates.
    fn aggregates<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &rows::encode_profile(&self.inner.profile))
    }

    /// Every feature as of `as_of` (default: the latest evaluation).
    #[pyo3(signature = (as_of=None))]
    fn features<'py>(&self, py: Python<'py>, as_of: Option<f64>) -> PyResult<Bound<'py, PyDict>> {
        let as_of = as_of.unwrap_or(self.inner.as_of);
        let values = Reading::new(&self.inner.profile, as_of, CART_ABANDONMENT_AFTER).all();
        feature_dict(py, values)
    }

    /// One numeric feature (by name) as of the latest evaluation.
    fn number(&self, name: &str) -> PyResult<f64> {
        let index = crate::features::index_of(name)
            .filter(|&i| numeric_features().contains(&i))
            .ok_or_else(|| PyValueError::new_err(format!("no numeric feature {name:?}")))?;
        let mut reading = Reading::new(
            &self.inner.profile,
            self.inner.as_of,
            CART_ABANDONMENT_AFTER,
        );
        Ok(reading.number(index))
    }

    /// The identify traits kept, by name: `None`, a `bool`, a `float` or a `str`.
    fn traits<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        traits_dict(
            py,
            self.inner.profile.traits.0.iter().map(|(n, (_, v))| (n, v)),
        )
    }

    /// The computed traits `classifier`'s rules name, by name, as of `as_of` (default:
    /// the latest evaluation): a `float`, a `str` (times as ISO 8601 text) or `None`.
    #[pyo3(signature = (classifier, as_of=None))]
    fn computed<'py>(
        &self,
        py: Python<'py>,
        classifier: &PyClassifier,
        as_of: Option<f64>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let as_of = as_of.unwrap_or(self.inner.as_of);
        let rules = &classifier.inner.rules;
        let dict = PyDict::new(py);
        for (index, definition) in rules.computed.iter().enumerate() {
            if definition.names.is_empty() {
                continue;
            }
            let value = rules.computed_value(index, &self.inner.profile, as_of);
            for name in &definition.names {
                dict.set_item(name, to_python(py, &value)?)?;
            }
        }
        Ok(dict)
    }

    /// The predictions as `classifier`'s model scores them as of `as_of` (default: the
    /// latest evaluation), by name; `None` for a gated one.
    #[pyo3(signature = (classifier, as_of=None))]
    fn predictions<'py>(
        &self,
        py: Python<'py>,
        classifier: &PyClassifier,
        as_of: Option<f64>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let as_of = as_of.unwrap_or(self.inner.as_of);
        let mut reading = Reading::new(&self.inner.profile, as_of, CART_ABANDONMENT_AFTER);
        let predicted = classifier.inner.rules.predictor.predict(&mut reading);
        let dict = PyDict::new(py);
        for (name, value) in crate::predictions::PREDICTIONS.iter().zip(predicted) {
            dict.set_item(name, (!value.is_nan()).then_some(value))?;
        }
        Ok(dict)
    }

    /// The user as exported: id, features as of `as_of`, traits, computed traits and
    /// predictions (as `classifier` has them; none without one), segments, cluster and
    /// versions.
    #[pyo3(signature = (user_id, classifier=None))]
    fn document<'py>(
        &self,
        py: Python<'py>,
        user_id: &str,
        classifier: Option<&PyClassifier>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let user = &self.inner;
        let dict = PyDict::new(py);
        dict.set_item("user_id", user_id)?;
        dict.set_item("features", self.features(py, None)?)?;
        dict.set_item("traits", self.traits(py)?)?;
        let computed = match classifier {
            Some(classifier) => self.computed(py, classifier, None)?,
            None => PyDict::new(py),
        };
        dict.set_item("computed", computed)?;
        let predictions = match classifier {
            Some(classifier) => self.predictions(py, classifier, None)?.into_any(),
            None => py.None().into_bound(py),
        };
        dict.set_item("predictions", predictions)?;
        dict.set_item("segments", user.labels.segments.clone())?;
        dict.set_item("cluster", user.labels.cluster.clone())?;
        dict.set_item("model_version", user.labels.model_version)?;
        dict.set_item("version", user.labels.version)?;
        dict.set_item("as_of", user.as_of)?;
        Ok(dict)
    }

    /// The products in the open cart (`CartLine`s) and when it last changed.
    fn open_cart(&self) -> (Vec<PyCartLine>, Option<i64>) {
        let (lines, changed) = self.inner.profile.open_cart();
        (lines.into_iter().map(PyCartLine::from).collect(), changed)
    }

    #[getter]
    fn segments<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, &self.inner.labels.segments)
    }
    #[getter]
    fn version(&self) -> i64 {
        self.inner.labels.version
    }
    #[getter]
    fn cluster(&self) -> Option<String> {
        self.inner.labels.cluster.clone()
    }
    #[getter]
    fn model_version(&self) -> Option<i64> {
        self.inner.labels.model_version
    }
    #[getter]
    fn as_of(&self) -> f64 {
        self.inner.as_of
    }
    #[getter]
    fn alias_of(&self) -> Option<String> {
        self.inner.alias_of.clone()
    }
    /// The UTC days of the examples waiting for their labels.
    #[getter]
    fn pending(&self) -> Vec<i64> {
        self.inner.examples.pending.iter().map(|p| p.day).collect()
    }

    #[getter]
    fn due(&self) -> Option<i64> {
        self.inner.due
    }
    #[getter]
    fn linked(&self) -> Vec<String> {
        self.inner.linked.clone()
    }
    #[getter]
    fn absorbed(&self) -> Vec<String> {
        self.inner.absorbed.clone()
    }
    /// Behavioural events applied (identity calls left out).
    #[getter]
    fn events(&self) -> i64 {
        self.inner.profile.events
    }
    /// Message ids remembered for deduplication.
    #[getter]
    fn remembered(&self) -> usize {
        self.inner.recent.len()
    }

    fn __repr__(&self) -> String {
        let user = &self.inner;
        format!(
            "User(events={}, segments={:?}, version={}, cluster={:?}, as_of={}, due={:?}, alias_of={:?})",
            user.profile.events,
            user.labels.segments,
            user.labels.version,
            user.labels.cluster,
            user.as_of,
            user.due,
            user.alias_of
        )
    }
}

/// One product in an open cart.
#[pyclass(module = "processors._core", name = "CartLine", frozen, eq, get_all)]
#[derive(Clone, PartialEq)]
pub(crate) struct PyCartLine {
    pub(crate) product: String,
    pub(crate) category: String,
    pub(crate) count: i64,
    pub(crate) value: f64,
}

impl From<CartLine> for PyCartLine {
    fn from(line: CartLine) -> Self {
        PyCartLine {
            product: line.product,
            category: line.category,
            count: line.count,
            value: line.value,
        }
    }
}

/// A user entered or left segments, moved cluster, or (a tombstone) was erased.
#[pyclass(module = "processors._core", name = "SegmentChange", frozen, eq)]
#[derive(Clone, PartialEq)]
pub(crate) struct PyChange {
    pub(crate) inner: Change,
}

#[pymethods]
impl PyChange {
    /// The record after a user's erasure: it removes the user from a compacted topic.
    #[staticmethod]
    fn tombstone(user_id: &str, event_time: f64) -> Self {
        PyChange {
            inner: Change::tombstone(user_id, event_time),
        }
    }

    #[getter]
    fn user_id(&self) -> &str {
        &self.inner.user_id
    }
    #[getter]
    fn entered<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, &self.inner.entered)
    }
    #[getter]
    fn exited<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, &self.inner.exited)
    }
    #[getter]
    fn segments<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, &self.inner.segments)
    }
    #[getter]
    fn version(&self) -> i64 {
        self.inner.version
    }
    #[getter]
    fn reason(&self) -> &'static str {
        self.inner.reason.name()
    }
    #[getter]
    fn event_time(&self) -> f64 {
        self.inner.event_time
    }
    #[getter]
    fn cluster(&self) -> Option<String> {
        self.inner.cluster.clone()
    }
    #[getter]
    fn previous_cluster(&self) -> Option<String> {
        self.inner.previous_cluster.clone()
    }
    #[getter]
    fn model_version(&self) -> Option<i64> {
        self.inner.model_version
    }
    #[getter]
    fn cart(&self) -> Vec<PyCartLine> {
        self.inner
            .cart
            .iter()
            .cloned()
            .map(PyCartLine::from)
            .collect()
    }
    #[getter]
    fn cart_changed_at(&self) -> Option<i64> {
        self.inner.cart_changed_at
    }
    #[getter]
    fn is_tombstone(&self) -> bool {
        self.inner.is_tombstone
    }

    fn __repr__(&self) -> String {
        let c = &self.inner;
        format!(
            "SegmentChange(user_id={:?}, entered={:?}, exited={:?}, version={}, reason={:?}, event_time={}, cluster={:?})",
            c.user_id, c.entered, c.exited, c.version, c.reason.name(), c.event_time, c.cluster
        )
    }
}

/// A user's numeric features (`FEATURE_NAMES` order) as of event time `as_of`; `refresh`
/// marks a vector taken only because event time moved on.
#[pyclass(module = "processors._core", name = "FeatureVector", frozen, eq)]
#[derive(Clone, PartialEq)]
pub(crate) struct PyVector {
    pub(crate) inner: Vector,
}

#[pymethods]
impl PyVector {
    #[new]
    #[pyo3(signature = (user_id, as_of, values, refresh=false, computed=BTreeMap::new(),
                        inputs=Vec::new()))]
    fn new(
        user_id: String,
        as_of: f64,
        values: Vec<f64>,
        refresh: bool,
        computed: BTreeMap<String, f64>,
        inputs: Vec<f64>,
    ) -> Self {
        PyVector {
            inner: Vector {
                user_id,
                as_of,
                values,
                refresh,
                computed: computed.into_iter().collect(),
                inputs,
            },
        }
    }
    /// The prediction inputs (`PREDICTION_INPUTS` order), empty when users are not
    /// predicted on.
    #[getter]
    fn inputs<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, &self.inner.inputs)
    }
    #[getter]
    fn user_id(&self) -> &str {
        &self.inner.user_id
    }
    #[getter]
    fn as_of(&self) -> f64 {
        self.inner.as_of
    }
    #[getter]
    fn values<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, &self.inner.values)
    }
    #[getter]
    fn refresh(&self) -> bool {
        self.inner.refresh
    }
    #[getter]
    fn computed(&self) -> BTreeMap<String, f64> {
        self.inner.computed.iter().cloned().collect()
    }
    fn __repr__(&self) -> String {
        format!(
            "FeatureVector(user_id={:?}, as_of={}, refresh={})",
            self.inner.user_id, self.inner.as_of, self.inner.refresh
        )
    }
}

/// One message of the `features` topic holding `vectors` (see `vectors`).
#[pyfunction]
pub(crate) fn pack_vectors<'py>(
    py: Python<'py>,
    vectors: Vec<PyRef<'py, PyVector>>,
) -> Bound<'py, PyBytes> {
    let found: Vec<&Vector> = vectors.iter().map(|vector| &vector.inner).collect();
    PyBytes::new(py, &vectors::pack(&found, &feature_names()))
}

/// Names of the numeric features, in the order of feature vectors.
pub(crate) fn feature_names() -> Vec<&'static str> {
    numeric_features().iter().map(|&i| FEATURES[i].0).collect()
}
