//! Traits across the boundary: their values as Python objects, and which to keep.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyString};
use pyo3::IntoPyObjectExt;

use crate::decoding::Projection;
use crate::traits::{Keep, TraitOp, TraitTest, TraitValue};

/// A trait's value as `None`, a `bool`, a `float` or a `str`.
pub(crate) fn to_python(py: Python<'_>, value: &TraitValue) -> PyResult<Py<PyAny>> {
    match value {
        TraitValue::Null => Ok(py.None()),
        TraitValue::Bool(flag) => flag.into_py_any(py),
        TraitValue::Number(number) => number.into_py_any(py),
        TraitValue::Text(text) => text.into_py_any(py),
    }
}

/// A Python value as a trait's value.
pub(crate) fn from_python(value: &Bound<'_, PyAny>) -> PyResult<TraitValue> {
    if value.is_none() {
        Ok(TraitValue::Null)
    } else if value.is_instance_of::<PyBool>() {
        Ok(TraitValue::Bool(value.extract()?))
    } else if value.is_instance_of::<PyInt>() || value.is_instance_of::<PyFloat>() {
        Ok(TraitValue::Number(value.extract()?))
    } else if value.is_instance_of::<PyString>() {
        Ok(TraitValue::Text(value.extract()?))
    } else {
        Err(PyTypeError::new_err(
            "a trait is None, a bool, a number or a str",
        ))
    }
}

/// `{name: value}` of traits.
pub(crate) fn traits_dict<'py, 'a>(
    py: Python<'py>,
    traits: impl Iterator<Item = (&'a String, &'a TraitValue)>,
) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (name, value) in traits {
        dict.set_item(name, to_python(py, value)?)?;
    }
    Ok(dict)
}

/// What the decoder keeps, from a `processors.events.Projection` (`(traits, events,
/// properties)`); nothing beyond the built-in features when `None`.
pub(crate) fn projection_of(value: Option<&Bound<'_, PyAny>>) -> PyResult<Projection> {
    let Some(value) = value else {
        return Ok(Projection::default());
    };
    let (traits, events, properties): (Bound<'_, PyAny>, Bound<'_, PyAny>, Vec<String>) =
        value.extract()?;
    Ok(Projection {
        traits: keep_of(&traits)?,
        events: keep_of(&events)?,
        properties,
    })
}

/// Which traits (or event names) to keep: `True` for every one, `False` for none, else
/// the names given.
fn keep_of(value: &Bound<'_, PyAny>) -> PyResult<Keep> {
    if value.is_instance_of::<PyBool>() {
        return Ok(if value.extract()? {
            Keep::All
        } else {
            Keep::Nothing
        });
    }
    let names: Vec<String> = value.extract()?;
    Ok(Keep::Named(names.into_iter().collect()))
}

/// Why `pattern` is not a regular expression the core's `matches` can use, or `None`.
#[pyfunction]
pub(crate) fn pattern_problem(pattern: &str) -> Option<String> {
    TraitTest::new(
        TraitOp::Matches,
        vec![TraitValue::Text(pattern.to_string())],
        false,
    )
    .err()
}
