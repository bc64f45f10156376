//! What a batch's commit counts of its changes, in one call instead of a few Python
//! statements per change: the tally of segment and cluster moves the metrics count.

use indexmap::IndexMap;
use pyo3::prelude::*;

use super::user::PyChange;

/// A segment's or cluster's name, the direction of its moves and how many.
type Moves = Vec<(String, &'static str, u64)>;

/// How many times `changes` entered and exited each segment, and entered and left each
/// cluster: `(name, "entered" or "exited", count)` in the order first met.
#[pyfunction]
pub(crate) fn tally_moves(changes: Vec<PyRef<'_, PyChange>>) -> (Moves, Moves) {
    let mut moves: IndexMap<(&str, &'static str), u64> = IndexMap::new();
    let mut cluster_moves: IndexMap<(&str, &'static str), u64> = IndexMap::new();
    for change in &changes {
        let change = &change.inner;
        for segment in &change.entered {
            *moves.entry((segment, "entered")).or_default() += 1;
        }
        for segment in &change.exited {
            *moves.entry((segment, "exited")).or_default() += 1;
        }
        if change.cluster != change.previous_cluster {
            if let Some(cluster) = &change.cluster {
                *cluster_moves.entry((cluster, "entered")).or_default() += 1;
            }
            if let Some(cluster) = &change.previous_cluster {
                *cluster_moves.entry((cluster, "exited")).or_default() += 1;
            }
        }
    }
    let listed = |tally: IndexMap<(&str, &'static str), u64>| {
        tally
            .into_iter()
            .map(|((name, direction), count)| (name.to_string(), direction, count))
            .collect()
    };
    (listed(moves), listed(cluster_moves))
}
