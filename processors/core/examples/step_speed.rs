use _core::step::{run_partition, Classifier, Item, Options};
use std::collections::HashMap;
use std::time::Instant;
fn main() {
    let text = std::fs::read_to_string("/tmp/raws150.jsonl").unwrap();
    let events: Vec<_> = text
        .lines()
        .filter_map(|l| _core::decoding::decode(l.as_bytes(), 32768).ok())
        .collect();
    let rules =
        _core::rules::RuleSet::from_json(&std::fs::read_to_string("/tmp/rules.json").unwrap(), &[])
            .unwrap();
    let clustered: Vec<usize> = [
        "orders_lifetime",
        "avg_order_value",
        "revenue_30d",
        "sessions_7d",
        "product_views_7d",
        "searches_7d",
        "cart_adds_7d",
        "abandoned_carts_7d",
        "bounce_rate_7d",
        "mobile_share_30d",
        "top_category_share_30d",
        "engagement_velocity",
        "days_since_last_seen",
        "days_since_first_seen",
    ]
    .iter()
    .map(|n| _core::features::index_of(n).unwrap())
    .collect();
    let classifier = Classifier {
        rules,
        model: None,
        clustered,
    };
    let mut stored: HashMap<String, Vec<u8>> = HashMap::new();
    let t = Instant::now();
    let (mut fired, mut changes, mut vectors) = (0, 0, 0);
    for chunk in events.chunks(5000) {
        let items: Vec<Item> = chunk.iter().cloned().map(Item::Event).collect();
        let options = Options {
            retention: 400.0 * 86400.0,
            ..Options::default()
        };
        let step = run_partition(&items, &mut stored, &classifier, &options).unwrap();
        fired += step.fired;
        changes += step.changes.len();
        vectors += step.vectors.len();
        for (k, v) in step.rows {
            stored.insert(k, v);
        }
    }
    let dt = t.elapsed().as_secs_f64();
    println!(
        "{} events: {:.2} us/event; fired {fired} changes {changes} vectors {vectors}",
        events.len(),
        dt / events.len() as f64 * 1e6
    );
}
