//! A computed trait's running merge: the cells of the buckets its window covers, merged
//! into one, kept as events are counted and as the window slides, so that reading the
//! value does not pass over the window's cells again.
//!
//! It equals the merge of the covered cells in bucket order (what a full read computes)
//! exactly, or it is not kept: a counted cell merges in, a cell leaving the window is
//! taken out (counts, sums and tallies can; a minimum or a first value cannot, and is read
//! afresh), and a tally reaching the cap of distinct values or a sum whose cells could
//! saturate in some order of adding is read afresh too.
//!
//! ```
//! use _core::computed::Cell;
//! use _core::running::Running;
//! let cells = [Cell::Count(2), Cell::Count(3)];
//! let mut running = Running::over(0..=1, cells.iter());
//! assert_eq!(running.merged, Some(Cell::Count(5)));
//! assert!(running.take_out(&cells[0]));
//! assert_eq!(running.merged, Some(Cell::Count(3)));
//! ```

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use crate::buckets::Buckets;
use crate::computed::{Cell, MAX_DISTINCT};

/// The merge of the cells of the buckets `covered`; `None` when none holds a cell.
#[derive(Clone, Debug)]
pub struct Running {
    pub covered: RangeInclusive<i64>,
    pub merged: Option<Cell>,
    /// How many buckets with a cell are merged.
    buckets: usize,
    /// The sum of the cells' absolute sums, in millionths: below `i64::MAX`, no order of
    /// adding them saturates.
    magnitude: i128,
}

impl Running {
    /// The merge of `cells` (the buckets `covered` hold, in bucket order).
    pub fn over<'c>(
        covered: RangeInclusive<i64>,
        cells: impl Iterator<Item = &'c Cell>,
    ) -> Running {
        let mut running = Running {
            covered,
            merged: None,
            buckets: 0,
            magnitude: 0,
        };
        for cell in cells {
            running.count(cell, true);
        }
        running
    }

    /// Fold in `cell`, counted in a covered bucket (`new_bucket` when it had none).
    pub fn count(&mut self, cell: &Cell, new_bucket: bool) {
        match &mut self.merged {
            Some(merged) => merged.merge(cell),
            None => self.merged = Some(cell.clone()),
        }
        self.buckets += usize::from(new_bucket);
        self.magnitude += magnitude(cell);
    }

    /// Take out the cell of a bucket leaving the window; false when the aggregate cannot
    /// lose a cell (a minimum, a maximum, a first or last value or time).
    pub fn take_out(&mut self, cell: &Cell) -> bool {
        match (&mut self.merged, cell) {
            (Some(Cell::Count(kept)), Cell::Count(n)) => *kept -= n,
            (Some(Cell::Sum(numbers, total)), Cell::Sum(n, more)) => {
                *numbers -= n;
                *total -= more;
            }
            (Some(Cell::Tally(kept)), Cell::Tally(values)) => take_tally(kept, values),
            _ => return false,
        }
        self.buckets -= 1;
        self.magnitude -= magnitude(cell);
        if self.buckets == 0 {
            self.merged = None;
        }
        true
    }

    /// Whether it still equals a full read: a tally below the cap (a capped one depends
    /// on the order its values came in) and sums that cannot saturate.
    pub fn exact(&self) -> bool {
        match &self.merged {
            Some(Cell::Tally(values)) => values.len() < MAX_DISTINCT,
            _ => self.magnitude < i128::from(i64::MAX),
        }
    }

    /// Moved to cover `now`, a window that did not move back: the cells leaving taken
    /// out, the cells entering merged in; `None` when that cannot keep it exact.
    pub fn slide(mut self, buckets: &Buckets, now: RangeInclusive<i64>) -> Option<Running> {
        let then = self.covered.clone();
        if !self.exact() || now.start() < then.start() || now.end() < then.end() {
            return None;
        }
        if now.start() > then.start() {
            let leaving = *then.start()..=(*now.start() - 1).min(*then.end());
            for (_, cell) in buckets.range(leaving) {
                if !self.take_out(cell) {
                    return None;
                }
            }
        }
        if now.end() > then.end() {
            let entering = (*then.end() + 1).max(*now.start())..=*now.end();
            for (_, cell) in buckets.range(entering) {
                self.count(cell, true);
            }
        }
        self.covered = now;
        self.exact().then_some(self)
    }
}

/// What a cell adds to [`Running::magnitude`]: its sum's absolute value.
fn magnitude(cell: &Cell) -> i128 {
    match cell {
        Cell::Sum(_, millionths) => i128::from(*millionths).abs(),
        _ => 0,
    }
}

/// Take `values`' counts out of `kept`, dropping the values no event has any more.
fn take_tally(kept: &mut BTreeMap<String, i64>, values: &BTreeMap<String, i64>) {
    for (value, count) in values {
        if let Some(left) = kept.get_mut(value) {
            *left -= count;
            if *left <= 0 {
                kept.remove(value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(values: &[(&str, i64)]) -> Cell {
        Cell::Tally(values.iter().map(|(v, n)| (v.to_string(), *n)).collect())
    }

    #[test]
    fn sliding_equals_merging_afresh() {
        let buckets: Buckets = [
            (1, tally(&[("a", 1), ("b", 2)])),
            (3, tally(&[("b", 1)])),
            (6, tally(&[("c", 4), ("a", 1)])),
        ]
        .into_iter()
        .collect();
        let over = |range: RangeInclusive<i64>| {
            Running::over(range.clone(), buckets.range(range).map(|(_, c)| c))
        };
        let mut running = over(0..=3);
        for end in 4..=9 {
            running = running
                .slide(&buckets, end - 3..=end)
                .expect("tallies slide");
            assert_eq!(running.merged, over(end - 3..=end).merged, "{end}");
        }
        let emptied = running.slide(&buckets, 7..=10).expect("tallies slide");
        assert_eq!(emptied.merged, None);
    }

    #[test]
    fn a_minimum_cannot_lose_a_cell_and_a_window_cannot_move_back() {
        let buckets: Buckets = [(1, Cell::Least(2.0)), (2, Cell::Least(5.0))]
            .into_iter()
            .collect();
        let running = Running::over(1..=2, buckets.values());
        assert!(running.clone().slide(&buckets, 2..=3).is_none());
        assert!(running.clone().slide(&buckets, 0..=1).is_none());
        assert!(running.slide(&buckets, 1..=4).is_some());
    }

    #[test]
    fn sums_that_could_saturate_and_capped_tallies_are_read_afresh() {
        let big = Cell::Sum(1, i64::MAX / 2 + 1);
        let buckets: Buckets = [(1, big.clone()), (2, big)].into_iter().collect();
        assert!(!Running::over(1..=2, buckets.values()).exact());
        let many: BTreeMap<String, i64> = (0..MAX_DISTINCT).map(|n| (n.to_string(), 1)).collect();
        let capped = Running::over(0..=0, [Cell::Tally(many)].iter());
        assert!(!capped.exact());
    }
}
