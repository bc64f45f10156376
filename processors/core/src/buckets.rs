//! A computed trait's cells by bucket, in one sorted vector: a user holds a few cells per
//! trait, read in order and by range at every evaluation, decoded and dropped with every
//! state row, so one contiguous allocation serves them better than a tree of nodes.
//!
//! ```
//! use _core::buckets::Buckets;
//! use _core::computed::Cell;
//! let mut buckets = Buckets::new();
//! buckets.insert(20, Cell::Count(2));
//! buckets.insert(10, Cell::Count(1));
//! let found: Vec<i64> = buckets.range(11..=20).map(|(bucket, _)| *bucket).collect();
//! assert_eq!(found, [20]);
//! assert_eq!(buckets.split_off(&15).len(), 1);
//! ```

use std::ops::{Bound, RangeBounds};

use crate::computed::Cell;

/// Cells keyed by bucket, in bucket order, one per bucket.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Buckets(Vec<(i64, Cell)>);

impl Buckets {
    pub const fn new() -> Buckets {
        Buckets(Vec::new())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get_mut(&mut self, bucket: &i64) -> Option<&mut Cell> {
        let found = self.0.binary_search_by_key(bucket, |(b, _)| *b).ok()?;
        Some(&mut self.0[found].1)
    }

    /// Put `cell` in `bucket`, in place of the cell there if any (which comes back).
    pub fn insert(&mut self, bucket: i64, cell: Cell) -> Option<Cell> {
        match self.0.binary_search_by_key(&bucket, |(b, _)| *b) {
            Ok(found) => Some(std::mem::replace(&mut self.0[found].1, cell)),
            Err(at) => {
                self.0.insert(at, (bucket, cell));
                None
            }
        }
    }

    /// The buckets in `range`, in order.
    pub fn range<R: RangeBounds<i64>>(
        &self,
        range: R,
    ) -> impl DoubleEndedIterator<Item = (&i64, &Cell)> {
        let before = |limit: &i64, inclusive: bool| {
            self.0
                .partition_point(|(b, _)| b < limit || (inclusive && b == limit))
        };
        let start = match range.start_bound() {
            Bound::Included(first) => before(first, false),
            Bound::Excluded(first) => before(first, true),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(last) => before(last, true),
            Bound::Excluded(last) => before(last, false),
            Bound::Unbounded => self.0.len(),
        };
        self.0[start..end.max(start)].iter().map(|(b, c)| (b, c))
    }

    /// Move the buckets from `at` on into a new `Buckets`, keeping those before it.
    pub fn split_off(&mut self, at: &i64) -> Buckets {
        let from = self.0.partition_point(|(b, _)| b < at);
        Buckets(self.0.split_off(from))
    }

    pub fn first_key_value(&self) -> Option<(&i64, &Cell)> {
        self.0.first().map(|(b, c)| (b, c))
    }

    pub fn values(&self) -> impl DoubleEndedIterator<Item = &Cell> {
        self.0.iter().map(|(_, c)| c)
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&i64, &Cell)> {
        self.0.iter().map(|(b, c)| (b, c))
    }
}

impl FromIterator<(i64, Cell)> for Buckets {
    /// The cells in bucket order; of two in one bucket, the later.
    fn from_iter<I: IntoIterator<Item = (i64, Cell)>>(cells: I) -> Buckets {
        let mut buckets = Buckets::new();
        for (bucket, cell) in cells {
            buckets.insert(bucket, cell);
        }
        buckets
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_read_as_a_sorted_map_reads_them() {
        let buckets: Buckets = [5, 1, 3, 9]
            .map(|b| (b, Cell::Count(b)))
            .into_iter()
            .collect();
        let keys =
            |found: Vec<(&i64, &Cell)>| found.into_iter().map(|(b, _)| *b).collect::<Vec<_>>();
        assert_eq!(keys(buckets.range(3..=5).collect()), [3, 5]);
        assert_eq!(keys(buckets.range(3..5).collect()), [3]);
        assert_eq!(keys(buckets.range(4..).collect()), [5, 9]);
        assert_eq!(keys(buckets.range(..=1).collect()), [1]);
        let (far, near) = (6, 4);
        assert_eq!(keys(buckets.range(far..=near).collect()), Vec::<i64>::new());
        assert_eq!(keys(buckets.range(0..9).rev().collect()), [5, 3, 1]);
        let mut kept = buckets.clone();
        let later = kept.split_off(&4);
        assert_eq!(
            (keys(kept.iter().collect()), keys(later.iter().collect())),
            (vec![1, 3], vec![5, 9])
        );
    }
}
