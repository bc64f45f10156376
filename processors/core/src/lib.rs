//! segstream's compiled core. The logic lives in plain Rust modules that know nothing
//! of Python; `bindings` converts at the boundary, once per batch.

pub mod bindings;
pub mod partitioner;
