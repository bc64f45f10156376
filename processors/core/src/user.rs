//! Everything segstream keeps for one user: aggregates, labels, identity links and the
//! message ids that make a redelivered event count once.
//!
//! ```
//! use _core::events::{Event, Kind};
//! use _core::user::User;
//! let mut user = User::default();
//! let event = Event::new("u1", "m1", Kind::Page, 100.0);
//! assert!(user.first_time(&event) && !user.first_time(&event));
//! ```

use crate::computed::Computed;
use crate::examples::Examples;
use std::collections::BTreeMap;

use blake2::digest::{Update, VariableOutput};
use blake2::Blake2bVar;

use crate::events::Event;
use crate::profile::{CartLine, Profile};

/// Why a user's segments changed; carried as `reason` on change events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    Event,
    /// An event older than the firing clock and its user's latest evaluation: it
    /// corrects what was announced.
    Late,
    Time,
    Merge,
    Expired,
    Erased,
    Rules,
    Model,
    Drift,
}

impl Reason {
    pub fn name(self) -> &'static str {
        match self {
            Reason::Event => "event",
            Reason::Late => "late",
            Reason::Time => "time",
            Reason::Merge => "merge",
            Reason::Expired => "expired",
            Reason::Erased => "erased",
            Reason::Rules => "rules",
            Reason::Model => "model",
            Reason::Drift => "drift",
        }
    }

    pub fn parse(name: &str) -> Option<Reason> {
        [
            Reason::Event,
            Reason::Late,
            Reason::Time,
            Reason::Merge,
            Reason::Expired,
            Reason::Erased,
            Reason::Rules,
            Reason::Model,
            Reason::Drift,
        ]
        .into_iter()
        .find(|reason| reason.name() == name)
    }
}

/// A user entered or left segments, or moved to another cluster; or, as a tombstone,
/// was erased. `version` grows by one with every change of the same user.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub user_id: String,
    pub entered: Vec<String>,
    pub exited: Vec<String>,
    pub segments: Vec<String>,
    pub version: i64,
    pub reason: Reason,
    pub event_time: f64,
    pub cluster: Option<String>,
    pub previous_cluster: Option<String>,
    pub model_version: Option<i64>,
    pub cart: Vec<CartLine>,
    pub cart_changed_at: Option<i64>,
    pub is_tombstone: bool,
}

impl Change {
    /// The record after a user's erasure: it removes the user from a compacted topic.
    pub fn tombstone(user_id: &str, event_time: f64) -> Change {
        Change {
            user_id: user_id.to_string(),
            entered: Vec::new(),
            exited: Vec::new(),
            segments: Vec::new(),
            version: 0,
            reason: Reason::Erased,
            event_time,
            cluster: None,
            previous_cluster: None,
            model_version: None,
            cart: Vec::new(),
            cart_changed_at: None,
            is_tombstone: true,
        }
    }
}

/// The segments and cluster one user is in now, and how many changes led here.
/// `model_version` is the snapshot the cluster was last assigned with.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Labels {
    pub segments: Vec<String>,
    pub version: i64,
    pub cluster: Option<String>,
    pub model_version: Option<i64>,
}

impl Labels {
    /// Adopt `segments`; the change, or `None` when nothing moved.
    pub fn move_to(
        &mut self,
        segments: Vec<String>,
        user_id: &str,
        reason: Reason,
        event_time: f64,
    ) -> Option<Change> {
        if segments == self.segments {
            return None;
        }
        let cluster = self.cluster.clone();
        Some(self.change(segments, cluster, user_id, reason, event_time))
    }

    /// Adopt `cluster` as placed by snapshot `model_version`; the change if it moved.
    pub fn place(
        &mut self,
        cluster: &str,
        model_version: i64,
        user_id: &str,
        reason: Reason,
        event_time: f64,
    ) -> Option<Change> {
        self.model_version = Some(model_version);
        if self.cluster.as_deref() == Some(cluster) {
            return None;
        }
        let segments = self.segments.clone();
        Some(self.change(
            segments,
            Some(cluster.to_string()),
            user_id,
            reason,
            event_time,
        ))
    }

    /// Leave every segment and the cluster (merged away, expired or erased).
    pub fn clear(&mut self, user_id: &str, reason: Reason, event_time: f64) -> Option<Change> {
        if self.segments.is_empty() && self.cluster.is_none() {
            return None;
        }
        Some(self.change(Vec::new(), None, user_id, reason, event_time))
    }

    fn change(
        &mut self,
        segments: Vec<String>,
        cluster: Option<String>,
        user_id: &str,
        reason: Reason,
        event_time: f64,
    ) -> Change {
        self.version += 1;
        let change = Change {
            user_id: user_id.to_string(),
            entered: segments
                .iter()
                .filter(|name| !self.segments.contains(name))
                .cloned()
                .collect(),
            exited: self
                .segments
                .iter()
                .filter(|name| !segments.contains(name))
                .cloned()
                .collect(),
            segments: segments.clone(),
            version: self.version,
            reason,
            event_time,
            cluster: cluster.clone(),
            previous_cluster: self.cluster.take(),
            model_version: self.model_version,
            cart: Vec::new(),
            cart_changed_at: None,
            is_tombstone: false,
        };
        self.segments = segments;
        self.cluster = cluster;
        change
    }
}

/// A user's aggregates and labels.
///
/// `as_of` is the event time they were last evaluated at. `recent` maps the digests of
/// the user's recent message ids to their event times. `linked` are the other ids this
/// user was told to be, `absorbed` those whose aggregates were added here; `alias_of` is
/// set when this id is another's. `due` is the event time of the user's pending timer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct User {
    pub profile: Profile,
    pub labels: Labels,
    pub as_of: f64,
    pub recent: BTreeMap<u64, i64>,
    pub linked: Vec<String>,
    pub absorbed: Vec<String>,
    pub alias_of: Option<String>,
    pub due: Option<i64>,
    /// Point-in-time examples waiting for their labels (see [`crate::examples`]).
    pub examples: Examples,
}

/// A 64-bit digest of a message id (BLAKE2b, 8 bytes, big-endian), for remembering it in
/// little space.
pub fn message_digest(message_id: &str) -> u64 {
    let mut hasher = Blake2bVar::new(8).expect("8 is a valid BLAKE2b output size");
    hasher.update(message_id.as_bytes());
    let mut digest = [0u8; 8];
    hasher
        .finalize_variable(&mut digest)
        .expect("the buffer has the output size");
    u64::from_be_bytes(digest)
}

impl User {
    /// Remember the event's message id; false when it was seen before.
    pub fn first_time(&mut self, event: &Event) -> bool {
        let digest = message_digest(&event.message_id);
        if self.recent.contains_key(&digest) {
            return false;
        }
        self.recent.insert(digest, event.timestamp.trunc() as i64);
        true
    }

    /// Forget message ids of events before `moment` (a duplicate of them would be late).
    pub fn forget_before(&mut self, moment: f64) {
        self.recent.retain(|_, &mut when| when as f64 >= moment);
    }

    /// Drop what no window as of the user's evaluation can see (see [`Profile::prune`]),
    /// keeping the day buckets pending examples need.
    pub fn prune(&mut self, computed: &[Computed]) {
        let dropped = self.profile.prune(self.as_of, computed);
        self.examples.keep(dropped, self.as_of);
    }

    /// Drop what the user's state row does not keep (see [`crate::rows`]): counters at
    /// zero, and the examples' day buckets while no example is pending. The user then
    /// equals what their row decodes to, as a step that loads them next finds them.
    pub fn drop_unstored(&mut self) {
        for counts in [
            &mut self.profile.minutes,
            &mut self.profile.hours,
            &mut self.profile.days,
        ] {
            counts.trim();
        }
        if self.examples.pending.is_empty() {
            self.examples = Examples::default();
        } else {
            self.examples.history.trim();
        }
    }

    /// A user who is back after expiring: nothing kept but their change version.
    pub fn reborn(&self) -> User {
        User {
            labels: Labels {
                version: self.labels.version,
                ..Labels::default()
            },
            ..User::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_pythons_blake2b() {
        // hashlib.blake2b(b"m1", digest_size=8).digest() read big-endian
        assert_eq!(message_digest("m1"), 0xd11f79d4b490b654);
    }

    #[test]
    fn labels_count_changes() {
        let mut labels = Labels {
            segments: vec!["Buyers".into()],
            version: 3,
            ..Labels::default()
        };
        let change = labels
            .move_to(vec!["Browsers".into()], "u1", Reason::Event, 60.0)
            .unwrap();
        assert_eq!(
            (change.entered, change.exited, change.version),
            (vec!["Browsers".to_string()], vec!["Buyers".to_string()], 4)
        );
        assert!(labels
            .move_to(vec!["Browsers".into()], "u1", Reason::Event, 61.0)
            .is_none());
    }
}
