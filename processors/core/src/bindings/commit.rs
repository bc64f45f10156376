//! What a batch's commit counts and writes of its changes and users, in one call instead
//! of a few Python statements per change: the tally of segment and cluster moves the
//! metrics count, and the commands, packed in the Redis protocol ([`crate::resp`]), that
//! write users' labels and log their changes.

use indexmap::IndexMap;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use serde_json::json;

use super::user::{PyChange, PyUser};
use crate::pyrepr::float_repr;
use crate::resp::Commands;

/// Commands packed in the Redis protocol, and how many.
type Packed<'py> = (Bound<'py, PyBytes>, usize);

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

/// One `HSET` a user of `users` (user id to user) on their labels hash, `prefix` and the
/// user id: `segments` (a JSON list), `cluster`, `version`, `model_version`, `event_time`
/// (Python's `repr` of the float), `rules_version` and `alias_of`, empty where there is none.
#[pyfunction]
pub(crate) fn pack_labels<'py>(
    py: Python<'py>,
    prefix: &str,
    users: &Bound<'py, PyDict>,
    rules_version: &str,
) -> PyResult<Packed<'py>> {
    let mut commands = Commands::default();
    for (user_id, user) in users.iter() {
        let user_id: String = user_id.extract()?;
        let user = &user.cast::<PyUser>()?.get().inner;
        let labels = &user.labels;
        let segments = serde_json::to_string(&labels.segments).expect("a list of text");
        let model_version = labels
            .model_version
            .map(|v| v.to_string())
            .unwrap_or_default();
        commands.push(&[
            "HSET",
            &format!("{prefix}{user_id}"),
            "segments",
            &segments,
            "cluster",
            labels.cluster.as_deref().unwrap_or(""),
            "version",
            &labels.version.to_string(),
            "model_version",
            &model_version,
            "event_time",
            &float_repr(user.as_of),
            "rules_version",
            rules_version,
            "alias_of",
            user.alias_of.as_deref().unwrap_or(""),
        ]);
    }
    Ok((PyBytes::new(py, &commands.bytes), commands.count))
}

/// Where a partition's activity is kept ([`pack_activity`]): its moves' hash, and the
/// starts of its segments', clusters' and users' change logs (the name or id follows).
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
pub(crate) struct ActivityKeys {
    moves: String,
    segment_log: String,
    cluster_log: String,
    user_log: String,
}

/// The commands that count and log a partition's `changes` (tombstones aside): an
/// `HINCRBY` a move on the moves' hash (`+name`, `-name`, a cluster as `@id`), an
/// `LPUSH` of the entries `[time, user, "+" or "-", reason]` and an `LTRIM` to
/// `segment_log_length` on each segment's and cluster's log, an `LPUSH` of each user's
/// latest `user_changes_kept` changes `[time, entered, exited, cluster, previous,
/// reason, version]` (none when 0), then one `DEL` of the `expired` users' logs.
///
/// A user's log is trimmed to `user_changes_kept` only once their version is past it: it
/// holds an entry a change of theirs, each of its own version from 1 up (versions only
/// grow, across generations too), so the log of a user at version `v` holds `v` entries
/// at most, and most users' logs never need an `LTRIM`.
#[pyfunction]
pub(crate) fn pack_activity<'py>(
    py: Python<'py>,
    keys: ActivityKeys,
    changes: Vec<PyRef<'py, PyChange>>,
    expired: Vec<String>,
    user_changes_kept: usize,
    segment_log_length: usize,
) -> PyResult<Packed<'py>> {
    let mut moved: IndexMap<String, Vec<String>> = IndexMap::new();
    let mut user_logs: IndexMap<&str, (Vec<String>, i64)> = IndexMap::new();
    for change in &changes {
        let change = &change.inner;
        if change.is_tombstone {
            continue;
        }
        let (at, reason) = (change.event_time, change.reason.name());
        let mut signs: Vec<String> = change
            .entered
            .iter()
            .map(|name| format!("+{name}"))
            .collect();
        signs.extend(change.exited.iter().map(|name| format!("-{name}")));
        if change.cluster != change.previous_cluster {
            if let Some(previous) = &change.previous_cluster {
                signs.push(format!("-@{previous}"));
            }
            if let Some(cluster) = &change.cluster {
                signs.push(format!("+@{cluster}"));
            }
        }
        for sign in signs {
            let entry = json!([at, change.user_id, &sign[..1], reason]).to_string();
            moved.entry(sign).or_default().push(entry);
        }
        if user_changes_kept > 0 {
            let entry = json!([
                at,
                change.entered,
                change.exited,
                change.cluster,
                change.previous_cluster,
                reason,
                change.version
            ]);
            let (entries, version) = user_logs.entry(&change.user_id).or_default();
            entries.push(entry.to_string());
            *version = change.version;
        }
    }
    let mut commands = Commands::default();
    for (sign, entries) in &moved {
        commands.push(&["HINCRBY", &keys.moves, sign, &entries.len().to_string()]);
    }
    let mut logs: IndexMap<String, Vec<&str>> = IndexMap::new();
    for (sign, entries) in &moved {
        let key = match sign[1..].strip_prefix('@') {
            Some(cluster) => format!("{}{cluster}", keys.cluster_log),
            None => format!("{}{}", keys.segment_log, &sign[1..]),
        };
        logs.entry(key)
            .or_default()
            .extend(entries.iter().map(String::as_str));
    }
    let trimmed = segment_log_length.saturating_sub(1).to_string();
    for (key, entries) in &logs {
        let mut push = vec!["LPUSH", key];
        push.extend_from_slice(entries);
        commands.push(&push);
        commands.push(&["LTRIM", key, "0", &trimmed]);
    }
    let kept = user_changes_kept.saturating_sub(1).to_string();
    for (user_id, (entries, version)) in &user_logs {
        let key = format!("{}{user_id}", keys.user_log);
        let latest = &entries[entries.len().saturating_sub(user_changes_kept)..];
        let mut push = vec!["LPUSH", &key];
        push.extend(latest.iter().map(String::as_str));
        commands.push(&push);
        if usize::try_from(*version).map_or(true, |version| version > user_changes_kept) {
            commands.push(&["LTRIM", &key, "0", &kept]);
        }
    }
    if !expired.is_empty() {
        let mut gone = vec!["DEL".to_string()];
        gone.extend(
            expired
                .iter()
                .map(|user_id| format!("{}{user_id}", keys.user_log)),
        );
        commands.push(&gone);
    }
    Ok((PyBytes::new(py, &commands.bytes), commands.count))
}
