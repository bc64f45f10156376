//! Per-partition event-time progress: two clocks, one for accepting events and one for
//! firing timers.
//!
//! The **watermark** says what counts as late: the largest event time seen on the
//! partition minus the allowed lateness, or a floor it was explicitly advanced to,
//! whichever is later. Events older than it are refused.
//!
//! The **firing clock** says when time-driven transitions are announced: the largest
//! event time minus the firing delay (seconds, not the lateness's hour), or its own
//! floor. It is never behind the watermark. An event between the two is still applied,
//! and its user re-evaluated: what a timer announced too early is corrected then.
//!
//! Both move with each event in offset order, so which events are late and when a
//! timer fires depend only on the partition's contents, never on how they were batched.
//!
//! ```
//! use _core::watermark::Watermark;
//! let mut clock = Watermark::new(3600.0, 5.0);
//! assert_eq!((clock.admit(10_000.0), clock.admit(7_000.0), clock.admit(6_000.0)), (true, true, false));
//! assert_eq!((clock.value(), clock.firing()), (6400.0, 9995.0));
//! clock.follow_wall_clock(20_000.0);
//! assert_eq!((clock.value(), clock.firing()), (16_400.0, 19_995.0));
//! clock.advance_to(30_000.0);
//! assert_eq!((clock.value(), clock.firing()), (30_000.0, 30_000.0));
//! assert!(!clock.admit(29_999.0));
//! ```

/// Event-time progress of one partition; times are epoch seconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Watermark {
    /// How far behind the newest event time an event may arrive and still count.
    pub lateness: f64,
    /// How far behind the newest event time timers fire (at most `lateness`).
    pub delay: f64,
    pub max_event_time: f64,
    /// The watermark's floor: no event before it will come.
    pub floor: f64,
    /// The firing clock's floor.
    pub firing_floor: f64,
}

impl Watermark {
    /// A partition that has seen nothing yet.
    pub fn new(lateness: f64, delay: f64) -> Watermark {
        Watermark {
            lateness,
            delay: delay.min(lateness),
            max_event_time: f64::NEG_INFINITY,
            floor: f64::NEG_INFINITY,
            firing_floor: f64::NEG_INFINITY,
        }
    }

    /// Events older than this are late.
    pub fn value(&self) -> f64 {
        (self.max_event_time - self.lateness).max(self.floor)
    }

    /// Timers due by this fire.
    pub fn firing(&self) -> f64 {
        (self.max_event_time - self.delay)
            .max(self.firing_floor)
            .max(self.value())
    }

    /// Whether an event at `moment` is on time; on-time events move both clocks.
    pub fn admit(&mut self, moment: f64) -> bool {
        if moment < self.value() {
            return false;
        }
        if moment > self.max_event_time {
            self.max_event_time = moment;
        }
        true
    }

    /// Declare that no event before `moment` will come (e.g. at the end of a replay):
    /// both clocks stand at least there.
    pub fn advance_to(&mut self, moment: f64) {
        self.floor = self.floor.max(moment);
        self.firing_floor = self.firing_floor.max(moment);
    }

    /// A quiet partition's clocks follow the wall clock `now` as if an event stamped
    /// `now` had come.
    pub fn follow_wall_clock(&mut self, now: f64) {
        self.floor = self.floor.max(now - self.lateness);
        self.firing_floor = self.firing_floor.max(now - self.delay);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_event_does_not_move_the_watermark() {
        let mut clock = Watermark::new(10.0, 2.0);
        assert!(clock.admit(100.0));
        assert!(!clock.admit(89.0));
        assert_eq!(clock.max_event_time, 100.0);
        assert!(clock.admit(90.0));
        assert_eq!((clock.value(), clock.firing()), (90.0, 98.0));
    }

    #[test]
    fn the_floor_wins_when_it_is_later() {
        let mut clock = Watermark::new(10.0, 2.0);
        clock.advance_to(500.0);
        clock.advance_to(400.0);
        assert_eq!((clock.value(), clock.firing()), (500.0, 500.0));
        assert!(clock.admit(500.0));
        assert_eq!((clock.value(), clock.firing()), (500.0, 500.0));
        assert!(clock.admit(510.0));
        assert_eq!((clock.value(), clock.firing()), (500.0, 508.0));
    }

    #[test]
    fn the_firing_clock_is_never_behind_the_watermark() {
        let clock = Watermark::new(10.0, 60.0);
        assert_eq!(clock.delay, 10.0);
        let mut clock = Watermark::new(10.0, 0.0);
        clock.admit(100.0);
        clock.floor = 120.0;
        assert_eq!((clock.value(), clock.firing()), (120.0, 120.0));
    }
}
