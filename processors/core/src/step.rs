//! One partition's share of a batch, in offset order: events and pipeline commands.
//!
//! Besides tracker events, a partition carries commands the pipeline sends itself:
//! a merge ("the anonymous id on this partition is `into`": its state becomes a
//! tombstone pointing there, and its aggregates travel on as an absorb keyed by
//! `into`), an absorb (another id's aggregates to add), an advance (the watermark moves:
//! due timers fire and every user of the partition is evaluated as of then) and an
//! erase (forget a user on request, and the ids linked to them). Events for a merged id
//! are forwarded to the user it points at. The step returns these as relays.
//!
//! The step is one pass over the items. Per item it catches the user up (fires their
//! timers due by then), applies it, evaluates the rules when what they read moved, and
//! marks the user's timer stale; the watermark after each item fires what came due.
//!
//! ```
//! use std::collections::HashMap;
//! use _core::events::{Event, Kind};
//! use _core::rules::RuleSet;
//! use _core::step::{run_partition, Classifier, Item, Options};
//! let rules = RuleSet::from_json(r#"{"cart_after": 1800.0, "order": [0], "segments": [{"name": "Any",
//!     "group": null, "condition": {"feature": "events_lifetime", "op": ">", "value": 0.0}}]}"#, &[]).unwrap();
//! let classifier = Classifier { rules, model: None, clustered: vec![], examples: false };
//! let items = vec![Item::Event(Event::new("anon", "m1", Kind::Page, 1.0)),
//!                  Item::Merge { anonymous_id: "anon".into(), into: "ann".into() },
//!                  Item::Event(Event::new("anon", "m2", Kind::Page, 2.0))];
//! let mut stored: HashMap<String, Vec<u8>> = HashMap::new();
//! let step = run_partition(&items, &mut stored, &classifier, &Options::default()).unwrap();
//! let relays: Vec<_> = step.relays.iter().map(|r| (r.kind, r.key.as_str())).collect();
//! assert_eq!(relays, [("absorb", "ann"), ("forward", "ann")]);
//! ```

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use indexmap::{IndexMap, IndexSet};
use rustc_hash::{FxBuildHasher, FxHashMap};

use crate::events::{Event, Kind};
use crate::examples::{labelled_on, Example, LABEL_EVERY_DAYS};
use crate::features::{numeric_features, touched_features, Reading};
use crate::placement::Placement;
use crate::profile::{CART_ABANDONMENT_AFTER, DAY};
use crate::rows::{self, RowError};
use crate::rules::RuleSet;
use crate::timing::{self, expires, Timer, NEVER};
use crate::traits::TraitValue;
use crate::user::{Change, Labels, Reason, User};

/// An insertion-ordered map keyed by user ids, hashed with FxHash (ids are not chosen
/// by an adversary who could make them collide: they arrive hashed into partitions).
pub type Map<K, V> = IndexMap<K, V, FxBuildHasher>;
/// An insertion-ordered set, hashed with FxHash.
pub type Set<K> = IndexSet<K, FxBuildHasher>;

/// What users are labelled with: the rules, the clustering model once there is one, and
/// the features users are clustered on (their vectors are refreshed as windows slide).
#[derive(Clone, Debug)]
pub struct Classifier {
    pub rules: RuleSet,
    pub model: Option<Placement>,
    pub clustered: Vec<usize>,
    /// Whether users take a point-in-time example at every UTC midnight (see
    /// [`crate::examples`]).
    pub examples: bool,
}

/// One item of a partition's share of a batch.
#[derive(Clone, Debug)]
pub enum Item {
    Event(Event),
    Merge {
        anonymous_id: String,
        into: String,
    },
    Absorb {
        source_id: String,
        into: String,
        state: Vec<u8>,
    },
    Advance {
        until: f64,
    },
    Erase {
        user_id: String,
        follow: bool,
    },
}

/// A message the pipeline sends itself on the events topic, keyed by `key`: `kind` is
/// `merge`, `absorb`, `forward` or `erase`; `position` is the index of its cause.
#[derive(Clone, Debug, PartialEq)]
pub struct Relay {
    pub kind: &'static str,
    pub key: String,
    pub body: Vec<u8>,
    pub position: usize,
}

/// A user's numeric features as of their latest evaluation; `refresh` marks a vector
/// taken only because event time moved on.
#[derive(Clone, Debug, PartialEq)]
pub struct Vector {
    pub user_id: String,
    pub as_of: f64,
    pub values: Vec<f64>,
    pub refresh: bool,
    /// The numeric values of the computed traits the rules compare with a percentile, by
    /// name: the trainer's sample gives their population percentiles.
    pub computed: Vec<(String, f64)>,
    /// The prediction inputs (see [`crate::predictions::INPUTS`]), when users are predicted
    /// on: the trainer's sample gives the predictions' population percentiles. Empty
    /// otherwise.
    pub inputs: Vec<f64>,
}

impl Vector {
    /// The vector of a user who is no more (merged into another, expired or erased):
    /// no values, so that the trainer's sample forgets them.
    pub fn gone(user_id: &str, as_of: f64) -> Vector {
        Vector {
            user_id: user_id.to_string(),
            as_of,
            values: Vec::new(),
            refresh: false,
            computed: Vec::new(),
            inputs: Vec::new(),
        }
    }
}

/// Where a step finds the users it has not loaded yet.
pub trait Stored {
    /// The stored state of `user_id`, if any, and its row as stored.
    fn fetch(&mut self, user_id: &str) -> Result<Option<(User, Vec<u8>)>, RowError>;
}

impl Stored for std::collections::HashMap<String, Vec<u8>> {
    fn fetch(&mut self, user_id: &str) -> Result<Option<(User, Vec<u8>)>, RowError> {
        match self.get(user_id) {
            None => Ok(None),
            Some(row) => Ok(Some((rows::decode(row)?, row.clone()))),
        }
    }
}

/// The step's settings besides its items.
#[derive(Clone, Debug)]
pub struct Options {
    /// Message ids of events before this are forgotten at the end.
    pub dedup_before: f64,
    /// Every user of the partition: an advance evaluates them all.
    pub partition_users: Vec<String>,
    /// How long after their last event a user expires, in seconds of the firing clock.
    pub retention: f64,
    /// The partition's firing clock after each item.
    pub marks: Option<Vec<f64>>,
    /// The partition's firing clock before the first item.
    pub opened: f64,
    /// The timers read from the store, due by `firing`.
    pub due: Vec<(i64, String)>,
    /// The partition's firing clock after the last item.
    pub firing: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            dedup_before: f64::NEG_INFINITY,
            partition_users: Vec::new(),
            retention: f64::INFINITY,
            marks: None,
            opened: f64::NEG_INFINITY,
            due: Vec::new(),
            firing: f64::NEG_INFINITY,
        }
    }
}

/// What one partition's items produced.
///
/// `touched` maps each user whose aggregates or evaluation moved to why; `vectors` are
/// their feature vectors and `placed` those the model placed. `timers` maps each user
/// whose timer moved to its new due time; `fired` counts the timers that came due.
#[derive(Debug, Default)]
pub struct Step {
    pub users: Map<String, User>,
    pub changes: Vec<Change>,
    pub touched: Map<String, Reason>,
    pub vectors: Vec<Vector>,
    pub placed: Vec<String>,
    pub relays: Vec<Relay>,
    pub expired: Vec<String>,
    pub erased: Vec<String>,
    pub timers: Map<String, Option<i64>>,
    /// The rows of the users whose state differs from what was loaded (new users
    /// included): the ones to write back.
    pub rows: Map<String, Vec<u8>>,
    /// Every user's row after the step, in the order of `users`: what each is stored as.
    pub stored: Vec<Vec<u8>>,
    /// The users whose labels (segments, cluster, versions, alias) differ from what was
    /// loaded: the ones whose labels readers must see anew.
    pub relabelled: Vec<String>,
    /// The labelled examples whose horizon the step's timers reached.
    pub examples: Vec<Example>,
    pub fired: usize,
    pub new_users: usize,
    pub applied: usize,
    pub duplicates: usize,
}

/// An entry of the stale queue: the time by which a user's due time must be recomputed.
#[derive(PartialEq)]
struct Bound(f64, String);

impl Eq for Bound {}

impl PartialOrd for Bound {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Bound {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0
            .total_cmp(&other.0)
            .then_with(|| self.1.cmp(&other.1))
    }
}

/// Apply `items` in order to the partition's users, firing their timers on the way.
///
/// A timer fires as soon as the firing clock reaches it, and before any later event of
/// its user, so where batches end never changes what a user goes through. An event
/// older than both the firing clock at its arrival and its user's latest evaluation
/// corrects what was announced: its changes carry reason `late`. When a user has had
/// no events for more than `retention` seconds, they expire. At the end, every touched
/// user gets a feature vector and, with a model, a cluster.
pub fn run_partition(
    items: &[Item],
    stored: &mut dyn Stored,
    classifier: &Classifier,
    options: &Options,
) -> Result<Step, RowError> {
    let mut pass = Pass {
        step: Step::default(),
        loaded: FxHashMap::default(),
        stored,
        classifier,
        rules: &classifier.rules,
        retention: options.retention,
        queue: BinaryHeap::new(),
        stale: Map::default(),
        stale_queue: BinaryHeap::new(),
        floors: FxHashMap::default(),
    };
    pass.load(&options.due)?;
    let mut firing = options.opened;
    for (position, item) in items.iter().enumerate() {
        match item {
            Item::Event(event) => {
                pass.catch_up(&event.user_id, event.timestamp)?;
                let behind = event.timestamp < pass.step.users[&event.user_id].as_of;
                let reason = if behind && event.timestamp < firing {
                    Reason::Late
                } else {
                    Reason::Event
                };
                pass.event(event, position, reason, behind);
            }
            Item::Merge { anonymous_id, into } => {
                pass.user(anonymous_id)?;
                pass.merge(anonymous_id, into, position);
                pass.drop_timer(anonymous_id);
            }
            Item::Absorb {
                source_id,
                into,
                state,
            } => {
                pass.catch_up(into, f64::NEG_INFINITY)?;
                pass.absorb(source_id, into, state)?;
                let as_of = pass.step.users[into].as_of;
                pass.moved(into, as_of, true, None);
            }
            Item::Advance { until } => {
                pass.settle(*until)?;
                pass.sweep(*until, &options.partition_users)?;
            }
            Item::Erase { user_id, follow } => pass.erase(user_id, *follow, position)?,
        }
        if let Some(marks) = &options.marks {
            firing = marks[position];
            pass.settle(firing)?;
        }
    }
    pass.settle(options.firing)?;
    pass.finish();
    for user in pass.step.users.values_mut() {
        user.forget_before(options.dedup_before);
        user.prune(&pass.rules.computed);
    }
    // the trainer learns a labelling midnight's examples day by day, users interleaved
    let key = |e: &Example| (e.matured, e.day);
    pass.step
        .examples
        .sort_by(|a, b| (key(a), &a.user_id).cmp(&(key(b), &b.user_id)));
    pass.vectorise();
    pass.compare();
    Ok(pass.step)
}

/// The user's timer as of their latest evaluation: [`timing::timer`], due at the next UTC
/// midnight that labels examples when that is sooner and users take them (which
/// remembers the other, see [`crate::examples::Examples::others_due`]).
fn timer_of(user: &mut User, classifier: &Classifier, retention: f64) -> Timer {
    let rules = &classifier.rules;
    let mut reading = Reading::new(&user.profile, user.as_of, rules.cart_after);
    let timer = timing::timer(&mut reading, rules, &classifier.clustered, retention);
    with_labels(user, classifier, timer)
}

/// `timer`, due at the next UTC midnight that labels examples when that is sooner (see
/// [`timer_of`]).
fn with_labels(user: &mut User, classifier: &Classifier, timer: Timer) -> Timer {
    if !classifier.examples || user.profile.last_seen.is_none() {
        return timer;
    }
    let others = timer.due;
    user.examples.others_due = Some(others);
    let next = labels_due(user);
    Timer {
        due: Some(others.map_or(next, |others| others.min(next))),
        floor: timer.floor.min(next as f64),
        ..timer
    }
}

/// The next UTC midnight that labels examples (see [`LABEL_EVERY_DAYS`]) after the user's
/// latest evaluation and latest snapshot: every midnight before it has had its labels.
fn labels_due(user: &User) -> i64 {
    labelled_on(user.examples.untaken(user.as_of)) * DAY
}

/// Take a live user's daily snapshots (see [`crate::examples`]) of the UTC midnights by
/// `moment` not taken yet, each with the predictions the model in force makes from their
/// state as of that midnight, before anything later of theirs: a timer fires at each
/// midnight that labels examples, and an event or any timer of theirs takes the days
/// since first. A user's state cannot move between their evaluations, so a quiet user's
/// days are taken as they were then. At most [`LABEL_EVERY_DAYS`] days back are taken (a
/// user's timer reaches no further back; a row written without these timers starts
/// afresh).
pub fn take_snapshots(user: &mut User, rules: &RuleSet, moment: f64, retention: f64) {
    if user.alias_of.is_some() || user.profile.last_seen.is_none() {
        return;
    }
    let last = moment.div_euclid(DAY as f64) as i64;
    let first = user
        .examples
        .untaken(user.as_of)
        .max(last - LABEL_EVERY_DAYS + 1);
    for today in first..=last {
        let midnight = (today * DAY) as f64;
        if expires(user.profile.last_seen, midnight, retention) {
            return;
        }
        let mut reading = Reading::new(&user.profile, midnight, rules.cart_after);
        let predicted = rules.predictor.predict(&mut reading);
        user.examples.take(&user.profile, today, predicted);
    }
}

/// Evaluate one user's rules; the change, if their segments moved. Evaluation never goes
/// back in time: it is as of the later of `as_of`, the user's latest event and their
/// previous evaluation.
pub fn evaluate(
    user_id: &str,
    user: &mut User,
    rules: &RuleSet,
    reason: Reason,
    as_of: Option<f64>,
) -> Option<Change> {
    evaluate_then(user_id, user, rules, reason, as_of, |reading| {
        (rules.evaluate(reading), ())
    })
    .0
}

/// [`evaluate`], and the user's timer as of then (see [`timer_of`]), read from the one
/// reading the rules were evaluated with.
fn evaluate_timed(
    user_id: &str,
    user: &mut User,
    classifier: &Classifier,
    retention: f64,
    reason: Reason,
    as_of: Option<f64>,
) -> (Option<Change>, Timer) {
    let rules = &classifier.rules;
    let clustered = &classifier.clustered;
    let (change, timer) = evaluate_then(user_id, user, rules, reason, as_of, |reading| {
        let timer = timing::timer(reading, rules, clustered, retention);
        (timer.segments.clone(), timer)
    });
    (change, with_labels(user, classifier, timer))
}

/// [`evaluate`], the segments given by `then` from the reading as of the evaluation's
/// moment (with what else it reads there).
fn evaluate_then<T>(
    user_id: &str,
    user: &mut User,
    rules: &RuleSet,
    reason: Reason,
    as_of: Option<f64>,
    then: impl FnOnce(&mut Reading) -> (Vec<String>, T),
) -> (Option<Change>, T) {
    let latest = user.profile.latest().unwrap_or(0) as f64;
    let moment = user.as_of.max(latest).max(as_of.unwrap_or(0.0));
    user.as_of = moment;
    rules.refresh(&mut user.profile, moment);
    let mut reading = Reading::new(&user.profile, moment, rules.cart_after);
    let (segments, then) = then(&mut reading);
    let change = user
        .labels
        .move_to(segments, user_id, reason, moment)
        .map(|mut change| {
            if !user.profile.cart.is_empty() {
                let (lines, changed_at) = user.profile.open_cart();
                if !lines.is_empty() {
                    change.cart = lines;
                    change.cart_changed_at = changed_at;
                }
            }
            change
        });
    (change, then)
}

/// The user's numeric features as of their latest evaluation, in vector order, with
/// the numeric values of the computed traits `rules` compare with a percentile, and the
/// prediction inputs when `predicted`.
pub fn vector_of(
    user_id: &str,
    user: &User,
    rules: Option<&RuleSet>,
    refresh: bool,
    predicted: bool,
) -> Vector {
    let mut reading = Reading::new(&user.profile, user.as_of, CART_ABANDONMENT_AFTER);
    let inputs = match predicted {
        true => crate::predictions::inputs(&mut reading).to_vec(),
        false => Vec::new(),
    };
    let mut computed = Vec::new();
    for (&index, rules) in rules
        .iter()
        .flat_map(|r| r.sampled.iter().map(move |i| (i, r)))
    {
        if let TraitValue::Number(value) = rules.computed_read(index, &mut reading) {
            let value = *value;
            let names = &rules.computed[index].names;
            computed.extend(names.iter().map(|name| (name.clone(), value)));
        }
    }
    Vector {
        user_id: user_id.to_string(),
        as_of: user.as_of,
        values: numeric_features()
            .iter()
            .map(|&index| reading.number(index))
            .collect(),
        refresh,
        computed,
        inputs,
    }
}

/// Re-evaluate, re-time and (with a model) re-place `users` now, for `reason`: what new
/// rules published for re-evaluation, or a model that re-clustered, do to every user.
/// Returns the changes, the timers that moved and the users whose labels moved.
pub fn relabel(
    users: &mut Map<String, User>,
    classifier: &Classifier,
    reason: Reason,
    retention: f64,
) -> (Vec<Change>, Map<String, Option<i64>>, Vec<String>) {
    let before: Vec<Labels> = users.values().map(|u| u.labels.clone()).collect();
    let rules = &classifier.rules;
    let mut changes = Vec::new();
    let mut timers = Map::default();
    let active = || users.iter().filter(|(_, u)| u.alias_of.is_none());
    let ids: Vec<String> = active().map(|(id, _)| id.clone()).collect();
    for user_id in &ids {
        let user = &mut users[user_id];
        changes.extend(evaluate(user_id, user, rules, reason, None));
        user.prune(&rules.computed);
    }
    for user_id in &ids {
        let user = &mut users[user_id];
        let due = timer_of(user, classifier, retention).due;
        if due != user.due {
            user.due = due;
            timers.insert(user_id.clone(), due);
        }
    }
    if let Some(model) = &classifier.model {
        for user_id in &ids {
            let user = &mut users[user_id];
            let vector = vector_of(user_id, user, Some(&classifier.rules), false, false);
            let cluster = model.assign(&vector.values);
            let as_of = user.as_of;
            changes.extend(
                user.labels
                    .place(cluster, model.version, user_id, reason, as_of),
            );
        }
    }
    let relabelled = users
        .iter()
        .zip(before)
        .filter(|((_, user), labels)| user.labels != *labels)
        .map(|((user_id, _), _)| user_id.clone())
        .collect();
    (changes, timers, relabelled)
}

/// The step's state as it passes over the items: its users and their timers.
///
/// A user's due time is recomputed lazily. An on-time event at `t` can only add
/// deadlines at least `rules.min_delay` later; an event that moves what the conditions
/// read can also bring back the moment of a part of a condition the due time left out
/// (see [`Timer::floor`]), and one counted in a computed trait the moment its tests flip.
/// Until the watermark or the user's next event reaches the earliest of those, nothing
/// of theirs can be due; it is recomputed then, or at the end of the step. Late events,
/// events that change a feature of `rules.settleable`, and events that move what the
/// conditions read of a user not timed yet in this step are recomputed at once.
struct Pass<'a> {
    step: Step,
    /// The rows and labels of the users as loaded, to tell at the end which ones changed.
    loaded: FxHashMap<String, (Vec<u8>, Labels, Option<String>)>,
    stored: &'a mut dyn Stored,
    classifier: &'a Classifier,
    rules: &'a RuleSet,
    retention: f64,
    queue: BinaryHeap<Reverse<(i64, String)>>,
    stale: Map<String, f64>,
    stale_queue: BinaryHeap<Reverse<Bound>>,
    /// The floors (see [`Timer::floor`]) of the users timed in this step.
    floors: FxHashMap<String, f64>,
}

impl Pass<'_> {
    /// The user, loaded from the store if there; `None` when the step has never heard
    /// of them.
    fn existing(&mut self, user_id: &str) -> Result<Option<&mut User>, RowError> {
        if !self.step.users.contains_key(user_id) {
            let Some((user, row)) = self.stored.fetch(user_id)? else {
                return Ok(None);
            };
            if let Some(due) = user.due {
                self.queue.push(Reverse((due, user_id.to_string())));
            }
            let labels = (row, user.labels.clone(), user.alias_of.clone());
            self.loaded.insert(user_id.to_string(), labels);
            self.step.users.insert(user_id.to_string(), user);
        }
        Ok(self.step.users.get_mut(user_id))
    }

    /// The user, new if the step has never heard of them.
    fn user(&mut self, user_id: &str) -> Result<&mut User, RowError> {
        if self.existing(user_id)?.is_none() {
            self.step.new_users += 1;
            self.step.users.insert(user_id.to_string(), User::default());
        }
        Ok(self.step.users.get_mut(user_id).expect("just inserted"))
    }

    /// Take the timers read from the store; repair any that disagree with the users.
    fn load(&mut self, due: &[(i64, String)]) -> Result<(), RowError> {
        for (moment, user_id) in due {
            match self.existing(user_id)? {
                None => {
                    self.step.timers.insert(user_id.clone(), None); // the user is gone
                }
                Some(user) if user.due != Some(*moment) => {
                    let due = user.due;
                    self.step.timers.insert(user_id.clone(), due);
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Something at `moment` changed the user: their due time must be recomputed, at
    /// once when `exact`, else by the time anything can be due. `read` is `None` when
    /// nothing the conditions read moved, else the moment by which the tests of the
    /// computed traits the event counted may flip.
    fn moved(&mut self, user_id: &str, moment: f64, exact: bool, read: Option<f64>) {
        let user = &self.step.users[user_id];
        if user.alias_of.is_some() {
            return;
        }
        let soonest = moment + self.rules.min_delay;
        let bound = match (exact, read, self.floors.get(user_id)) {
            (true, _, _) | (false, Some(_), None) => return self.reschedule(user_id),
            (false, Some(flips), Some(&floor)) => soonest.min(floor).min(flips),
            (false, None, _) => soonest.min(user.due.map_or(NEVER, |d| d as f64)),
        };
        if self.stale.get(user_id).is_some_and(|&stale| stale <= bound) {
            return;
        }
        self.stale.insert(user_id.to_string(), bound);
        self.stale_queue
            .push(Reverse(Bound(bound, user_id.to_string())));
    }

    /// The user needs no timer any more (merged away, expired or erased).
    fn drop_timer(&mut self, user_id: &str) {
        self.stale.shift_remove(user_id);
        self.floors.remove(user_id);
        self.set_due(user_id, None);
    }

    /// Fire the user's timers due by `moment` (something happens to them then); a user who
    /// expired or was erased comes back as a new user.
    fn catch_up(&mut self, user_id: &str, moment: f64) -> Result<(), RowError> {
        self.user(user_id)?;
        if self
            .stale
            .get(user_id)
            .is_some_and(|&bound| bound <= moment)
        {
            self.reschedule(user_id);
        }
        loop {
            let user = &self.step.users[user_id];
            match user.due {
                Some(due) if due as f64 <= moment && user.alias_of.is_none() => {
                    self.fire(user_id, due)
                }
                _ => break,
            }
        }
        if let Some(at) = self.step.expired.iter().position(|u| u == user_id) {
            self.step.expired.remove(at);
            let reborn = self.step.users[user_id].reborn();
            self.step.users.insert(user_id.to_string(), reborn);
        } else if let Some(at) = self.step.erased.iter().position(|u| u == user_id) {
            self.step.erased.remove(at); // back after a tombstone: a new user
            self.step.users.insert(user_id.to_string(), User::default());
        }
        self.snapshots(user_id, moment);
        Ok(())
    }

    /// Fire, in due order, every timer due by `firing`.
    fn settle(&mut self, firing: f64) -> Result<(), RowError> {
        while let Some(Reverse(Bound(bound, _))) = self.stale_queue.peek() {
            if *bound > firing {
                break;
            }
            let Some(Reverse(Bound(_, user_id))) = self.stale_queue.pop() else {
                break;
            };
            if self.stale.contains_key(&user_id) {
                self.reschedule(&user_id);
            }
        }
        while let Some(Reverse((moment, _))) = self.queue.peek() {
            if *moment as f64 > firing {
                break;
            }
            let Some(Reverse((moment, user_id))) = self.queue.pop() else {
                break;
            };
            let due = self.step.users[&user_id].due;
            if due == Some(moment) && !self.step.expired.contains(&user_id) {
                self.fire(&user_id, moment);
            }
        }
        Ok(())
    }

    /// Recompute the due time of every user whose state moved.
    fn finish(&mut self) {
        let stale: Vec<String> = self.stale.keys().cloned().collect();
        for user_id in stale {
            self.reschedule(&user_id);
        }
    }

    fn fire(&mut self, user_id: &str, moment: i64) {
        self.step.fired += 1;
        self.snapshots(user_id, moment as f64);
        let user = self.step.users.get_mut(user_id).expect("a loaded user");
        if expires(user.profile.last_seen, moment as f64, self.retention) {
            self.expire(user_id, moment as f64);
            self.drop_timer(user_id);
            return;
        }
        if self.classifier.examples && moment.rem_euclid(LABEL_EVERY_DAYS * DAY) == 0 {
            let today = moment.div_euclid(DAY);
            let matured = user.examples.mature(user_id, &user.profile, today);
            self.step.examples.extend(matured);
            let others_due = user.examples.others_due;
            if others_due.is_some_and(|due| due.is_none_or(|due| due > moment)) {
                // nothing but the labels is due: the rules and clusters are as they were
                let next = labels_due(user);
                let due = others_due.flatten().map_or(next, |others| others.min(next));
                self.set_due(user_id, Some(due));
                return;
            }
        }
        let (classifier, retention) = (self.classifier, self.retention);
        let at = Some(moment as f64);
        let (change, timer) =
            evaluate_timed(user_id, user, classifier, retention, Reason::Time, at);
        self.step.changes.extend(change);
        self.step
            .touched
            .entry(user_id.to_string())
            .or_insert(Reason::Time);
        self.time(user_id, timer);
    }

    /// Take the user's snapshots due by `moment` when users take examples (see
    /// [`take_snapshots`]).
    fn snapshots(&mut self, user_id: &str, moment: f64) {
        if self.classifier.examples {
            let user = self.step.users.get_mut(user_id).expect("a loaded user");
            take_snapshots(user, self.rules, moment, self.retention);
        }
    }

    fn reschedule(&mut self, user_id: &str) {
        self.stale.shift_remove(user_id);
        if self.step.users[user_id].alias_of.is_some()
            || self.step.expired.iter().any(|u| u == user_id)
        {
            return;
        }
        let user = self.step.users.get_mut(user_id).expect("a loaded user");
        let timer = timer_of(user, self.classifier, self.retention);
        self.time(user_id, timer);
    }

    /// Set the user's timer, their due time no longer stale.
    fn time(&mut self, user_id: &str, timer: Timer) {
        self.stale.shift_remove(user_id);
        self.floors.insert(user_id.to_string(), timer.floor);
        self.set_due(user_id, timer.due);
    }

    fn set_due(&mut self, user_id: &str, moment: Option<i64>) {
        let user = self.step.users.get_mut(user_id).expect("a loaded user");
        if user.due == moment {
            return;
        }
        user.due = moment;
        self.step.timers.insert(user_id.to_string(), moment);
        if let Some(moment) = moment {
            self.queue.push(Reverse((moment, user_id.to_string())));
        }
    }

    /// Apply one event, whose changes carry `reason`, and see to the user's timer: it is
    /// recomputed now when the event is `behind` the user's evaluation, changed a feature of
    /// the rules' `settleable`, or moved what the conditions read of a user not timed yet
    /// in this step (from the reading the rules were evaluated with); else it is stale by
    /// the time anything can be due (see [`Pass::moved`]).
    fn event(&mut self, event: &Event, position: usize, reason: Reason, behind: bool) {
        let user_id = event.user_id.as_str();
        let moment = event.timestamp;
        let rules = self.rules;
        let step = &mut self.step;
        let user = step.users.get_mut(user_id).expect("caught up");
        if let Some(alias_of) = &user.alias_of {
            step.relays.push(Relay {
                kind: "forward",
                key: alias_of.clone(),
                body: Vec::new(),
                position,
            });
            return self.moved(user_id, moment, behind, None);
        }
        if !user.first_time(event) {
            step.duplicates += 1;
            return self.moved(user_id, moment, behind, None);
        }
        step.applied += 1;
        let other = if event.kind == Kind::Identify {
            &event.anonymous_id
        } else {
            &event.previous_id
        };
        if let Some(other) = other.as_deref().filter(|o| !o.is_empty()) {
            if other != user_id && !user.linked.iter().any(|l| l == other) {
                user.linked.push(other.to_string());
                step.relays.push(Relay {
                    kind: "merge",
                    key: other.to_string(),
                    body: user_id.as_bytes().to_vec(),
                    position,
                });
            }
        }
        let started = user.profile.apply(event);
        let counted = user.profile.fold(event, &rules.computed);
        let counting = !counted.is_empty();
        let touched = touched_features(event.kind, started);
        step.touched.insert(user_id.to_string(), reason);
        let unsettled = touched & rules.settleable != 0 || rules.clocks_any(&event.traits);
        let exact = behind || unsettled;
        let read = user.profile.events == 1
            || touched & rules.reads != 0
            || rules.counts_bursts_of(event.kind)
            || (rules.reads_traits && !event.traits.is_empty())
            || (rules.reads_clocks && event.kind.is_behaviour())
            || counting;
        if !read {
            // what the rules read is as it was: their answer too
            user.as_of = user.as_of.max(user.profile.latest().unwrap_or(0) as f64);
            return self.moved(user_id, moment, exact, None);
        }
        if exact || !self.floors.contains_key(user_id) {
            let (classifier, retention) = (self.classifier, self.retention);
            let (change, timer) =
                evaluate_timed(user_id, user, classifier, retention, reason, None);
            step.changes.extend(change);
            return self.time(user_id, timer);
        }
        step.changes
            .extend(evaluate(user_id, user, rules, reason, None));
        let flips = match counting {
            true => rules.computed_flips(&user.profile, &counted, user.as_of),
            false => NEVER,
        };
        self.moved(user_id, moment, false, Some(flips));
    }

    fn merge(&mut self, anonymous_id: &str, into: &str, position: usize) {
        let step = &mut self.step;
        let user = step.users.get_mut(anonymous_id).expect("loaded");
        if user.alias_of.is_some() || anonymous_id == into {
            return; // already merged; the first link wins
        }
        let payload = rows::encode(user);
        user.alias_of = Some(into.to_string());
        let as_of = user.as_of;
        step.changes
            .extend(user.labels.clear(anonymous_id, Reason::Merge, as_of));
        step.relays.push(Relay {
            kind: "absorb",
            key: into.to_string(),
            body: payload,
            position,
        });
    }

    fn absorb(&mut self, source_id: &str, into: &str, state: &[u8]) -> Result<(), RowError> {
        let rules = self.rules;
        let step = &mut self.step;
        let user = step.users.get_mut(into).expect("caught up");
        if user.absorbed.iter().any(|a| a == source_id) {
            return Ok(());
        }
        let other = rows::decode(state)?;
        if self.classifier.examples {
            take_snapshots(user, rules, other.as_of, self.retention);
        }
        user.absorbed.push(source_id.to_string());
        user.profile.merge(&other.profile);
        user.recent.extend(other.recent);
        user.examples.absorb(&other.examples);
        user.as_of = user.as_of.max(other.as_of);
        step.touched
            .entry(into.to_string())
            .or_insert(Reason::Merge);
        step.changes
            .extend(evaluate(into, user, rules, Reason::Merge, None));
        Ok(())
    }

    /// Evaluate every user of the partition as of `until`; expire those idle too long.
    /// Their timers due by `until` have fired, so this brings every user's features and
    /// labels up to `until`.
    fn sweep(&mut self, until: f64, partition_users: &[String]) -> Result<(), RowError> {
        let mut ids: Set<String> = partition_users.iter().cloned().collect();
        ids.extend(self.step.users.keys().cloned());
        let mut everyone = Vec::new();
        for user_id in ids {
            let user = self.user(&user_id)?;
            if user.alias_of.is_none() && !self.step.erased.contains(&user_id) {
                self.snapshots(&user_id, until);
                everyone.push(user_id);
            }
        }
        for user_id in &everyone {
            let last_seen = self.step.users[user_id].profile.last_seen;
            if !self.step.expired.contains(user_id) && expires(last_seen, until, self.retention) {
                self.expire(user_id, until);
                self.drop_timer(user_id);
            }
        }
        let active: Vec<String> = everyone
            .into_iter()
            .filter(|u| !self.step.expired.contains(u))
            .collect();
        for user_id in &active {
            let user = self.step.users.get_mut(user_id).expect("loaded");
            let change = evaluate(user_id, user, self.rules, Reason::Time, Some(until));
            user.prune(&self.rules.computed);
            self.step.changes.extend(change);
        }
        for user_id in active {
            self.step.touched.entry(user_id).or_insert(Reason::Time);
        }
        Ok(())
    }

    fn erase(&mut self, user_id: &str, follow: bool, position: usize) -> Result<(), RowError> {
        let event_time = match self.existing(user_id)? {
            None => 0.0,
            Some(user) => {
                let mut relays = Vec::new();
                if let (Some(alias_of), true) = (&user.alias_of, follow) {
                    relays.push((alias_of.clone(), b"follow".to_vec()));
                }
                let others: Set<&String> = user.linked.iter().chain(&user.absorbed).collect();
                for other in others {
                    if other != user_id {
                        relays.push((other.clone(), Vec::new()));
                    }
                }
                let as_of = user.as_of;
                let change = user.labels.clear(user_id, Reason::Erased, as_of);
                let step = &mut self.step;
                step.relays
                    .extend(relays.into_iter().map(|(key, body)| Relay {
                        kind: "erase",
                        key,
                        body,
                        position,
                    }));
                step.changes.extend(change);
                self.drop_timer(user_id);
                let step = &mut self.step;
                step.expired.retain(|u| u != user_id);
                if !step.erased.iter().any(|u| u == user_id) {
                    step.erased.push(user_id.to_string());
                }
                step.touched.shift_remove(user_id);
                as_of
            }
        };
        self.step
            .changes
            .push(Change::tombstone(user_id, event_time));
        Ok(())
    }

    fn expire(&mut self, user_id: &str, moment: f64) {
        let user = self.step.users.get_mut(user_id).expect("a loaded user");
        user.as_of = user.as_of.max(moment);
        let change = user.labels.clear(user_id, Reason::Expired, moment);
        self.step.changes.extend(change);
        self.step.expired.push(user_id.to_string());
    }

    /// Which users changed, and which of them have new labels, since they were loaded.
    fn compare(&mut self) {
        let step = &mut self.step;
        step.stored.reserve(step.users.len());
        let mut scratch = Vec::with_capacity(4096);
        for (user_id, user) in &mut step.users {
            user.drop_unstored();
            scratch.clear();
            rows::encode_into(&mut scratch, user);
            debug_assert_eq!(
                rows::decode(&scratch).ok().as_ref(),
                Some(&*user),
                "{user_id}"
            );
            let before = self.loaded.get_mut(user_id);
            let labels_moved = match &before {
                None => user.labels != Labels::default() || user.alias_of.is_some(),
                Some((_, labels, alias_of)) => *labels != user.labels || *alias_of != user.alias_of,
            };
            if labels_moved {
                step.relabelled.push(user_id.clone());
            }
            let row = match before {
                Some((loaded, _, _)) if *loaded == scratch => std::mem::take(loaded),
                _ => {
                    step.rows.insert(user_id.clone(), scratch.clone());
                    scratch.clone()
                }
            };
            step.stored.push(row);
        }
    }

    /// Feature vectors of the touched users, and their clusters when there is a model; an
    /// empty vector of each user merged away, expired or erased.
    fn vectorise(&mut self) {
        let step = &mut self.step;
        let touched: Vec<(String, Reason)> = step
            .touched
            .iter()
            .filter(|(id, _)| {
                !step.expired.contains(id)
                    && !step.erased.contains(id)
                    && step.users[*id].alias_of.is_none()
            })
            .map(|(id, reason)| (id.clone(), *reason))
            .collect();
        step.vectors = touched
            .iter()
            .map(|(id, reason)| {
                let refresh = *reason == Reason::Time;
                let predicted = self.classifier.examples || self.rules.predicts;
                vector_of(id, &step.users[id], Some(self.rules), refresh, predicted)
            })
            .collect();
        let gone = step.users.iter().filter(|(id, user)| {
            let merged = user.alias_of.is_some()
                && self
                    .loaded
                    .get(*id)
                    .is_none_or(|(_, _, alias)| alias.is_none());
            merged || step.expired.contains(id) || step.erased.contains(id)
        });
        let gone: Vec<Vector> = gone
            .map(|(id, user)| Vector::gone(id, user.as_of))
            .collect();
        step.vectors.extend(gone);
        let Some(model) = &self.classifier.model else {
            return;
        };
        for reason in [Reason::Event, Reason::Late, Reason::Merge, Reason::Time] {
            for ((user_id, why), vector) in touched.iter().zip(&step.vectors) {
                if *why != reason {
                    continue;
                }
                let cluster = model.assign(&vector.values);
                let user = step.users.get_mut(user_id).expect("touched");
                let as_of = user.as_of;
                step.changes.extend(user.labels.place(
                    cluster,
                    model.version,
                    user_id,
                    reason,
                    as_of,
                ));
                step.placed.push(user_id.clone());
            }
        }
    }
}
