//! One partition's batch: the items and stored rows that go in, `run_partition`, the
//! `PartitionStep` that comes out (users, changes, relays, timers), and `relabel`.

use std::borrow::Cow;
use std::sync::{Arc, Mutex, PoisonError};

use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PySet, PyString};
use rustc_hash::FxHashMap;

use super::classifier::PyClassifier;
use super::events::PyAction;
use super::user::{PyChange, PyUser, PyVector};
use crate::changes;
use crate::reading::PartitionItems;
use crate::resident::Resident;
use crate::rows::{self, RowError};
use crate::step::{self, Item, Map, Options, Relay, Stored};
use crate::user::{Change, Reason, User};

/// A message the pipeline sends itself on the events topic (see `processors.wire`).
#[pyclass(module = "processors._core", name = "Relay", frozen, eq, get_all)]
#[derive(Clone, PartialEq)]
pub(crate) struct PyRelay {
    pub(crate) kind: String,
    pub(crate) key: String,
    pub(crate) body: Vec<u8>,
    pub(crate) position: i64,
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

/// Stored users in a Python mapping of ids to `User`s or their rows.
pub(crate) struct PyStored<'a, 'py> {
    pub(crate) mapping: &'a Bound<'py, PyAny>,
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
                let user = User::clone(&user.get().inner);
                let row = rows::encode(&user);
                Ok(Some((user, row)))
            }
            Err(_) => Err(RowError("a stored user is a User or its row".into())),
        }
    }
}

pub(crate) fn item_of(item: &Bound<'_, PyAny>) -> PyResult<Item> {
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

/// One partition's items of a batch, as `read_messages` read them (see `reading`).
#[pyclass(module = "processors._core", name = "PartitionBatch")]
pub(crate) struct PyPartitionBatch {
    pub(crate) inner: PartitionItems,
}

#[pymethods]
impl PyPartitionBatch {
    /// An empty share of partition `number` whose last message is at `last`, its firing
    /// clock at `opened` before the first item.
    #[new]
    #[pyo3(signature = (number, last, opened=f64::NEG_INFINITY))]
    pub(crate) fn new(number: u32, last: i64, opened: f64) -> Self {
        PyPartitionBatch {
            inner: PartitionItems::new(number, last, opened),
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
    /// `position`, after which the partition's firing clock stands at `mark`.
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

/// What one partition's items produced (see `run_partition`).
#[pyclass(module = "processors._core", name = "PartitionStep", frozen, get_all)]
pub(crate) struct PyStep {
    pub(crate) users: Py<PyDict>,
    pub(crate) changes: Py<PyList>,
    /// The changes' messages on the change topic, when asked for (see `change_messages`).
    pub(crate) messages: Py<PyList>,
    pub(crate) touched: Py<PyDict>,
    pub(crate) vectors: Py<PyList>,
    pub(crate) placed: Vec<String>,
    pub(crate) relays: Py<PyList>,
    pub(crate) expired: Vec<String>,
    pub(crate) erased: Vec<String>,
    pub(crate) timers: Py<PyDict>,
    pub(crate) rows: Py<PyDict>,
    pub(crate) relabelled: Vec<String>,
    /// The labelled examples, packed as one message of the examples topic (empty when
    /// none), and how many.
    pub(crate) examples: Py<PyBytes>,
    pub(crate) example_count: usize,
    pub(crate) fired: usize,
    pub(crate) new_users: usize,
    pub(crate) applied: usize,
    pub(crate) duplicates: usize,
}

pub(crate) fn changes_list<'py>(
    py: Python<'py>,
    changes: Vec<Change>,
) -> PyResult<Bound<'py, PyList>> {
    PyList::new(py, changes.into_iter().map(|inner| PyChange { inner }))
}

/// Each of `changes` as a message on the change topic: its key (the user's id) and its
/// JSON document, none for a tombstone.
#[pyfunction]
pub(crate) fn change_messages<'py>(
    py: Python<'py>,
    changes: Vec<PyRef<'py, PyChange>>,
    processed_at: f64,
    rules_version: &str,
) -> PyResult<Bound<'py, PyList>> {
    let changes = changes.iter().map(|change| &change.inner);
    let messages = changes::messages(changes, processed_at, rules_version)
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    messages_list(py, messages)
}

fn messages_list<'py>(
    py: Python<'py>,
    messages: Vec<changes::Message>,
) -> PyResult<Bound<'py, PyList>> {
    let items = messages.into_iter().map(|(key, value)| {
        (
            PyBytes::new(py, key.as_bytes()),
            value.map(|json| PyBytes::new(py, &json)),
        )
    });
    PyList::new(py, items)
}

pub(crate) fn users_dict<'py>(
    py: Python<'py>,
    users: impl IntoIterator<Item = (String, Arc<User>)>,
) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (user_id, inner) in users {
        dict.set_item(user_id, PyUser { inner })?;
    }
    Ok(dict)
}

/// Users a worker keeps decoded between the steps of one partition, each with the row it
/// was written as (see [`crate::resident`]): `run_partition(..., resident=...)` takes a
/// user from it when the stored row is still that row, and keeps the users it stepped.
#[pyclass(module = "processors._core", name = "Resident", frozen)]
pub(crate) struct PyResident {
    inner: Mutex<Resident>,
}

impl PyResident {
    fn lock(&self) -> std::sync::MutexGuard<'_, Resident> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[pymethods]
impl PyResident {
    #[new]
    fn new(capacity: usize) -> Self {
        PyResident {
            inner: Mutex::new(Resident::new(capacity)),
        }
    }

    /// Keep at most `capacity` users from now on.
    fn set_capacity(&self, capacity: usize) {
        self.lock().set_capacity(capacity);
    }

    fn __len__(&self) -> usize {
        self.lock().len()
    }

    /// The users steps took as kept, and the rows they decoded because no user was kept
    /// with them, since the last call.
    fn take_counts(&self) -> (u64, u64) {
        self.lock().take_counts()
    }
}

/// The step's users, shared with `resident` (each kept with its row as stored, save the
/// ones expired or erased) when there is one.
fn shared_users(
    step: &mut step::Step,
    resident: Option<&mut Resident>,
) -> Vec<(String, Arc<User>)> {
    let users: Vec<(String, Arc<User>)> = std::mem::take(&mut step.users)
        .into_iter()
        .map(|(user_id, user)| (user_id, Arc::new(user)))
        .collect();
    let stored = std::mem::take(&mut step.stored);
    if let Some(resident) = resident {
        let gone =
            |user_id: &String| step.expired.contains(user_id) || step.erased.contains(user_id);
        for ((user_id, user), row) in users.iter().zip(stored) {
            if !gone(user_id) {
                resident.keep(user_id.clone(), row, Arc::clone(user));
            }
        }
    }
    users
}

pub(crate) fn timers_dict<'py>(
    py: Python<'py>,
    timers: Map<String, Option<i64>>,
) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (user_id, due) in timers {
        dict.set_item(user_id, due)?;
    }
    Ok(dict)
}

/// Stored rows read out of a Python dict of ids to `User`s or their rows, for a step that
/// runs without the GIL: the rows borrowed, a `User` encoded; with the partition's
/// resident users, a row is decoded only when no user is kept with it.
struct RowsRead<'a, 'r> {
    rows: FxHashMap<&'a str, Cow<'a, [u8]>>,
    resident: Option<&'r mut Resident>,
}

impl<'a> RowsRead<'a, '_> {
    fn of(entries: &'a [(Bound<'_, PyAny>, Bound<'_, PyAny>)]) -> PyResult<Self> {
        let mut rows = FxHashMap::default();
        rows.reserve(entries.len());
        for (user_id, found) in entries {
            let row = match found.cast::<PyBytes>() {
                Ok(row) => Cow::Borrowed(row.as_bytes()),
                Err(_) => match found.cast::<PyUser>() {
                    Ok(user) => Cow::Owned(rows::encode(&user.get().inner)),
                    Err(_) => {
                        return Err(RowError("a stored user is a User or its row".into()).into())
                    }
                },
            };
            rows.insert(user_id.cast::<PyString>()?.to_str()?, row);
        }
        Ok(RowsRead {
            rows,
            resident: None,
        })
    }
}

impl Stored for RowsRead<'_, '_> {
    fn fetch(&mut self, user_id: &str) -> Result<Option<(User, Vec<u8>)>, RowError> {
        let Some(row) = self.rows.get(user_id) else {
            return Ok(None);
        };
        let user = match self.resident.as_deref_mut() {
            Some(resident) => resident.take(user_id, row)?,
            None => rows::decode(row)?,
        };
        Ok(Some((user, row.to_vec())))
    }
}

/// Apply one partition's items (a `PartitionBatch`, whose marks and opening firing clock
/// are used unless `marks` are given, or a list of items) in order to its users, firing
/// their timers on the way; the users it touched, their changes, vectors, relays and
/// timers. With `stored` a dict (of ids to rows or `User`s), the step runs without the
/// GIL, and takes and keeps users in `resident` (the partition's, see `Resident`) when
/// given. With `published` (processed at, rules version), the step also makes its
/// changes' messages on the change topic.
#[pyfunction]
#[pyo3(signature = (items, stored, classifier, *, dedup_before, partition_users=Vec::new(),
                    retention=f64::INFINITY, marks=None, opened=f64::NEG_INFINITY,
                    due=Vec::new(), firing=f64::NEG_INFINITY, published=None, resident=None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_partition(
    py: Python<'_>,
    items: &Bound<'_, PyAny>,
    stored: &Bound<'_, PyAny>,
    classifier: &Bound<'_, PyClassifier>,
    dedup_before: f64,
    partition_users: Vec<String>,
    retention: f64,
    marks: Option<Vec<f64>>,
    opened: f64,
    due: Vec<(i64, String)>,
    firing: f64,
    published: Option<(f64, String)>,
    resident: Option<&Bound<'_, PyResident>>,
) -> PyResult<PyStep> {
    let read = items.cast::<PyPartitionBatch>().ok().map(Bound::borrow);
    let listed: Vec<Item> = match read {
        Some(_) => Vec::new(),
        None => items
            .try_iter()?
            .map(|item| item_of(&item?))
            .collect::<PyResult<_>>()?,
    };
    let (items, marks, opened) = match &read {
        Some(part) if marks.is_none() => (
            &part.inner.items,
            Some(part.inner.marks.clone()),
            part.inner.opened,
        ),
        Some(part) => (&part.inner.items, marks, opened),
        None => (&listed, marks, opened),
    };
    let options = Options {
        dedup_before,
        partition_users,
        retention,
        marks,
        opened,
        due,
        firing,
    };
    let classifier = &classifier.get().inner;
    let messages_of = |step: &step::Step| match &published {
        None => Ok(Vec::new()),
        Some((processed_at, rules_version)) => {
            changes::messages(&step.changes, *processed_at, rules_version)
                .map_err(|e| PyValueError::new_err(e.to_string()))
        }
    };
    let resident = resident.map(Bound::get);
    let (step, messages, users) = match stored.cast::<PyDict>() {
        Ok(stored) => {
            // the rows read out first, so that the step runs while other threads run Python
            // (a worker steps its partitions two at a time)
            let entries: Vec<(Bound<'_, PyAny>, Bound<'_, PyAny>)> = stored.iter().collect();
            let rows = RowsRead::of(&entries)?;
            py.detach(|| {
                let mut kept = resident.map(PyResident::lock);
                let mut rows = RowsRead {
                    resident: kept.as_deref_mut(),
                    ..rows
                };
                let mut step = step::run_partition(items, &mut rows, classifier, &options)?;
                let messages = messages_of(&step)?;
                let users = shared_users(&mut step, rows.resident.take());
                PyResult::Ok((step, messages, users))
            })?
        }
        Err(_) => {
            let mut source = PyStored { mapping: stored };
            let mut step = step::run_partition(items, &mut source, classifier, &options)?;
            let messages = messages_of(&step)?;
            let users = shared_users(&mut step, None);
            (step, messages, users)
        }
    };
    let packed_examples = match step.examples.is_empty() {
        true => Vec::new(),
        false => crate::examples::pack(&step.examples),
    };
    let touched = PyDict::new(py);
    for (user_id, reason) in &step.touched {
        touched.set_item(user_id, reason.name())?;
    }
    Ok(PyStep {
        users: users_dict(py, users)?.unbind(),
        changes: changes_list(py, step.changes)?.unbind(),
        messages: messages_list(py, messages)?.unbind(),
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
        examples: PyBytes::new(py, &packed_examples).unbind(),
        example_count: step.examples.len(),
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
pub(crate) fn relabel<'py>(
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
        users_dict(
            py,
            loaded.into_iter().map(|(id, user)| (id, Arc::new(user))),
        )?,
        changes_list(py, changes)?,
        timers_dict(py, timers)?,
        relabelled,
    ))
}
