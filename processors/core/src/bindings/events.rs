//! Events and their decoding: `Action` and `Rejection`, the decoder of raw bodies,
//! the messages of a batch read with their headers, and the partition's `Watermark`.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

use super::batch::PyPartitionBatch;
use super::traits::{from_python, projection_of, traits_dict};
use crate::decoding;

use crate::events::{Event, Kind};
use crate::pyrepr;
use crate::reading::{owner_elsewhere, Verdict};
use crate::watermark::Watermark;

/// One validated event reduced to what segmentation needs (see `processors.events`).
#[pyclass(module = "processors._core", name = "Action", frozen, eq)]
#[derive(Clone, PartialEq)]
pub(crate) struct PyAction {
    pub(crate) inner: Event,
}

/// The members of `processors.events.EventKind`, by code.
pub(crate) static EVENT_KINDS: PyOnceLock<Vec<Py<PyAny>>> = PyOnceLock::new();

pub(crate) fn event_kind(py: Python<'_>, kind: Kind) -> PyResult<Py<PyAny>> {
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
                        device=None, anonymous_id=None, previous_id=None, product=None,
                        traits=None))]
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
        traits: Option<Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let kind =
            Kind::from_code(kind).ok_or_else(|| PyValueError::new_err("unknown event kind"))?;
        let mut kept = Vec::new();
        for (name, value) in traits.iter().flat_map(|dict| dict.iter()) {
            kept.push((name.extract()?, from_python(&value)?));
        }
        kept.sort_by(|a: &(String, _), b| a.0.cmp(&b.0));
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
                traits: kept,
                name: None,
                properties: Vec::new(),
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
    /// The traits kept from the message, by name.
    #[getter]
    fn traits<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        traits_dict(py, self.inner.traits.iter().map(|(n, v)| (n, v)))
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
pub(crate) struct PyRejection {
    pub(crate) reason: String,
    pub(crate) detail: String,
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
/// why it cannot be used; one call for a batch. `keep`: what to keep beyond the built-in
/// features (a `processors.events.Projection`).
#[pyfunction]
#[pyo3(signature = (messages, max_bytes, *, keep=None))]
pub(crate) fn decode_events(
    py: Python<'_>,
    messages: Vec<Bound<'_, PyBytes>>,
    max_bytes: usize,
    keep: Option<Bound<'_, PyAny>>,
) -> PyResult<Vec<Py<PyAny>>> {
    let keep = projection_of(keep.as_ref())?;
    messages
        .iter()
        .map(
            |raw| match decoding::decode_projected(raw.as_bytes(), max_bytes, &keep) {
                Ok(inner) => Ok(Py::new(py, PyAction { inner })?.into_any()),
                Err(rejected) => Ok(Py::new(
                    py,
                    PyRejection {
                        reason: rejected.reason.to_string(),
                        detail: rejected.detail,
                    },
                )?
                .into_any()),
            },
        )
        .collect()
}

/// A partition's event-time progress: its watermark and firing clock (see `watermark`).
#[pyclass(module = "processors._core", name = "Watermark", eq)]
#[derive(Clone, PartialEq)]
pub(crate) struct PyWatermark {
    pub(crate) inner: Watermark,
}

#[pymethods]
impl PyWatermark {
    #[new]
    #[pyo3(signature = (lateness, delay, max_event_time=f64::NEG_INFINITY,
                        floor=f64::NEG_INFINITY, firing_floor=f64::NEG_INFINITY))]
    fn new(lateness: f64, delay: f64, max_event_time: f64, floor: f64, firing_floor: f64) -> Self {
        let mut inner = Watermark::new(lateness, delay);
        inner.max_event_time = max_event_time;
        inner.floor = floor;
        inner.firing_floor = firing_floor;
        PyWatermark { inner }
    }

    #[getter]
    fn lateness(&self) -> f64 {
        self.inner.lateness
    }

    #[getter]
    fn delay(&self) -> f64 {
        self.inner.delay
    }

    #[getter]
    fn max_event_time(&self) -> f64 {
        self.inner.max_event_time
    }

    #[getter]
    fn floor(&self) -> f64 {
        self.inner.floor
    }

    #[getter]
    fn firing_floor(&self) -> f64 {
        self.inner.firing_floor
    }

    /// Events older than this are late.
    #[getter]
    fn value(&self) -> f64 {
        self.inner.value()
    }

    /// Timers due by this fire.
    #[getter]
    fn firing(&self) -> f64 {
        self.inner.firing()
    }

    /// Whether an event at `moment` is on time; on-time events move both clocks.
    fn admit(&mut self, moment: f64) -> bool {
        self.inner.admit(moment)
    }

    /// Declare that no event before `moment` will come: both clocks stand there at least.
    fn advance_to(&mut self, moment: f64) {
        self.inner.advance_to(moment)
    }

    /// Let a quiet partition's clocks follow the wall clock `now`.
    fn follow_wall_clock(&mut self, now: f64) {
        self.inner.follow_wall_clock(now)
    }

    fn __repr__(&self) -> String {
        let clock = &self.inner;
        format!(
            "Watermark(lateness={}, delay={}, max_event_time={}, floor={}, firing_floor={})",
            pyrepr::float_repr(clock.lateness),
            pyrepr::float_repr(clock.delay),
            pyrepr::float_repr(clock.max_event_time),
            pyrepr::float_repr(clock.floor),
            pyrepr::float_repr(clock.firing_floor)
        )
    }
}

/// How a message's headers mark it.
#[derive(Default)]
pub(crate) struct Marked {
    /// A relay of another kind than `route`, or a control command.
    pub(crate) special: bool,
    /// A routed event: judged here once its source is found new.
    pub(crate) routed: bool,
    pub(crate) replayed: bool,
}

pub(crate) fn marked(headers: &Bound<'_, PyAny>) -> PyResult<Marked> {
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

pub(crate) const REPLAY_HEADER: &str = "segstream-replay";
pub(crate) const CONTROL_HEADER: &str = "segstream-control";
pub(crate) const RELAY_HEADER: &str = "segstream-relay";

pub(crate) fn rejection(py: Python<'_>, rejected: decoding::Rejection) -> PyResult<Py<PyAny>> {
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
pub(crate) struct PyReadBatch {
    /// Each owned partition that delivered messages: its `PartitionBatch`.
    pub(crate) partitions: Py<PyDict>,
    /// `(message, Rejection)` of each message refused, in offset order.
    pub(crate) rejected: Py<PyList>,
    /// `(message, user id, partition)` of each event that belongs to another partition.
    pub(crate) misrouted: Py<PyList>,
    /// Messages that carry an error instead of an event.
    pub(crate) errors: Py<PyList>,
    /// Messages without an error.
    pub(crate) consumed: usize,
    /// Event times of the taken events that were not replayed.
    pub(crate) live_times: Vec<f64>,
    /// How far each of them was behind its partition's newest event time as it arrived
    /// (0 for a new newest), in seconds: the delays the firing delay is weighed against.
    pub(crate) arrival_delays: Vec<f64>,
}

/// A batch's message as first looked at: what it says of itself (none for an error).
struct Seen<'py> {
    message: Bound<'py, PyAny>,
    read: Option<Read<'py>>,
}

/// A message's partition, offset, header marks and value.
struct Read<'py> {
    number: u32,
    offset: i64,
    marks: Marked,
    value: Bound<'py, PyAny>,
}

impl<'py> Seen<'py> {
    fn of(py: Python<'py>, message: Bound<'py, PyAny>) -> PyResult<Seen<'py>> {
        if !message.call_method0(intern!(py, "error"))?.is_none() {
            return Ok(Seen {
                message,
                read: None,
            });
        }
        let read = Read {
            number: message.call_method0(intern!(py, "partition"))?.extract()?,
            offset: message.call_method0(intern!(py, "offset"))?.extract()?,
            marks: marked(&message.call_method0(intern!(py, "headers"))?)?,
            value: message.call_method0(intern!(py, "value"))?,
        };
        Ok(Seen {
            message,
            read: Some(read),
        })
    }
}

/// The bytes of a message's value (none read as empty).
fn bytes_of<'a>(value: &'a Bound<'_, PyAny>) -> &'a [u8] {
    value
        .cast::<PyBytes>()
        .map(|raw| raw.as_bytes())
        .unwrap_or(b"")
}

/// Fewest plain events a batch decodes on a second thread.
const DECODED_APART: usize = 512;

/// Each plain event of `seen` (not a relay, a control command or an error) decoded, by
/// position: on two threads without the GIL, since decoding is most of reading a batch.
fn decode_plain(
    py: Python<'_>,
    seen: &[Seen<'_>],
    max_bytes: usize,
    keep: &decoding::Projection,
) -> Vec<Option<Decoded>> {
    let raws: Vec<Option<&[u8]>> = seen
        .iter()
        .map(|seen| match &seen.read {
            Some(read) if !read.marks.special && !read.marks.routed => Some(bytes_of(&read.value)),
            _ => None,
        })
        .collect();
    let decode = |raws: &[Option<&[u8]>]| -> Vec<Option<Decoded>> {
        raws.iter()
            .map(|raw| raw.map(|raw| decoding::decode_projected(raw, max_bytes, keep)))
            .collect()
    };
    py.detach(|| {
        if raws.len() < DECODED_APART {
            return decode(&raws);
        }
        let (first, second) = raws.split_at(raws.len() / 2);
        std::thread::scope(|scope| {
            let later = scope.spawn(|| decode(second));
            let mut decoded = decode(first);
            decoded.extend(later.join().expect("decoding does not panic"));
            decoded
        })
    })
}

/// A plain event decoded, or why it is refused.
type Decoded = Result<Event, decoding::Rejection>;

/// Read a batch's `messages` (confluent-kafka messages) in order into the items of the
/// partitions in `clocks` (their watermarks, moved as events are taken); messages of
/// other partitions are skipped.
///
/// Tracker events are decoded here first (a large batch's on two threads, without the
/// GIL), then judged in order. A message marked as a relay (but a routed
/// event) or a control command is handed to `special(message, part, position)`, which
/// adds what it carries to `part`; for a routed event it returns whether the event is to
/// be judged (its source is new), and for any message a `Rejection` to refuse it.
#[pyfunction]
#[pyo3(signature = (messages, clocks, special, *, partition_count, max_bytes, not_after,
                    keep=None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn read_messages(
    py: Python<'_>,
    messages: &Bound<'_, PyAny>,
    clocks: &Bound<'_, PyDict>,
    special: &Bound<'_, PyAny>,
    partition_count: u32,
    max_bytes: usize,
    not_after: f64,
    keep: Option<Bound<'_, PyAny>>,
) -> PyResult<PyReadBatch> {
    let keep = projection_of(keep.as_ref())?;
    let parts = PyDict::new(py);
    let rejected = PyList::empty(py);
    let misrouted = PyList::empty(py);
    let errors = PyList::empty(py);
    let mut consumed = 0;
    let mut live_times = Vec::new();
    let mut arrival_delays = Vec::new();
    let mut owned: HashMap<u32, (Bound<'_, PyWatermark>, Bound<'_, PyPartitionBatch>)> =
        HashMap::new();
    let seen = messages
        .try_iter()?
        .map(|message| Seen::of(py, message?))
        .collect::<PyResult<Vec<Seen<'_>>>>()?;
    let mut decoded = decode_plain(py, &seen, max_bytes, &keep);
    for (position, seen) in seen.iter().enumerate() {
        let Seen { message, read } = seen;
        let Some(Read {
            number,
            offset,
            marks,
            value,
        }) = read
        else {
            errors.append(message)?;
            continue;
        };
        let (number, offset) = (*number, *offset);
        consumed += 1;
        if let Entry::Vacant(vacant) = owned.entry(number) {
            let Some(clock) = clocks.get_item(number)? else {
                continue; // revoked while the batch was in flight
            };
            let clock = clock.cast_into::<PyWatermark>()?;
            let opened = clock.borrow().inner.firing();
            let part = Bound::new(py, PyPartitionBatch::new(number, offset, opened))?;
            parts.set_item(number, &part)?;
            vacant.insert((clock, part));
        }
        let (clock, part) = &owned[&number];
        part.borrow_mut().inner.last = offset;
        if marks.special || marks.routed {
            let answer = special.call1((message, part, position))?;
            if let Ok(refused) = answer.cast::<PyRejection>() {
                rejected.append((&message, refused))?;
                continue;
            }
            if marks.special || !answer.is_truthy()? {
                continue;
            }
        }
        let event = match decoded[position].take() {
            Some(found) => found,
            None => decoding::decode_projected(bytes_of(value), max_bytes, &keep),
        };
        let event = match event {
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
        let mut clock = clock.borrow_mut();
        let newest = clock.inner.max_event_time;
        match part
            .inner
            .judge(event, &mut clock.inner, position, not_after)
        {
            Verdict::Taken(moment) if !marks.replayed => {
                live_times.push(moment);
                arrival_delays.push((newest - moment).max(0.0));
            }
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
        arrival_delays,
    })
}
