//! Users a worker keeps decoded between the steps of one partition, each with the exact
//! row it was written as: a step that loads a user whose stored row is still that row
//! takes the kept user instead of decoding the row again, with its computed traits'
//! running merges (see [`crate::running`]) still in place.
//!
//! A kept user equals what its row decodes to (the step leaves each user in the form its
//! row keeps, see [`User::drop_unstored`]), and it is taken only when the stored row is
//! byte for byte the one it was kept with, so a step reads the same users with or
//! without it: a row another worker wrote, or one a failed commit never wrote, is
//! decoded afresh. At most `capacity` users are kept: the users of the latest steps, in
//! two generations (the older one goes when the newer one fills half the capacity).
//!
//! ```
//! use std::sync::Arc;
//! use _core::resident::Resident;
//! use _core::rows::encode;
//! use _core::user::User;
//! let mut resident = Resident::new(10);
//! let user = User { as_of: 60.0, ..User::default() };
//! let row = encode(&user);
//! resident.keep("u1".into(), row.clone(), Arc::new(user.clone()));
//! assert_eq!(resident.take("u1", &row).unwrap(), user);
//! assert_eq!((resident.hits, resident.decoded), (1, 0));
//! assert_eq!(resident.take("u1", &row).unwrap(), user); // taken once: decoded now
//! assert_eq!(resident.decoded, 1);
//! ```

use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::rows::{self, RowError};
use crate::user::User;

/// A kept user and the row they were written as.
struct Kept {
    row: Vec<u8>,
    user: Arc<User>,
}

/// Users kept decoded, by id, with their rows; see the module's documentation.
pub struct Resident {
    capacity: usize,
    newer: FxHashMap<String, Kept>,
    older: FxHashMap<String, Kept>,
    /// Users taken as kept, and rows decoded because no user was kept with them, since
    /// [`Resident::take_counts`].
    pub hits: u64,
    pub decoded: u64,
}

impl Resident {
    pub fn new(capacity: usize) -> Resident {
        Resident {
            capacity,
            newer: FxHashMap::default(),
            older: FxHashMap::default(),
            hits: 0,
            decoded: 0,
        }
    }

    /// How many users are kept.
    pub fn len(&self) -> usize {
        self.newer.len() + self.older.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The users taken as kept and the rows decoded since the last call.
    pub fn take_counts(&mut self) -> (u64, u64) {
        let counts = (self.hits, self.decoded);
        (self.hits, self.decoded) = (0, 0);
        counts
    }

    /// Keep at most `capacity` users from now on.
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity;
        if self.len() > capacity {
            self.older.clear();
            if self.newer.len() > capacity {
                self.newer.clear();
            }
        }
    }

    /// The user stored as `row`: the one kept with exactly these bytes (no longer kept
    /// after this), else `row` decoded.
    pub fn take(&mut self, user_id: &str, row: &[u8]) -> Result<User, RowError> {
        let kept = match self.newer.remove(user_id) {
            Some(kept) => Some(kept),
            None => self.older.remove(user_id),
        };
        match kept {
            Some(kept) if kept.row == row => {
                self.hits += 1;
                Ok(Arc::try_unwrap(kept.user).unwrap_or_else(|shared| (*shared).clone()))
            }
            _ => {
                self.decoded += 1;
                rows::decode(row)
            }
        }
    }

    /// Keep `user`, written as `row`, for the partition's next steps.
    pub fn keep(&mut self, user_id: String, row: Vec<u8>, user: Arc<User>) {
        if self.capacity == 0 {
            return;
        }
        if self.newer.len() >= self.capacity.div_ceil(2) {
            self.older = std::mem::take(&mut self.newer);
        }
        self.older.remove(&user_id);
        self.newer.insert(user_id, Kept { row, user });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rows::encode;

    fn user(as_of: f64) -> User {
        User {
            as_of,
            ..User::default()
        }
    }

    #[test]
    fn a_row_written_since_is_decoded_not_taken_as_kept() {
        let mut resident = Resident::new(10);
        let kept = user(60.0);
        resident.keep("u1".into(), encode(&kept), Arc::new(kept));
        let written = user(120.0);
        assert_eq!(resident.take("u1", &encode(&written)).unwrap(), written);
        assert_eq!((resident.hits, resident.decoded), (0, 1));
        assert!(resident.is_empty());
    }

    #[test]
    fn a_user_still_shared_is_copied_and_at_most_capacity_are_kept() {
        let mut resident = Resident::new(4);
        let shared = Arc::new(user(1.0));
        resident.keep("u0".into(), encode(&shared), Arc::clone(&shared));
        assert_eq!(resident.take("u0", &encode(&shared)).unwrap(), *shared);
        for n in 0..9 {
            let kept = user(f64::from(n));
            resident.keep(format!("u{n}"), encode(&kept), Arc::new(kept));
            assert!(resident.len() <= 4);
        }
        let row = encode(&user(8.0));
        assert_eq!(resident.take("u8", &row).unwrap(), user(8.0));
        assert_eq!(resident.take_counts(), (2, 0));
        assert_eq!(resident.take_counts(), (0, 0));
        resident.set_capacity(0);
        assert!(resident.is_empty());
        resident.keep("u1".into(), row, Arc::new(user(8.0)));
        assert!(resident.is_empty());
    }
}
