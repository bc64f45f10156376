//! Rules in the small intermediate form Python compiles validated rule files to, and
//! their evaluation over a reading of a user's features.
//!
//! ```
//! use _core::profile::Profile;
//! use _core::features::Reading;
//! use _core::rules::RuleSet;
//! let rules = RuleSet::from_json(r#"{"cart_after": 1800.0, "order": [0], "segments": [
//!     {"name": "New", "group": null,
//!      "condition": {"feature": "orders_lifetime", "op": "==", "value": 0.0}}]}"#, &[]).unwrap();
//! let profile = Profile::default();
//! assert_eq!(rules.evaluate(&mut Reading::new(&profile, 0.0, 1800.0)), vec!["New"]);
//! ```

use serde::Deserialize;

use crate::computed::{test_of, Computed};
use crate::events::Kind;
use crate::features::{
    index_of, set_of, shrinking, FeatureSet, Reading, CLOCK_FEATURES, FEATURES, TEXT_FEATURES,
};
use crate::patterns::{Absence, Sequence};
use crate::predictions::{next_midnight, prediction_index, Predictor, INPUTS, PREDICTIONS};
use crate::profile::{Profile, RECENT_SECONDS, SESSION_GAP};
use crate::timing::{Op, NEVER};
use crate::traits::{TraitTest, TraitValue};

/// A condition over a user's features and the segments decided before it.
#[derive(Clone, Debug)]
pub enum Node {
    All(Vec<Node>),
    Any(Vec<Node>),
    Not(Box<Node>),
    Compare(Comparison),
    Burst {
        kind: Kind,
        within: f64,
        at_least: i64,
    },
    InSegment(usize),
    Trait {
        name: String,
        test: TraitTest,
    },
    /// A computed trait (by its index in [`RuleSet::computed`]) compared.
    Computed {
        index: usize,
        test: TraitTest,
    },
    Sequence(Sequence),
    Absence(Absence),
    /// A prediction (by its index in [`PREDICTIONS`]) compared with a number or a
    /// population percentile; false while the prediction is gated.
    Prediction {
        index: usize,
        op: Op,
        value: Operand,
    },
}

/// `feature op value`, the value a number, a name or a population percentile.
#[derive(Clone, Debug)]
pub struct Comparison {
    pub feature: usize,
    pub op: Op,
    pub value: Operand,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Operand {
    Number(f64),
    Text(String),
    /// A percentile threshold, by its index in [`RuleSet::percentiles`]; NaN when the model
    /// does not know it yet, which no comparison meets.
    Percentile(usize),
}

/// The rules of one file, in decision order.
#[derive(Clone, Debug)]
pub struct RuleSet {
    pub names: Vec<String>,
    groups: Vec<Option<String>>,
    conditions: Vec<Node>,
    order: Vec<usize>,
    /// Idle time after which an open cart counts as abandoned, in seconds.
    pub cart_after: f64,
    /// The percentile thresholds the rules use, by name (`p75(revenue_30d)`).
    pub percentiles: Vec<String>,
    /// Their values in the model's population, NaN while unknown.
    pub thresholds: Vec<f64>,
    /// Burst conditions: kind and window in seconds.
    pub bursts: Vec<(Kind, f64)>,
    /// The features other than clock features the rules compare.
    pub reads: FeatureSet,
    /// Features whose comparisons horizons may leave out while time cannot flip them: an
    /// event that changes one can bring back a deadline that is already close.
    pub settleable: FeatureSet,
    /// The least time after an on-time event at which it can bring a change of its own
    /// (bursts, sessions, the cart, computed traits' windows, sequences, absences).
    pub min_delay: f64,
    /// Whether any condition compares a trait, so an event that sets one is evaluated.
    pub reads_traits: bool,
    /// Whether any condition compares a clock feature (days since the last event, order
    /// or first event, `T`, cart idle minutes), so every behaviour event is evaluated: it
    /// may move one.
    pub reads_clocks: bool,
    /// Trait comparisons that time flips (`within_last`, `more_than_ago`), by trait.
    pub trait_clocks: Vec<(String, TraitTest)>,
    /// The computed traits the rules define, each definition once.
    pub computed: Vec<Computed>,
    /// Comparisons of computed traits, by index: their values move as windows slide.
    pub computed_tests: Vec<(usize, TraitTest)>,
    /// The computed traits the tests read, by index, once each.
    pub tested: Vec<usize>,
    /// The computed traits compared with a population percentile, by index: feature
    /// vectors carry their values for the trainer, and their timers follow every change of
    /// value (the store's index of values, which a moving threshold reads, stays exact).
    pub sampled: Vec<usize>,
    /// Sequence and absence conditions: time flips them.
    pub sequences: Vec<Sequence>,
    pub absences: Vec<Absence>,
    /// Whether any condition compares a prediction.
    pub predicts: bool,
    /// The model snapshot's predictions (none scored until one is set).
    pub predictor: Predictor,
}

#[derive(Deserialize)]
struct FileIr {
    cart_after: f64,
    order: Vec<usize>,
    segments: Vec<SegmentIr>,
    #[serde(default)]
    computed: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct SegmentIr {
    name: String,
    group: Option<String>,
    condition: serde_json::Value,
}

impl RuleSet {
    /// Rules from their intermediate form (see `processors.rules.RuleSet.ir`), with the
    /// known percentile thresholds.
    pub fn from_json(text: &str, known: &[(String, f64)]) -> Result<RuleSet, String> {
        let file: FileIr = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let names: Vec<String> = file.segments.iter().map(|s| s.name.clone()).collect();
        let computed = file
            .computed
            .iter()
            .map(Computed::from_json)
            .collect::<Result<Vec<_>, _>>()?;
        let mut compiling = Compiling {
            names: &names,
            known,
            percentiles: Vec::new(),
            sampled: Vec::new(),
        };
        let mut conditions = Vec::new();
        for segment in &file.segments {
            let condition = node(&segment.condition, &mut compiling)?;
            if let Some(index) = computed_beyond(&condition, computed.len()) {
                return Err(format!("unknown computed trait {index}"));
            }
            conditions.push(condition);
        }
        if file.order.len() != names.len() || file.order.iter().any(|&i| i >= names.len()) {
            return Err("order must list every segment".into());
        }
        let Compiling {
            percentiles,
            sampled,
            ..
        } = compiling;
        if sampled.iter().any(|&index| index >= computed.len()) {
            return Err("a percentile of an unknown computed trait".into());
        }
        let thresholds = percentiles
            .iter()
            .map(|name| {
                known
                    .iter()
                    .find(|(known, _)| known == name)
                    .map_or(f64::NAN, |(_, value)| *value)
            })
            .collect();
        let mut rules = RuleSet {
            names,
            groups: file.segments.iter().map(|s| s.group.clone()).collect(),
            conditions,
            order: file.order,
            cart_after: file.cart_after,
            percentiles,
            thresholds,
            sampled,
            bursts: Vec::new(),
            reads: 0,
            settleable: 0,
            min_delay: 0.0,
            reads_traits: false,
            reads_clocks: false,
            trait_clocks: Vec::new(),
            computed,
            computed_tests: Vec::new(),
            tested: Vec::new(),
            sequences: Vec::new(),
            absences: Vec::new(),
            predicts: false,
            predictor: Predictor::default(),
        };
        rules.derive();
        Ok(rules)
    }

    fn derive(&mut self) {
        let clock = set_of(&CLOCK_FEATURES);
        let mut found = Vec::new();
        for condition in &self.conditions {
            walk(condition, &mut found);
        }
        for node in found {
            match node {
                Node::Compare(comparison) if clock & (1 << comparison.feature) != 0 => {
                    self.reads_clocks = true;
                }
                Node::Compare(comparison) => {
                    self.reads |= 1 << comparison.feature;
                    if shrinking(comparison.feature)
                        && matches!(comparison.value, Operand::Number(_))
                    {
                        self.settleable |= 1 << comparison.feature;
                    }
                }
                Node::Burst { kind, within, .. } if !self.bursts.contains(&(*kind, *within)) => {
                    self.bursts.push((*kind, *within));
                }
                Node::Trait { name, test } => {
                    self.reads_traits = true;
                    if test.duration().is_some() {
                        self.trait_clocks.push((name.clone(), test.clone()));
                    }
                }
                Node::Computed { index, test } => {
                    self.computed_tests.push((*index, test.clone()));
                    if !self.tested.contains(index) {
                        self.tested.push(*index);
                    }
                }
                Node::Sequence(sequence) => self.sequences.push(sequence.clone()),
                Node::Absence(absence) => self.absences.push(absence.clone()),
                Node::Prediction { .. } => {
                    // every input moves the predictions: an event that changes one is
                    // evaluated (the day counts move with `events_lifetime`)
                    self.predicts = true;
                    for name in INPUTS.iter().chain(&["events_lifetime"]) {
                        if let Some(index) = index_of(name) {
                            self.reads |= 1 << index;
                        }
                    }
                }
                _ => {}
            }
        }
        let computed = self.computed_tests.iter().map(|(index, test)| {
            let own = self.computed[*index].delay();
            test.duration().map_or(own, |duration| own.min(duration))
        });
        let patterns = self
            .sequences
            .iter()
            .map(|s| s.window as f64)
            .chain(self.absences.iter().map(|a| a.within as f64));
        self.min_delay = self
            .bursts
            .iter()
            .map(|(_, within)| *within)
            .chain(computed)
            .chain(patterns)
            .fold(
                self.cart_after
                    .min(SESSION_GAP as f64)
                    .min((RECENT_SECONDS - 5 * 60) as f64),
                f64::min,
            );
    }

    /// Whether an event setting these traits can bring a change soon: a trait compared
    /// with `within_last` or `more_than_ago`, whose time may be any.
    pub fn clocks_any(&self, traits: &[(String, TraitValue)]) -> bool {
        traits
            .iter()
            .any(|(name, _)| self.trait_clocks.iter().any(|(clocked, _)| clocked == name))
    }

    /// Whether the rules count bursts of `kind`.
    pub fn counts_bursts_of(&self, kind: Kind) -> bool {
        self.bursts.iter().any(|(counted, _)| *counted == kind)
    }

    /// Names of the segments whose condition the reading meets, in file order. Within a
    /// priority group only the first segment that matches counts.
    pub fn evaluate(&self, reading: &mut Reading) -> Vec<String> {
        let mut matched = vec![false; self.names.len()];
        let mut taken: Vec<&str> = Vec::new();
        for &index in &self.order {
            let group = self.groups[index].as_deref();
            if group.is_some_and(|g| taken.contains(&g)) {
                continue;
            }
            if self.holds(&self.conditions[index], reading, &matched) {
                matched[index] = true;
                if let Some(group) = group {
                    taken.push(group);
                }
            }
        }
        self.names_of(&matched)
    }

    /// The names of the segments `matched` marks, in file order.
    fn names_of(&self, matched: &[bool]) -> Vec<String> {
        self.names
            .iter()
            .zip(matched)
            .filter(|(_, m)| **m)
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// The first moment after the reading's at which a segment's membership may change
    /// for a user who sends nothing, given `leaf`, the first moment each condition that
    /// is not `all`, `any`, `not` or `segment` may change its truth (early, never late).
    ///
    /// An `all` that does not hold cannot hold before every part of it that does not hold
    /// has flipped: it waits for the latest of those parts' moments (and so does an `any`
    /// that holds, for the parts that hold); otherwise it is the earliest of its parts'.
    /// A segment in a priority group also moves when a segment before it in the group
    /// does. Every leaf is given to `leaf`, none skipped. The segments the reading meets
    /// come with it, as [`RuleSet::evaluate`] gives them.
    pub fn membership_changes_at(
        &self,
        reading: &mut Reading,
        leaf: &mut dyn FnMut(&Node, &mut Reading) -> f64,
    ) -> (f64, Vec<String>) {
        let mut matched = vec![false; self.names.len()];
        let mut moments = vec![NEVER; self.names.len()];
        let mut taken: Vec<&str> = Vec::new();
        for &index in &self.order {
            let group = self.groups[index].as_deref();
            let walked = Walked {
                matched: &matched,
                moments: &moments,
            };
            let (holds, own) = self.changes_at(&self.conditions[index], reading, &walked, leaf);
            let before = self
                .order
                .iter()
                .take_while(|&&other| other != index)
                .filter(|&&other| group.is_some() && self.groups[other].as_deref() == group)
                .map(|&other| moments[other])
                .fold(NEVER, f64::min);
            moments[index] = own.min(before);
            if holds && !group.is_some_and(|g| taken.contains(&g)) {
                matched[index] = true;
                if let Some(group) = group {
                    taken.push(group);
                }
            }
        }
        let moment = moments.into_iter().fold(NEVER, f64::min);
        (moment, self.names_of(&matched))
    }

    /// Whether `node` holds, and the first moment it may flip (see
    /// [`RuleSet::membership_changes_at`]).
    fn changes_at(
        &self,
        node: &Node,
        reading: &mut Reading,
        walked: &Walked,
        leaf: &mut dyn FnMut(&Node, &mut Reading) -> f64,
    ) -> (bool, f64) {
        // an `all` waits for the latest of its parts that do not hold (an `any`, that hold)
        let mut parts_of = |parts: &[Node], waits_on: bool, reading: &mut Reading| {
            let (mut any, mut latest, mut earliest) = (false, f64::NEG_INFINITY, NEVER);
            for part in parts {
                let (holds, moment) = self.changes_at(part, reading, walked, leaf);
                earliest = earliest.min(moment);
                if holds == waits_on {
                    any = true;
                    latest = latest.max(moment);
                }
            }
            (any, if any { latest } else { earliest })
        };
        match node {
            Node::All(parts) => {
                let (failing, moment) = parts_of(parts, false, reading);
                (!failing, moment)
            }
            Node::Any(parts) => parts_of(parts, true, reading),
            Node::Not(part) => {
                let (holds, moment) = self.changes_at(part, reading, walked, leaf);
                (!holds, moment)
            }
            Node::InSegment(index) => (walked.matched[*index], walked.moments[*index]),
            _ => {
                let holds = self.holds(node, reading, walked.matched);
                (holds, leaf(node, reading))
            }
        }
    }

    fn holds(&self, node: &Node, reading: &mut Reading, matched: &[bool]) -> bool {
        match node {
            Node::All(parts) => parts.iter().all(|p| self.holds(p, reading, matched)),
            Node::Any(parts) => parts.iter().any(|p| self.holds(p, reading, matched)),
            Node::Not(part) => !self.holds(part, reading, matched),
            Node::Compare(comparison) => self.compare(comparison, reading),
            Node::Burst {
                kind,
                within,
                at_least,
            } => reading.profile.burst(*kind, *within, reading.as_of) >= *at_least,
            Node::InSegment(index) => matched[*index],
            Node::Trait { name, test } => {
                test.holds(reading.profile.traits.get(name), reading.as_of)
            }
            Node::Computed { index, test } => {
                let as_of = reading.as_of;
                test.holds(Some(self.computed_read(*index, reading)), as_of)
            }
            Node::Sequence(sequence) => {
                sequence.holds(&self.computed, reading.profile, reading.as_of)
            }
            Node::Absence(absence) => absence.holds(&self.computed, reading.profile, reading.as_of),
            Node::Prediction { index, op, value } => {
                let predicted = self.predictor.predict(reading)[*index];
                let limit = self.threshold(value).unwrap_or(f64::NAN);
                !predicted.is_nan() && !limit.is_nan() && op.holds(predicted, limit)
            }
        }
    }

    /// When a comparison of a prediction may next flip for a user who sends nothing: at
    /// the next UTC midnight, when their whole-day inputs move ([`NEVER`] while no
    /// prediction is scored).
    pub fn predictions_change_at(&self, as_of: f64) -> f64 {
        if self.predicts && self.predictor.any() {
            next_midnight(as_of)
        } else {
            NEVER
        }
    }

    /// The value of the computed trait at `index` in `reading`, computed once a reading.
    pub fn computed_read<'r>(&self, index: usize, reading: &'r mut Reading) -> &'r TraitValue {
        if reading.traits.len() <= index {
            reading
                .traits
                .resize(self.computed.len().max(index + 1), None);
        }
        let (profile, as_of) = (reading.profile, reading.as_of);
        reading.traits[index].get_or_insert_with(|| self.computed_value(index, profile, as_of))
    }

    /// The value of the computed trait at `index` for `profile` as of `as_of`.
    pub fn computed_value(&self, index: usize, profile: &Profile, as_of: f64) -> TraitValue {
        let definition = &self.computed[index];
        definition.read(profile.computed.get(&definition.key), as_of)
    }

    /// The first moment after `as_of` at which a test of one of the computed traits at
    /// `indexes` may flip with no new events, [`NEVER`] if none; read as
    /// [`Computed::flips_at`] reads it. After an event counted in those traits, this and
    /// the user's previous due time bound every flip: the other tests' did not move.
    pub fn computed_flips(&self, profile: &Profile, indexes: &[usize], as_of: f64) -> f64 {
        let mut moment = NEVER;
        for (index, test) in self
            .computed_tests
            .iter()
            .filter(|(i, _)| indexes.contains(i))
        {
            let definition = &self.computed[*index];
            let value = definition.read(profile.computed.get(&definition.key), as_of);
            moment = moment.min(self.test_flips_at(*index, test, profile, as_of, &value));
        }
        moment
    }

    /// The first moment after `as_of` at which `test` of the computed trait at `index`,
    /// now `value`, may flip with no new events (see [`Computed::flips_at`]); for a trait
    /// compared with a percentile, its value's next change (see [`RuleSet::sampled`]).
    pub fn test_flips_at(
        &self,
        index: usize,
        test: &TraitTest,
        profile: &Profile,
        as_of: f64,
        value: &TraitValue,
    ) -> f64 {
        let definition = &self.computed[index];
        let series = profile.computed.get(&definition.key);
        let moment = match self.sampled.contains(&index) {
            true => definition.changes_at(series, as_of),
            false => definition.flips_at(series, as_of, test, value),
        };
        moment.min(test.changes_at(Some(value), as_of))
    }

    /// Bring the running merges of the computed traits the rules test to the window as
    /// of `as_of` (see [`Computed::refresh`]), so that readings as of then read them.
    pub fn refresh(&self, profile: &mut Profile, as_of: f64) {
        for &index in &self.tested {
            let definition = &self.computed[index];
            if let Some(series) = profile.computed.get_mut(&definition.key) {
                definition.refresh(series, as_of);
            }
        }
    }

    fn compare(&self, comparison: &Comparison, reading: &mut Reading) -> bool {
        let op = comparison.op;
        let feature = comparison.feature;
        if TEXT_FEATURES.contains(&FEATURES[feature].0)
            != matches!(comparison.value, Operand::Text(_))
        {
            return op == Op::Ne; // a name against a number, or the other way: never equal
        }
        match &comparison.value {
            Operand::Number(limit) => op.holds(reading.number(feature), *limit),
            Operand::Percentile(index) => {
                let limit = self.thresholds[*index];
                !limit.is_nan() && op.holds(reading.number(feature), limit)
            }
            Operand::Text(name) => match op {
                Op::Eq => reading.text(feature) == name,
                Op::Ne => reading.text(feature) != name,
                _ => false,
            },
        }
    }

    /// The threshold a comparison's value stands for, NaN while unknown; `None` for a name.
    pub fn threshold(&self, value: &Operand) -> Option<f64> {
        match value {
            Operand::Number(number) => Some(*number),
            Operand::Percentile(index) => Some(self.thresholds[*index]),
            Operand::Text(_) => None,
        }
    }
}

/// The segments decided so far in a walk of the conditions: whether each is held, and
/// when it may next change.
struct Walked<'a> {
    matched: &'a [bool],
    moments: &'a [f64],
}

/// A computed trait index in `node` that is not below `count`.
fn computed_beyond(node: &Node, count: usize) -> Option<usize> {
    let mut found = Vec::new();
    walk(node, &mut found);
    found.into_iter().find_map(|n| {
        let indexes = match n {
            Node::Computed { index, .. } => vec![*index],
            Node::Sequence(sequence) => sequence.steps.clone(),
            Node::Absence(absence) => vec![absence.after, absence.missing],
            _ => Vec::new(),
        };
        indexes.into_iter().find(|&index| index >= count)
    })
}

fn walk<'a>(node: &'a Node, found: &mut Vec<&'a Node>) {
    found.push(node);
    match node {
        Node::All(parts) | Node::Any(parts) => parts.iter().for_each(|p| walk(p, found)),
        Node::Not(part) => walk(part, found),
        _ => {}
    }
}

/// What compiling conditions needs and gathers: the segment names, the known percentile
/// thresholds, the percentile names met, and the computed traits compared with one.
struct Compiling<'a> {
    names: &'a [String],
    known: &'a [(String, f64)],
    percentiles: Vec<String>,
    sampled: Vec<usize>,
}

impl Compiling<'_> {
    /// The index of the percentile threshold `name`, taken in when first met.
    fn percentile(&mut self, name: &str) -> usize {
        match self.percentiles.iter().position(|p| p == name) {
            Some(index) => index,
            None => {
                self.percentiles.push(name.to_string());
                self.percentiles.len() - 1
            }
        }
    }
}

fn node(value: &serde_json::Value, compiling: &mut Compiling) -> Result<Node, String> {
    let names = compiling.names;
    let object = value.as_object().ok_or("a condition is an object")?;
    let parts = |key: &str, compiling: &mut Compiling| -> Result<Vec<Node>, String> {
        object[key]
            .as_array()
            .ok_or(format!("{key} takes a list"))?
            .iter()
            .map(|part| node(part, compiling))
            .collect()
    };
    if object.contains_key("all") {
        return Ok(Node::All(parts("all", compiling)?));
    }
    if object.contains_key("any") {
        return Ok(Node::Any(parts("any", compiling)?));
    }
    if let Some(part) = object.get("not") {
        return Ok(Node::Not(Box::new(node(part, compiling)?)));
    }
    if let Some(segment) = object.get("segment").and_then(|s| s.as_str()) {
        let index = names
            .iter()
            .position(|name| name == segment)
            .ok_or(format!("unknown segment {segment:?}"))?;
        return Ok(Node::InSegment(index));
    }
    if let Some(kind) = object.get("burst").and_then(|k| k.as_str()) {
        return Ok(Node::Burst {
            kind: Kind::from_name(kind).ok_or(format!("unknown kind {kind:?}"))?,
            within: object["within"].as_f64().ok_or("within is seconds")?,
            at_least: object["at_least"].as_i64().ok_or("at_least is a count")?,
        });
    }
    if let Some(name) = object.get("trait").and_then(|t| t.as_str()) {
        return Ok(Node::Trait {
            name: name.to_string(),
            test: test_of(object)?,
        });
    }
    let seconds = |key: &str| object.get(key).and_then(|s| s.as_i64());
    if let Some(steps) = object.get("sequence").and_then(|s| s.as_array()) {
        return Ok(Node::Sequence(Sequence {
            steps: steps
                .iter()
                .map(|step| step.as_u64().map(|i| i as usize))
                .collect::<Option<_>>()
                .ok_or("a sequence's steps are computed traits")?,
            within: seconds("within").ok_or("within is seconds")?,
            window: seconds("window").ok_or("window is seconds")?,
        }));
    }
    if let Some(after) = object.get("after").and_then(|a| a.as_u64()) {
        return Ok(Node::Absence(Absence {
            after: after as usize,
            missing: object
                .get("missing")
                .and_then(|m| m.as_u64())
                .ok_or("missing is a computed trait")? as usize,
            within: seconds("within").ok_or("within is seconds")?,
            lasting: seconds("for"),
        }));
    }
    if let Some(index) = object.get("computed").and_then(|c| c.as_u64()) {
        let index = index as usize;
        let Some(name) = object.get("percentile").and_then(|p| p.as_str()) else {
            let test = test_of(object)?;
            return Ok(Node::Computed { index, test });
        };
        // compared with a population percentile: a number once the model knows it,
        // never true before
        compiling.percentile(name);
        if !compiling.sampled.contains(&index) {
            compiling.sampled.push(index);
        }
        let known = compiling.known.iter().find(|(known, _)| known == name);
        let Some((_, threshold)) = known else {
            return Ok(Node::Any(Vec::new()));
        };
        let mut compared = object.clone();
        compared.insert("value".into(), serde_json::json!(threshold));
        let test = test_of(&compared)?;
        return Ok(Node::Computed { index, test });
    }
    if let Some(name) = object.get("prediction").and_then(|p| p.as_str()) {
        let index = prediction_index(name).ok_or(format!(
            "unknown prediction {name:?} (known: {})",
            PREDICTIONS.join(", ")
        ))?;
        let op = object["op"]
            .as_str()
            .and_then(Op::parse)
            .ok_or("unknown op")?;
        let value = match object.get("percentile").and_then(|p| p.as_str()) {
            Some(percentile) => Operand::Percentile(compiling.percentile(percentile)),
            None => Operand::Number(object["value"].as_f64().ok_or("value is a number")?),
        };
        return Ok(Node::Prediction { index, op, value });
    }
    let feature = object
        .get("feature")
        .and_then(|f| f.as_str())
        .ok_or("a condition has all, any, not, segment, burst, prediction or feature")?;
    let op = object["op"]
        .as_str()
        .and_then(Op::parse)
        .ok_or("unknown op")?;
    let value = if let Some(text) = object.get("text").and_then(|t| t.as_str()) {
        Operand::Text(text.to_string())
    } else if let Some(name) = object.get("percentile").and_then(|p| p.as_str()) {
        Operand::Percentile(compiling.percentile(name))
    } else {
        Operand::Number(object["value"].as_f64().ok_or("value is a number")?)
    };
    Ok(Node::Compare(Comparison {
        feature: index_of(feature).ok_or(format!("unknown feature {feature:?}"))?,
        op,
        value,
    }))
}
