//! The one module that knows Python: converts arguments and results at the boundary.
//!
//! A worker crosses it once per partition per batch ([`run_partition`]); users cross as
//! opaque [`PyUser`] objects (or their stored bytes) and come back the same way.
//!
//! Split by what it binds: [`events`] (events and decoding), [`user`] (the user, its
//! changes and vectors), [`batch`] (the partition batch and its step) and [`classifier`].

mod batch;
mod classifier;
mod commit;
mod events;
mod traits;
mod user;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::features::{CLOCK_FEATURES, TEXT_FEATURES};
use crate::partitioner;
use crate::profile::RECENT_SECONDS;
use crate::rows::RowError;

use batch::{
    change_messages, relabel, run_partition, PyPartitionBatch, PyRelay, PyResident, PyStep,
};
use classifier::PyClassifier;
use events::{decode_events, read_messages, PyAction, PyReadBatch, PyRejection, PyWatermark};
use user::{feature_names, pack_vectors, PyCartLine, PyChange, PyUser, PyVector};

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

#[pymodule]
fn _core(module: &Bound<'_, PyModule>) -> PyResult<()> {
    crate::keep_freed_memory();
    module.add_function(wrap_pyfunction!(murmur2, module)?)?;
    module.add_function(wrap_pyfunction!(canonical_partitions, module)?)?;
    module.add_function(wrap_pyfunction!(run_partition, module)?)?;
    module.add_function(wrap_pyfunction!(change_messages, module)?)?;
    module.add_function(wrap_pyfunction!(relabel, module)?)?;
    module.add_function(wrap_pyfunction!(decode_events, module)?)?;
    module.add_function(wrap_pyfunction!(read_messages, module)?)?;
    module.add_function(wrap_pyfunction!(pack_vectors, module)?)?;
    module.add_function(wrap_pyfunction!(commit::tally_moves, module)?)?;
    module.add_function(wrap_pyfunction!(commit::pack_labels, module)?)?;
    module.add_function(wrap_pyfunction!(commit::pack_activity, module)?)?;
    module.add_function(wrap_pyfunction!(traits::pattern_problem, module)?)?;
    module.add_function(wrap_pyfunction!(classifier::score_predictions, module)?)?;
    module.add_class::<PyAction>()?;
    module.add_class::<PyRejection>()?;
    module.add_class::<PyUser>()?;
    module.add_class::<PyCartLine>()?;
    module.add_class::<PyChange>()?;
    module.add_class::<PyVector>()?;
    module.add_class::<PyRelay>()?;
    module.add_class::<PyClassifier>()?;
    module.add_class::<PyStep>()?;
    module.add_class::<PyResident>()?;
    module.add_class::<PyWatermark>()?;
    module.add_class::<PyPartitionBatch>()?;
    module.add_class::<PyReadBatch>()?;
    module.add("FEATURE_NAMES", PyTuple::new(module.py(), feature_names())?)?;
    module.add("TEXT_FEATURES", PyTuple::new(module.py(), TEXT_FEATURES)?)?;
    module.add("CLOCK_FEATURES", PyTuple::new(module.py(), CLOCK_FEATURES)?)?;
    let predictions = crate::predictions::PREDICTIONS;
    module.add("PREDICTIONS", PyTuple::new(module.py(), predictions)?)?;
    let inputs = crate::predictions::INPUTS;
    module.add("PREDICTION_INPUTS", PyTuple::new(module.py(), inputs)?)?;
    let horizons = crate::predictions::HORIZON_DAYS;
    module.add(
        "PREDICTION_HORIZON_DAYS",
        PyTuple::new(module.py(), horizons)?,
    )?;
    module.add("LABEL_EVERY_DAYS", crate::examples::LABEL_EVERY_DAYS)?;
    module.add("RECENT_SECONDS", RECENT_SECONDS)?;
    Ok(())
}
