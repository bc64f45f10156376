//! segstream's compiled core: the pure logic of a partition step.
//!
//! Aggregation (`windows`, `profile`), feature reading (`features`), rule evaluation
//! (`rules`), predictions (`predictions`) and timing (`timing`: when does this user
//! next change) are separate
//! modules; `step` is one pass over a partition's items that uses them. None of them
//! knows Python: `bindings` converts at the boundary, once per partition per batch.

pub mod bindings;
pub mod buckets;
pub mod changes;
pub mod computed;
pub mod decoding;
pub mod events;
pub mod examples;
pub mod features;
pub mod partitioner;
pub mod patterns;
pub mod placement;
pub mod predictions;
pub mod profile;
pub mod pyrepr;
pub mod reading;
pub mod resident;
pub mod resp;
pub mod rows;
pub mod rules;
pub mod running;
pub mod step;
pub mod timing;
pub mod traits;
pub mod user;
pub mod vectors;
pub mod watermark;
pub mod windows;

/// The allocator of everything the core allocates: a step builds and drops many small
/// strings, maps and row buffers per user, which glibc's allocator served at about a
/// sixth of a worker's time (as pydantic-core does, the extension brings mimalloc).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
