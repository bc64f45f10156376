//! The change event as published on the change topic.
//!
//! ```
//! use _core::changes::{messages, to_json};
//! use _core::user::Change;
//! let json = to_json(&Change::tombstone("u1", 5.0), 6.0, "v1").unwrap();
//! assert!(json.starts_with(br#"{"user_id":"u1","entered":[]"#));
//! let [(key, value)] = &messages(&[Change::tombstone("u1", 5.0)], 6.0, "v1").unwrap()[..] else {
//!     panic!("one message a change")
//! };
//! assert_eq!((key.as_str(), value), ("u1", &None));
//! ```

use serde_json::{json, Value};

use crate::features::py_round;
use crate::user::Change;

/// A change topic message: the user's id (its key) and the change's JSON document (none
/// for an erasure's tombstone).
pub type Message = (String, Option<Vec<u8>>);

/// The messages of `changes` on the change topic, in order.
pub fn messages<'a>(
    changes: impl IntoIterator<Item = &'a Change>,
    processed_at: f64,
    rules_version: &str,
) -> serde_json::Result<Vec<Message>> {
    changes
        .into_iter()
        .map(|change| {
            let value = match change.is_tombstone {
                true => None,
                false => Some(to_json(change, processed_at, rules_version)?),
            };
            Ok((change.user_id.clone(), value))
        })
        .collect()
}

/// The JSON document of `change`, its keys in the documented order.
pub fn to_json(
    change: &Change,
    processed_at: f64,
    rules_version: &str,
) -> serde_json::Result<Vec<u8>> {
    let cart = if change.cart.is_empty() {
        Value::Null
    } else {
        let products: Vec<Value> = change
            .cart
            .iter()
            .map(|line| {
                json!({
                    "product_id": (!line.product.is_empty()).then_some(&line.product),
                    "category": (!line.category.is_empty()).then_some(&line.category),
                    "count": line.count,
                    "value": line.value,
                })
            })
            .collect();
        let value: f64 = change.cart.iter().map(|line| line.value).sum();
        json!({
            "products": products,
            "value": py_round(value, 2),
            "changed_at": change.cart_changed_at,
        })
    };
    let fields: [(&str, Value); 13] = [
        ("user_id", json!(change.user_id)),
        ("entered", json!(change.entered)),
        ("exited", json!(change.exited)),
        ("segments", json!(change.segments)),
        ("cluster", json!(change.cluster)),
        ("previous_cluster", json!(change.previous_cluster)),
        ("version", json!(change.version)),
        ("reason", json!(change.reason.name())),
        ("event_time", json!(change.event_time)),
        ("processed_at", json!(processed_at)),
        ("rules_version", json!(rules_version)),
        ("model_version", json!(change.model_version)),
        ("cart", cart),
    ];
    let mut out = Vec::with_capacity(256);
    out.push(b'{');
    for (index, (key, value)) in fields.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, key)?;
        out.push(b':');
        serde_json::to_writer(&mut out, value)?;
    }
    out.push(b'}');
    Ok(out)
}
