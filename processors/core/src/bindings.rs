//! The one module that knows Python: converts arguments and results at the boundary.

use pyo3::prelude::*;

use crate::partitioner;

/// Kafka's murmur2 of `key`, sign bit cleared.
#[pyfunction]
fn murmur2(key: &[u8]) -> u32 {
    partitioner::murmur2(key)
}

/// The canonical partition of each of `user_ids` among `partitions`, in one call.
#[pyfunction]
fn canonical_partitions(user_ids: Vec<String>, partitions: u32) -> PyResult<Vec<u32>> {
    if partitions == 0 {
        return Err(pyo3::exceptions::PyValueError::new_err(
            "partitions must be at least 1",
        ));
    }
    Ok(user_ids
        .iter()
        .map(|user_id| partitioner::canonical_partition(user_id, partitions))
        .collect())
}

#[pymodule]
fn _core(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_function(wrap_pyfunction!(murmur2, module)?)?;
    module.add_function(wrap_pyfunction!(canonical_partitions, module)?)?;
    Ok(())
}
