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

use crate::msgpack::Pack;

use crate::step::Vector;

/// One message holding `vectors`, whose values are the features `names`.
pub fn pack(vectors: &[&Vector], names: &[&str]) -> Vec<u8> {
    let columns: usize = names.iter().map(|name| name.len() + 2).sum();
    let mut out = Vec::with_capacity(32 + columns + vectors.len() * (32 + 9 * names.len()));
    out.map(2);
    out.text("features");
    out.array(names.len());
    for name in names {
        out.text(name);
    }
    out.text("rows");
    out.array(vectors.len());
    for vector in vectors {
        let fields = match (vector.computed.is_empty(), vector.inputs.is_empty()) {
            (true, true) => 4,
            (false, true) => 5,
            (_, false) => 6,
        };
        out.array(fields);
        out.text(&vector.user_id);
        out.float(vector.as_of);
        out.array(vector.values.len());
        for value in &vector.values {
            out.float(*value);
        }
        out.boolean(vector.refresh);
        if fields > 4 {
            out.map(vector.computed.len());
            for (name, value) in &vector.computed {
                out.text(name);
                out.float(*value);
            }
        }
        if fields > 5 {
            out.array(vector.inputs.len());
            for value in &vector.inputs {
                out.float(*value);
            }
        }
    }
    out
}
