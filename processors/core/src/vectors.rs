//! Feature vectors' wire form on the `features` topic: a msgpack map naming the columns
//! and holding one row per vector, `[user_id, as_of, values, refresh]`, a fifth
//! field, a map of computed traits' values by name, when the vector has any, and a sixth,
//! the prediction inputs, when users are predicted on; many
//! vectors to a message (read back by `processors.vectors.unpack_vectors`). A row with
//! no values says that its user is no more.
//!
//! ```
//! use _core::step::Vector;
//! use _core::vectors::pack;
//! let vector = Vector {
//!     user_id: "u1".into(), as_of: 60.0, values: vec![1.0], refresh: false,
//!     computed: vec![("watch_minutes_30d".into(), 95.0)], inputs: vec![],
//! };
//! let packed = pack(&[&vector], &["events_lifetime"]);
//! assert_eq!(&packed[..10], b"\x82\xa8features");
//! ```

use rmp::encode as mp;

use crate::step::Vector;

/// One message holding `vectors`, whose values are the features `names`.
pub fn pack(vectors: &[&Vector], names: &[&str]) -> Vec<u8> {
    let columns: usize = names.iter().map(|name| name.len() + 2).sum();
    let mut out = Vec::with_capacity(32 + columns + vectors.len() * (32 + 9 * names.len()));
    mp::write_map_len(&mut out, 2).expect("writing to a Vec");
    mp::write_str(&mut out, "features").expect("writing to a Vec");
    mp::write_array_len(&mut out, names.len() as u32).expect("writing to a Vec");
    for name in names {
        mp::write_str(&mut out, name).expect("writing to a Vec");
    }
    mp::write_str(&mut out, "rows").expect("writing to a Vec");
    mp::write_array_len(&mut out, vectors.len() as u32).expect("writing to a Vec");
    for vector in vectors {
        let fields = match (vector.computed.is_empty(), vector.inputs.is_empty()) {
            (true, true) => 4,
            (false, true) => 5,
            (_, false) => 6,
        };
        mp::write_array_len(&mut out, fields).expect("writing to a Vec");
        mp::write_str(&mut out, &vector.user_id).expect("writing to a Vec");
        mp::write_f64(&mut out, vector.as_of).expect("writing to a Vec");
        mp::write_array_len(&mut out, vector.values.len() as u32).expect("writing to a Vec");
        for value in &vector.values {
            mp::write_f64(&mut out, *value).expect("writing to a Vec");
        }
        mp::write_bool(&mut out, vector.refresh).expect("writing to a Vec");
        if fields > 4 {
            mp::write_map_len(&mut out, vector.computed.len() as u32).expect("writing to a Vec");
            for (name, value) in &vector.computed {
                mp::write_str(&mut out, name).expect("writing to a Vec");
                mp::write_f64(&mut out, *value).expect("writing to a Vec");
            }
        }
        if fields > 5 {
            mp::write_array_len(&mut out, vector.inputs.len() as u32).expect("writing to a Vec");
            for value in &vector.inputs {
                mp::write_f64(&mut out, *value).expect("writing to a Vec");
            }
        }
    }
    out
}
