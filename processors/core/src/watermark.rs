//! Per-partition event-time progress: what counts as late.
//!
//! A partition's watermark is the largest event time seen on it minus the allowed
//! lateness, or a floor it was explicitly advanced to, whichever is later. Events older
//! than the watermark are late. The watermark moves with each event in offset order, so
//! which events are late depends only on the partition's contents, never on how they
//! were batched.
//!
//! ```
//! use _core::watermark::Watermark;
//! let mut clock = Watermark::new(3600.0);
//! assert_eq!((clock.admit(10_000.0), clock.admit(7_000.0), clock.admit(6_000.0)), (true, true, false));
//! assert_eq!(clock.value(), 6400.0);
//! clock.advance_to(20_000.0);
//! assert!(!clock.admit(19_999.0));
//! ```

/// Event-time progress of one partition; times are epoch seconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Watermark {
    pub lateness: f64,
    pub max_event_time: f64,
    pub floor: f64,
}

impl Watermark {
    /// A partition that has seen nothing yet.
    pub fn new(lateness: f64) -> Watermark {
        Watermark {
            lateness,
            max_event_time: f64::NEG_INFINITY,
            floor: f64::NEG_INFINITY,
        }
    }

    /// Events older than this are late.
    pub fn value(&self) -> f64 {
        (self.max_event_time - self.lateness).max(self.floor)
    }

    /// Whether an event at `moment` is on time; on-time events move the watermark.
    pub fn admit(&mut self, moment: f64) -> bool {
        if moment < self.value() {
            return false;
        }
        if moment > self.max_event_time {
            self.max_event_time = moment;
        }
        true
    }

    /// Declare that no event before `moment` will come (e.g. at the end of a replay).
    pub fn advance_to(&mut self, moment: f64) {
        self.floor = self.floor.max(moment);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_event_does_not_move_the_watermark() {
        let mut clock = Watermark::new(10.0);
        assert!(clock.admit(100.0));
        assert!(!clock.admit(89.0));
        assert_eq!(clock.max_event_time, 100.0);
        assert!(clock.admit(90.0));
        assert_eq!(clock.value(), 90.0);
    }

    #[test]
    fn the_floor_wins_when_it_is_later() {
        let mut clock = Watermark::new(10.0);
        clock.advance_to(500.0);
        clock.advance_to(400.0);
        assert_eq!(clock.value(), 500.0);
        assert!(clock.admit(500.0));
        assert_eq!(clock.value(), 500.0);
    }
}
