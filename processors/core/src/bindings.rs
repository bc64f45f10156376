//! The one module that knows Python: converts arguments and results at the boundary.
//!
//! A worker crosses it once per partition per batch ([`run_partition`]); users cross as
//! opaque [`PyUser`] objects (or their stored bytes) and come back the same way.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyList, PySet, PyString, PyTuple};

use crate::decoding;

use crate::events::{Event, Kind};
use crate::features::{numeric_features, Reading, Value, FEATURES, TEXT_FEATURES};
use crate::partitioner;
use crate::placement::Placement;
use crate::profile::{CartLine, CART_ABANDONMENT_AFTER, RECENT_SECONDS};
use crate::pyrepr;
use crate::reading::{owner_elsewhere, PartitionItems, Verdict};
use crate::rows::{self, RowError};
use crate::rules::RuleSet;
use crate::step::{self, Classifier, Item, Map, Options, Relay, Stored, Vector};
use crate::user::{Change, Reason, User};
use crate::vectors;
use crate::watermark::Watermark;

impl From<RowError> for PyErr {
    fn from(error: RowError) -> PyErr {
        PyValueError::new_err(error.to_string())
    }
}

/// Kafka's murmur2 of `key`, sign bit cleared.
#[pyfunction]
fn murmur2(key: &[u8]) -> u32 {
    partitioner::murmur2(key)
}

/// The canonical partition of each of `user_ids` among `partitions`, in one call.
#[pyfunction]
fn canonical_partitions(user_ids: Vec<String>, partitions: u32) -> PyResult<Vec<u32>> {
    if partitions == 0 {
        return Err(PyValueError::new_err("partitions must be at least 1"));
    }
    Ok(user_ids
        .iter()
        .map(|user_id| partitioner::canonical_partition(user_id, partitions))
        .collect())
}

/// One validated event reduced to what segmentation needs (see `processors.events`).
#[pyclass(module = "processors._core", name = "Action", frozen, eq)]
#[derive(Clone, PartialEq)]
struct PyAction {
    inner: Event,
}

/// The members of `processors.events.EventKind`, by code.
static EVENT_KINDS: PyOnceLock<Vec<Py<PyAny>>> = PyOnceLock::new();

fn event_kind(py: Python<'_>, kind: Kind) -> PyResult<Py<PyAny>> {
    let members = EVENT_KINDS.get_or_try_init(py, || -> PyResult<Vec<Py<PyAny>>> {
        let class = py.import("processors.events")?.getattr("EventKind")?;
        (0..=Kind::Alias as i64)
            .map(|code| Ok(class.call1((code,))?.unbind()))
            .collect()
    })?;
    Ok(members[kind as usize].clone_ref(py))
}

#[pymethods]
impl PyAction {
    #[new]
    #[pyo3(signature = (user_id, message_id, kind, timestamp, value=0.0, categories=Vec::new(),
                        device=None, anonymous_id=None, previous_id=None, product=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        user_id: String,
        message_id: String,
        kind: i64,
        timestamp: f64,
        value: f64,
        categories: Vec<String>,
        device: Option<String>,
        anonymous_id: Option<String>,
        previous_id: Option<String>,
        product: Option<String>,
    ) -> PyResult<Self> {
        let kind =
            Kind::from_code(kind).ok_or_else(|| PyValueError::new_err("unknown event kind"))?;
        Ok(PyAction {
            inner: Event {
                user_id,
                message_id,
                kind,
                timestamp,
                value,
                categories,
                device,
                anonymous_id,
                previous_id,
                product,
            },
        })
    }

    /// The same event, for the user `user_id` (forwarded to the user an id belongs to).
    fn for_user(&self, user_id: String) -> Self {
        PyAction {
            inner: Event {
                user_id,
                ..self.inner.clone()
            },
        }
    }

    #[getter]
    fn user_id(&self) -> &str {
        &self.inner.user_id
    }
    #[getter]
    fn message_id(&self) -> &str {
        &self.inner.message_id
    }
    #[getter]
    fn kind(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        event_kind(py, self.inner.kind)
    }
    #[getter]
    fn timestamp(&self) -> f64 {
        self.inner.timestamp
    }
    #[getter]
    fn value(&self) -> f64 {
        self.inner.value
    }
    #[getter]
    fn categories<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, &self.inner.categories)
    }
    #[getter]
    fn device(&self) -> Option<&str> {
        self.inner.device.as_deref()
    }
    #[getter]
    fn anonymous_id(&self) -> Option<&str> {
        self.inner.anonymous_id.as_deref()
    }
    #[getter]
    fn previous_id(&self) -> Option<&str> {
        self.inner.previous_id.as_deref()
    }
    #[getter]
    fn product(&self) -> Option<&str> {
        self.inner.product.as_deref()
    }

    fn __repr__(&self) -> String {
        let e = &self.inner;
        format!(
            "Action(user_id={:?}, message_id={:?}, kind={}, timestamp={}, value={})",
            e.user_id,
            e.message_id,
            e.kind.name(),
            e.timestamp,
            e.value
        )
    }
}

/// Why a raw event was refused: a reason code and a readable detail.
#[pyclass(module = "processors._core", name = "Rejection", frozen, eq, get_all)]
#[derive(Clone, PartialEq)]
struct PyRejection {
    reason: String,
    detail: String,
}

#[pymethods]
impl PyRejection {
    #[new]
    fn new(reason: String, detail: String) -> Self {
        PyRejection { reason, detail }
    }

    fn __repr__(&self) -> String {
        format!(
            "Rejection(reason={:?}, detail={:?})",
            self.reason, self.detail
        )
    }
}

/// Validate raw Segment messages and reduce each to an `Action`, or a `Rejection` naming
/// why it cannot be used; one call for a batch.
#[pyfunction]
fn decode_events(
    py: Python<'_>,
    messages: Vec<Bound<'_, PyBytes>>,
    max_bytes: usize,
) -> PyResult<Vec<Py<PyAny>>> {
    messages
        .iter()
        .map(|raw| match decoding::decode(raw.as_bytes(), max_bytes) {
            Ok(inner) => Ok(Py::new(py, PyAction { inner })?.into_any()),
            Err(rejected) => Ok(Py::new(
                py,
                PyRejection {
                    reason: rejected.reason.to_string(),
                    detail: rejected.detail,
                },
            )?
            .into_any()),
        })
        .collect()
}

/// One user's state: aggregates, labels, identity links, timer.
#[pyclass(module = "processors._core", name = "User", frozen, eq)]
#[derive(Clone, PartialEq)]
struct PyUser {
    inner: User,
}

fn feature_dict<'py>(py: Python<'py>, values: Vec<Value>) -> PyResult<Bound<'py, PyDict>> {
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
            inner: User::default(),
        }
    }

    /// The user in a stored row (any row version).
    #[staticmethod]
    fn from_bytes(data: &[u8]) -> PyResult<Self> {
        Ok(PyUser {
            inner: rows::decode(data)?,
        })
    }

    /// The stored row, in the current version.
    fn to_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &rows::encode(&self.inner))
    }

    /// The user's feature vector as of their latest evaluation.
    fn vector(&self, user_id: &str) -> PyVector {
        PyVector {
            inner: step::vector_of(user_id, &self.inner, false),
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

    /// The user as exported: id, features as of `as_of`, segments, cluster and versions.
    fn document<'py>(&self, py: Python<'py>, user_id: &str) -> PyResult<Bound<'py, PyDict>> {
        let user = &self.inner;
        let dict = PyDict::new(py);
        dict.set_item("user_id", user_id)?;
        dict.set_item("features", self.features(py, None)?)?;
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
struct PyCartLine {
    product: String,
    category: String,
    count: i64,
    value: f64,
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
struct PyChange {
    inner: Change,
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

    /// The change as published on the change topic (JSON).
    fn to_json<'py>(
        &self,
        py: Python<'py>,
        processed_at: f64,
        rules_version: &str,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let json = crate::changes::to_json(&self.inner, processed_at, rules_version)
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok(PyBytes::new(py, &json))
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
struct PyVector {
    inner: Vector,
}

#[pymethods]
impl PyVector {
    #[new]
    #[pyo3(signature = (user_id, as_of, values, refresh=false))]
    fn new(user_id: String, as_of: f64, values: Vec<f64>, refresh: bool) -> Self {
        PyVector {
            inner: Vector {
                user_id,
                as_of,
                values,
                refresh,
            },
        }
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
    fn __repr__(&self) -> String {
        format!(
            "FeatureVector(user_id={:?}, as_of={}, refresh={})",
            self.inner.user_id, self.inner.as_of, self.inner.refresh
        )
    }
}

/// A message the pipeline sends itself on the events topic (see `processors.wire`).
#[pyclass(module = "processors._core", name = "Relay", frozen, eq, get_all)]
#[derive(Clone, PartialEq)]
struct PyRelay {
    kind: String,
    key: String,
    body: Vec<u8>,
    position: i64,
}

#[pymethods]
impl PyRelay {
    #[new]
    #[pyo3(signature = (kind, key, body=Vec::new(), position=-1))]
    fn new(kind: String, key: String, body: Vec<u8>, position: i64) -> Self {
        PyRelay {
            kind,
            key,
            body,
            position,
        }
    }
    fn __repr__(&self) -> String {
        format!("Relay(kind={:?}, key={:?})", self.kind, self.key)
    }
}

impl From<Relay> for PyRelay {
    fn from(relay: Relay) -> Self {
        PyRelay {
            kind: relay.kind.to_string(),
            key: relay.key,
            body: relay.body,
            position: relay.position as i64,
        }
    }
}

/// Compiled rules with their percentile thresholds, and the model's placement, if any.
#[pyclass(module = "processors._core", name = "Classifier", frozen)]
struct PyClassifier {
    inner: Classifier,
}

#[pymethods]
impl PyClassifier {
    /// `rules`: the rules' intermediate form (JSON); `thresholds`: known percentiles by
    /// name; `clustered`: the features users are clustered on; `model`: the placement
    /// parameters of a snapshot (see `processors.classifier`).
    #[new]
    #[pyo3(signature = (rules, thresholds, clustered, model=None))]
    fn new(
        rules: &str,
        thresholds: Vec<(String, f64)>,
        clustered: Vec<String>,
        model: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let rules = RuleSet::from_json(rules, &thresholds).map_err(PyValueError::new_err)?;
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

fn placement(model: &Bound<'_, PyDict>) -> PyResult<Placement> {
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

/// Stored users in a Python mapping of ids to `User`s or their rows.
struct PyStored<'a, 'py> {
    mapping: &'a Bound<'py, PyAny>,
}

impl Stored for PyStored<'_, '_> {
    fn fetch(&mut self, user_id: &str) -> Result<Option<(User, Vec<u8>)>, RowError> {
        let found = match self.mapping.get_item(user_id) {
            Ok(found) => found,
            Err(_) => return Ok(None),
        };
        if let Ok(row) = found.cast::<PyBytes>() {
            let row = row.as_bytes();
            return Ok(Some((rows::decode(row)?, row.to_vec())));
        }
        match found.cast::<PyUser>() {
            Ok(user) => {
                let user = user.get().inner.clone();
                let row = rows::encode(&user);
                Ok(Some((user, row)))
            }
            Err(_) => Err(RowError("a stored user is a User or its row".into())),
        }
    }
}

fn item_of(item: &Bound<'_, PyAny>) -> PyResult<Item> {
    if let Ok(action) = item.cast::<PyAction>() {
        return Ok(Item::Event(action.get().inner.clone()));
    }
    let py = item.py();
    let kind = item.get_type().name()?;
    let text = |name: &str| -> PyResult<String> { item.getattr(name)?.extract() };
    Ok(match kind.to_str()? {
        "Merge" => Item::Merge {
            anonymous_id: text("anonymous_id")?,
            into: text("into")?,
        },
        "Absorb" => Item::Absorb {
            source_id: text("source_id")?,
            into: text("into")?,
            state: item.getattr(intern!(py, "state"))?.extract()?,
        },
        "Advance" => Item::Advance {
            until: item.getattr(intern!(py, "until"))?.extract()?,
        },
        "Erase" => Item::Erase {
            user_id: text("user_id")?,
            follow: item.getattr(intern!(py, "follow"))?.extract()?,
        },
        other => return Err(PyValueError::new_err(format!("not a step item: {other}"))),
    })
}

/// A partition's event-time progress (see `watermark`).
#[pyclass(module = "processors._core", name = "Watermark", eq)]
#[derive(Clone, PartialEq)]
struct PyWatermark {
    inner: Watermark,
}

#[pymethods]
impl PyWatermark {
    #[new]
    #[pyo3(signature = (lateness, max_event_time=f64::NEG_INFINITY, floor=f64::NEG_INFINITY))]
    fn new(lateness: f64, max_event_time: f64, floor: f64) -> Self {
        PyWatermark {
            inner: Watermark {
                lateness,
                max_event_time,
                floor,
            },
        }
    }

    #[getter]
    fn lateness(&self) -> f64 {
        self.inner.lateness
    }

    #[getter]
    fn max_event_time(&self) -> f64 {
        self.inner.max_event_time
    }

    #[getter]
    fn floor(&self) -> f64 {
        self.inner.floor
    }

    /// Events older than this are late.
    #[getter]
    fn value(&self) -> f64 {
        self.inner.value()
    }

    /// Whether an event at `moment` is on time; on-time events move the watermark.
    fn admit(&mut self, moment: f64) -> bool {
        self.inner.admit(moment)
    }

    /// Declare that no event before `moment` will come.
    fn advance_to(&mut self, moment: f64) {
        self.inner.advance_to(moment)
    }

    fn __repr__(&self) -> String {
        format!(
            "Watermark(lateness={}, max_event_time={}, floor={})",
            pyrepr::float_repr(self.inner.lateness),
            pyrepr::float_repr(self.inner.max_event_time),
            pyrepr::float_repr(self.inner.floor)
        )
    }
}

/// One partition's items of a batch, as `read_messages` read them (see `reading`).
#[pyclass(module = "processors._core", name = "PartitionBatch")]
struct PyPartitionBatch {
    inner: PartitionItems,
}

#[pymethods]
impl PyPartitionBatch {
    /// An empty share of partition `number` whose last message is at `last`.
    #[new]
    fn new(number: u32, last: i64) -> Self {
        PyPartitionBatch {
            inner: PartitionItems::new(number, last),
        }
    }

    /// The offset of the partition's last message in the batch.
    #[getter]
    fn last(&self) -> i64 {
        self.inner.last
    }

    /// Whether an advance-watermark command is among the items.
    #[getter]
    fn advances(&self) -> bool {
        self.inner.advances
    }

    #[setter]
    fn set_advances(&mut self, advances: bool) {
        self.inner.advances = advances;
    }

    /// Relayed messages taken.
    #[getter]
    fn relayed(&self) -> usize {
        self.inner.relayed
    }

    #[setter]
    fn set_relayed(&mut self, relayed: usize) {
        self.inner.relayed = relayed;
    }

    /// Whether the partition's latest event was replayed; `None` when it had no event.
    #[getter]
    fn replaying(&self) -> Option<bool> {
        self.inner.replaying
    }

    /// Append a pipeline item (merge, absorb, advance, erase or event) from the message at
    /// `position`, after which the partition's watermark stands at `mark`.
    fn add(&mut self, item: &Bound<'_, PyAny>, position: usize, mark: f64) -> PyResult<()> {
        self.inner.add(item_of(item)?, position, mark);
        Ok(())
    }

    /// The users the items name.
    fn user_ids<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PySet>> {
        PySet::new(py, self.inner.user_ids())
    }

    /// The batch position of the message item `index` came from.
    fn position(&self, index: usize) -> PyResult<usize> {
        self.inner
            .positions
            .get(index)
            .copied()
            .ok_or_else(|| PyValueError::new_err(format!("no item {index}")))
    }

    fn __len__(&self) -> usize {
        self.inner.items.len()
    }
}

/// How a message's headers mark it.
#[derive(Default)]
struct Marked {
    /// A relay of another kind than `route`, or a control command.
    special: bool,
    /// A routed event: judged here once its source is found new.
    routed: bool,
    replayed: bool,
}

fn marked(headers: &Bound<'_, PyAny>) -> PyResult<Marked> {
    let mut found = Marked::default();
    if headers.is_none() {
        return Ok(found);
    }
    for header in headers.try_iter()? {
        let header = header?;
        let Ok(pair) = header.cast::<PyTuple>() else {
            continue;
        };
        let name = pair.get_item(0)?;
        let Ok(name) = name.cast::<PyString>() else {
            continue;
        };
        match name.to_str()? {
            REPLAY_HEADER => found.replayed = true,
            CONTROL_HEADER => found.special = true,
            RELAY_HEADER => {
                let kind = pair.get_item(1)?;
                let route = match kind.cast::<PyBytes>() {
                    Ok(kind) => kind.as_bytes() == b"route",
                    Err(_) => kind.extract::<String>().is_ok_and(|kind| kind == "route"),
                };
                if route {
                    found.routed = true;
                } else {
                    found.special = true;
                }
            }
            _ => {}
        }
    }
    found.routed &= !found.special;
    Ok(found)
}

const REPLAY_HEADER: &str = "segstream-replay";
const CONTROL_HEADER: &str = "segstream-control";
const RELAY_HEADER: &str = "segstream-relay";

fn rejection(py: Python<'_>, rejected: decoding::Rejection) -> PyResult<Py<PyAny>> {
    Ok(Py::new(
        py,
        PyRejection {
            reason: rejected.reason.to_string(),
            detail: rejected.detail,
        },
    )?
    .into_any())
}

/// A batch's messages read into each owned partition's items (`read_messages`).
#[pyclass(module = "processors._core", name = "ReadBatch", frozen, get_all)]
struct PyReadBatch {
    /// Each owned partition that delivered messages: its `PartitionBatch`.
    partitions: Py<PyDict>,
    /// `(message, Rejection)` of each message refused, in offset order.
    rejected: Py<PyList>,
    /// `(message, user id, partition)` of each event that belongs to another partition.
    misrouted: Py<PyList>,
    /// Messages that carry an error instead of an event.
    errors: Py<PyList>,
    /// Messages without an error.
    consumed: usize,
    /// Event times of the taken events that were not replayed.
    live_times: Vec<f64>,
}

/// Read a batch's `messages` (confluent-kafka messages) in order into the items of the
/// partitions in `clocks` (their watermarks, moved as events are taken); messages of
/// other partitions are skipped.
///
/// Tracker events are decoded and judged here. A message marked as a relay (but a routed
/// event) or a control command is handed to `special(message, part, position)`, which
/// adds what it carries to `part`; for a routed event it returns whether the event is to
/// be judged (its source is new), and for any message a `Rejection` to refuse it.
#[pyfunction]
#[pyo3(signature = (messages, clocks, special, *, partition_count, max_bytes, not_after))]
fn read_messages(
    py: Python<'_>,
    messages: &Bound<'_, PyAny>,
    clocks: &Bound<'_, PyDict>,
    special: &Bound<'_, PyAny>,
    partition_count: u32,
    max_bytes: usize,
    not_after: f64,
) -> PyResult<PyReadBatch> {
    let parts = PyDict::new(py);
    let rejected = PyList::empty(py);
    let misrouted = PyList::empty(py);
    let errors = PyList::empty(py);
    let mut consumed = 0;
    let mut live_times = Vec::new();
    let mut owned: HashMap<u32, (Bound<'_, PyWatermark>, Bound<'_, PyPartitionBatch>)> =
        HashMap::new();
    for (position, message) in messages.try_iter()?.enumerate() {
        let message = message?;
        if !message.call_method0(intern!(py, "error"))?.is_none() {
            errors.append(&message)?;
            continue;
        }
        consumed += 1;
        let number: u32 = message.call_method0(intern!(py, "partition"))?.extract()?;
        let offset: i64 = message.call_method0(intern!(py, "offset"))?.extract()?;
        if let Entry::Vacant(vacant) = owned.entry(number) {
            let Some(clock) = clocks.get_item(number)? else {
                continue; // revoked while the batch was in flight
            };
            let part = Bound::new(py, PyPartitionBatch::new(number, offset))?;
            parts.set_item(number, &part)?;
            vacant.insert((clock.cast_into::<PyWatermark>()?, part));
        }
        let (clock, part) = &owned[&number];
        part.borrow_mut().inner.last = offset;
        let marks = marked(&message.call_method0(intern!(py, "headers"))?)?;
        if marks.special || marks.routed {
            let answer = special.call1((&message, part, position))?;
            if let Ok(refused) = answer.cast::<PyRejection>() {
                rejected.append((&message, refused))?;
                continue;
            }
            if marks.special || !answer.is_truthy()? {
                continue;
            }
        }
        let value = message.call_method0(intern!(py, "value"))?;
        let raw = value
            .cast::<PyBytes>()
            .map(|raw| raw.as_bytes())
            .unwrap_or(b"");
        let event = match decoding::decode(raw, max_bytes) {
            Ok(event) => event,
            Err(refused) => {
                part.borrow_mut().inner.replaying = Some(marks.replayed);
                rejected.append((&message, rejection(py, refused)?))?;
                continue;
            }
        };
        if let Some(owner) = owner_elsewhere(&event, number, partition_count) {
            misrouted.append((&message, &event.user_id, owner))?;
            continue;
        }
        let mut part = part.borrow_mut();
        part.inner.replaying = Some(marks.replayed);
        match part
            .inner
            .judge(event, &mut clock.borrow_mut().inner, position, not_after)
        {
            Verdict::Taken(moment) if !marks.replayed => live_times.push(moment),
            Verdict::Taken(_) => {}
            Verdict::Rejected(refused) => rejected.append((&message, rejection(py, refused)?))?,
        }
    }
    Ok(PyReadBatch {
        partitions: parts.unbind(),
        rejected: rejected.unbind(),
        misrouted: misrouted.unbind(),
        errors: errors.unbind(),
        consumed,
        live_times,
    })
}

/// What one partition's items produced (see `run_partition`).
#[pyclass(module = "processors._core", name = "PartitionStep", frozen, get_all)]
struct PyStep {
    users: Py<PyDict>,
    changes: Py<PyList>,
    touched: Py<PyDict>,
    vectors: Py<PyList>,
    placed: Vec<String>,
    relays: Py<PyList>,
    expired: Vec<String>,
    erased: Vec<String>,
    timers: Py<PyDict>,
    rows: Py<PyDict>,
    relabelled: Vec<String>,
    fired: usize,
    new_users: usize,
    applied: usize,
    duplicates: usize,
}

fn changes_list<'py>(py: Python<'py>, changes: Vec<Change>) -> PyResult<Bound<'py, PyList>> {
    PyList::new(py, changes.into_iter().map(|inner| PyChange { inner }))
}

fn users_dict<'py>(
    py: Python<'py>,
    users: impl IntoIterator<Item = (String, User)>,
) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (user_id, inner) in users {
        dict.set_item(user_id, PyUser { inner })?;
    }
    Ok(dict)
}

fn timers_dict<'py>(
    py: Python<'py>,
    timers: Map<String, Option<i64>>,
) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (user_id, due) in timers {
        dict.set_item(user_id, due)?;
    }
    Ok(dict)
}

/// Apply one partition's items (a `PartitionBatch`, whose marks are used unless `marks`
/// are given, or a list of items) in order to its users, firing their timers on the
/// way; the users it touched, their changes, vectors, relays and timers.
#[pyfunction]
#[pyo3(signature = (items, stored, classifier, *, dedup_before, partition_users=Vec::new(),
                    retention=f64::INFINITY, marks=None, due=Vec::new(),
                    watermark=f64::NEG_INFINITY))]
#[allow(clippy::too_many_arguments)]
fn run_partition(
    py: Python<'_>,
    items: &Bound<'_, PyAny>,
    stored: &Bound<'_, PyAny>,
    classifier: &Bound<'_, PyClassifier>,
    dedup_before: f64,
    partition_users: Vec<String>,
    retention: f64,
    marks: Option<Vec<f64>>,
    due: Vec<(i64, String)>,
    watermark: f64,
) -> PyResult<PyStep> {
    let read = items.cast::<PyPartitionBatch>().ok().map(Bound::borrow);
    let listed: Vec<Item> = match read {
        Some(_) => Vec::new(),
        None => items
            .try_iter()?
            .map(|item| item_of(&item?))
            .collect::<PyResult<_>>()?,
    };
    let (items, marks) = match &read {
        Some(part) => (
            &part.inner.items,
            marks.or_else(|| Some(part.inner.marks.clone())),
        ),
        None => (&listed, marks),
    };
    let options = Options {
        dedup_before,
        partition_users,
        retention,
        marks,
        due,
        watermark,
    };
    let mut source = PyStored { mapping: stored };
    let step = step::run_partition(items, &mut source, &classifier.get().inner, &options)?;
    let touched = PyDict::new(py);
    for (user_id, reason) in &step.touched {
        touched.set_item(user_id, reason.name())?;
    }
    Ok(PyStep {
        users: users_dict(py, step.users)?.unbind(),
        changes: changes_list(py, step.changes)?.unbind(),
        touched: touched.unbind(),
        vectors: PyList::new(py, step.vectors.into_iter().map(|inner| PyVector { inner }))?
            .unbind(),
        placed: step.placed,
        relays: PyList::new(py, step.relays.into_iter().map(PyRelay::from))?.unbind(),
        expired: step.expired,
        erased: step.erased,
        timers: timers_dict(py, step.timers)?.unbind(),
        rows: {
            let rows = PyDict::new(py);
            for (user_id, row) in &step.rows {
                rows.set_item(user_id, PyBytes::new(py, row))?;
            }
            rows.unbind()
        },
        relabelled: step.relabelled,
        fired: step.fired,
        new_users: step.new_users,
        applied: step.applied,
        duplicates: step.duplicates,
    })
}

/// Re-evaluate, re-time and re-place `users` now for `reason`; the users, their changes,
/// the timers that moved and the users whose labels moved.
#[pyfunction]
#[allow(clippy::type_complexity)]
fn relabel<'py>(
    py: Python<'py>,
    users: &Bound<'py, PyDict>,
    classifier: &Bound<'py, PyClassifier>,
    reason: &str,
    retention: f64,
) -> PyResult<(
    Bound<'py, PyDict>,
    Bound<'py, PyList>,
    Bound<'py, PyDict>,
    Vec<String>,
)> {
    let reason = Reason::parse(reason).ok_or_else(|| PyValueError::new_err("unknown reason"))?;
    let mut loaded: Map<String, User> = Map::default();
    let mut source = PyStored {
        mapping: users.as_any(),
    };
    for user_id in users.keys() {
        let user_id: String = user_id.extract()?;
        if let Some((found, _)) = source.fetch(&user_id)? {
            loaded.insert(user_id, found);
        }
    }
    let (changes, timers, relabelled) =
        step::relabel(&mut loaded, &classifier.get().inner, reason, retention);
    Ok((
        users_dict(py, loaded)?,
        changes_list(py, changes)?,
        timers_dict(py, timers)?,
        relabelled,
    ))
}

/// One message of the `features` topic holding `vectors` (see `vectors`).
#[pyfunction]
fn pack_vectors<'py>(py: Python<'py>, vectors: Vec<PyRef<'py, PyVector>>) -> Bound<'py, PyBytes> {
    let found: Vec<&Vector> = vectors.iter().map(|vector| &vector.inner).collect();
    PyBytes::new(py, &vectors::pack(&found, &feature_names()))
}

/// Names of the numeric features, in the order of feature vectors.
fn feature_names() -> Vec<&'static str> {
    numeric_features().iter().map(|&i| FEATURES[i].0).collect()
}

#[pymodule]
fn _core(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_function(wrap_pyfunction!(murmur2, module)?)?;
    module.add_function(wrap_pyfunction!(canonical_partitions, module)?)?;
    module.add_function(wrap_pyfunction!(run_partition, module)?)?;
    module.add_function(wrap_pyfunction!(relabel, module)?)?;
    module.add_function(wrap_pyfunction!(decode_events, module)?)?;
    module.add_function(wrap_pyfunction!(read_messages, module)?)?;
    module.add_function(wrap_pyfunction!(pack_vectors, module)?)?;
    module.add_class::<PyAction>()?;
    module.add_class::<PyRejection>()?;
    module.add_class::<PyUser>()?;
    module.add_class::<PyCartLine>()?;
    module.add_class::<PyChange>()?;
    module.add_class::<PyVector>()?;
    module.add_class::<PyRelay>()?;
    module.add_class::<PyClassifier>()?;
    module.add_class::<PyStep>()?;
    module.add_class::<PyWatermark>()?;
    module.add_class::<PyPartitionBatch>()?;
    module.add_class::<PyReadBatch>()?;
    module.add("FEATURE_NAMES", PyTuple::new(module.py(), feature_names())?)?;
    module.add("TEXT_FEATURES", PyTuple::new(module.py(), TEXT_FEATURES)?)?;
    module.add("RECENT_SECONDS", RECENT_SECONDS)?;
    Ok(())
}
