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
pub mod msgpack;
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

/// mimalloc's `mi_option_purge_delay` (its `mimalloc.h`), which the sys crate leaves unnamed.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keep the memory the core frees instead of handing it back to the OS (unless
/// `MIMALLOC_PURGE_DELAY` says otherwise). A worker frees a generation of kept users at
/// once and fills it again over the next seconds; with mimalloc's default delay of one
/// second, that memory went back to the OS and was faulted in and zeroed again, about a
/// twentieth of a worker's time with 100,000 users. A worker's memory is bounded by the
/// users it keeps (`SEGSTREAM_RESIDENT_USERS`), so its peak is what it keeps.
///
/// ```
/// _core::keep_freed_memory();
/// ```
pub fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one integer option; called once, as the module loads
        unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, -1) };
    }
}
