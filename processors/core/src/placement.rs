//! Placing users in a model snapshot's clusters: nearest centroid in scaled space.
//!
//! ```
//! use _core::placement::Placement;
//! let model = Placement {
//!     version: 1, columns: vec![0], logged: vec![false], mean: vec![0.0], std: vec![1.0],
//!     centroids: vec![vec![0.0], vec![10.0]], ids: vec!["c1".into(), "c2".into()],
//!     events_column: 1, min_events: 2.0,
//! };
//! assert_eq!(model.assign(&[9.0, 5.0]), "c2");
//! assert_eq!(model.assign(&[9.0, 1.0]), "cold-start");
//! ```

/// The cluster of a user with too little history to be placed.
pub const COLD_START: &str = "cold-start";

/// What a snapshot needs to place a feature vector.
#[derive(Clone, Debug)]
pub struct Placement {
    pub version: i64,
    /// The vector columns clustered on, and which of them go through log1p.
    pub columns: Vec<usize>,
    pub logged: Vec<bool>,
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    pub centroids: Vec<Vec<f64>>,
    pub ids: Vec<String>,
    /// The column of `events_lifetime`, and the least events a placed user has.
    pub events_column: usize,
    pub min_events: f64,
}

impl Placement {
    /// The cluster id of a full feature vector.
    pub fn assign(&self, vector: &[f64]) -> &str {
        if vector[self.events_column] < self.min_events {
            return COLD_START;
        }
        let scaled: Vec<f64> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, &column)| {
                let value = vector[column];
                let value = if self.logged[i] {
                    value.max(0.0).ln_1p()
                } else {
                    value
                };
                (value - self.mean[i]) / self.std[i]
            })
            .collect();
        let mut best = (0, f64::INFINITY);
        for (index, centroid) in self.centroids.iter().enumerate() {
            let distance: f64 = scaled
                .iter()
                .zip(centroid)
                .map(|(value, centre)| (value - centre).powi(2))
                .sum();
            if distance < best.1 {
                best = (index, distance);
            }
        }
        &self.ids[best.0]
    }
}
