//! What the core folds: events reduced to what segmentation needs.
//!
//! ```
//! use _core::events::{Event, Kind};
//! let event = Event::new("u1", "m1", Kind::Order, 60.0);
//! assert!(event.kind.is_behaviour() && Kind::from_code(7) == Some(Kind::Order));
//! ```

use crate::traits::TraitValue;

/// What an event means for behaviour; the codes are those of `processors.events.EventKind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Page = 0,
    ProductViewed = 1,
    Search = 2,
    CartAdd = 3,
    CartRemove = 4,
    CartViewed = 5,
    Checkout = 6,
    Order = 7,
    Other = 8,
    Identify = 9,
    Alias = 10,
}

const KINDS: [Kind; 11] = [
    Kind::Page,
    Kind::ProductViewed,
    Kind::Search,
    Kind::CartAdd,
    Kind::CartRemove,
    Kind::CartViewed,
    Kind::Checkout,
    Kind::Order,
    Kind::Other,
    Kind::Identify,
    Kind::Alias,
];

impl Kind {
    /// The kind of a code, `None` for an unknown one.
    pub fn from_code(code: i64) -> Option<Kind> {
        usize::try_from(code)
            .ok()
            .and_then(|i| KINDS.get(i).copied())
    }

    /// The kind named `name` (`PRODUCT_VIEWED`), as rules and state rows name it.
    pub fn from_name(name: &str) -> Option<Kind> {
        KINDS.iter().copied().find(|kind| kind.name() == name)
    }

    /// The kind's name, as in `processors.events.EventKind`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Page => "PAGE",
            Kind::ProductViewed => "PRODUCT_VIEWED",
            Kind::Search => "SEARCH",
            Kind::CartAdd => "CART_ADD",
            Kind::CartRemove => "CART_REMOVE",
            Kind::CartViewed => "CART_VIEWED",
            Kind::Checkout => "CHECKOUT",
            Kind::Order => "ORDER",
            Kind::Other => "OTHER",
            Kind::Identify => "IDENTIFY",
            Kind::Alias => "ALIAS",
        }
    }

    /// Whether the kind is the user's behaviour (counted in `events`); identity calls are not.
    pub fn is_behaviour(self) -> bool {
        !matches!(self, Kind::Identify | Kind::Alias)
    }
}

/// One validated event: `user_id` is the profile it belongs to, `timestamp` event time in
/// epoch seconds, `value` the order revenue or the cart line's price times quantity.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub user_id: String,
    pub message_id: String,
    pub kind: Kind,
    pub timestamp: f64,
    pub value: f64,
    pub categories: Vec<String>,
    pub device: Option<String>,
    pub anonymous_id: Option<String>,
    pub previous_id: Option<String>,
    pub product: Option<String>,
    /// The traits the decoder was asked to keep, from `traits` and `context.traits`.
    pub traits: Vec<(String, TraitValue)>,
    /// The `track` event's or the `page`/`screen` call's name, when the rules count it.
    pub name: Option<String>,
    /// The properties the rules read (dotted paths from the message: `properties.plan`).
    pub properties: Vec<(String, TraitValue)>,
}

impl Event {
    /// An event with no value, categories, device, other ids or product.
    pub fn new(user_id: &str, message_id: &str, kind: Kind, timestamp: f64) -> Event {
        Event {
            user_id: user_id.to_string(),
            message_id: message_id.to_string(),
            kind,
            timestamp,
            value: 0.0,
            categories: Vec::new(),
            device: None,
            anonymous_id: None,
            previous_id: None,
            product: None,
            traits: Vec::new(),
            name: None,
            properties: Vec::new(),
        }
    }
}
