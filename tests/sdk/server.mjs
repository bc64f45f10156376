// Send a shopper's calls with a server SDK, then flush: `node server.mjs <sdk> <collector> <key> <user>`.
// <sdk> is `segment` (@segment/analytics-node) or `rudderstack` (@rudderstack/rudder-sdk-node).
import { Analytics } from "@segment/analytics-node";
import RudderAnalytics from "@rudderstack/rudder-sdk-node";

const [sdk, collector, writeKey, user] = process.argv.slice(2);
const anonymousId = `anon-${user}`;
const shoes = { product_id: "p1", category: "shoes", price: 20 };
const hat = { product_id: "p2", category: "hats", price: 15, quantity: 1 };
const calls = [
  ["page", { anonymousId, name: "Home", properties: { path: "/" } }],
  ["identify", { userId: user, anonymousId, traits: { plan: "gold" } }],
  ["track", { userId: user, event: "Product Viewed", properties: shoes }],
  ["track", { userId: user, event: "Product Added", properties: { ...shoes, quantity: 2 } }],
  ["track", { userId: user, event: "Order Completed", properties: { order_id: "o1", revenue: 40, products: [shoes] } }],
  ["track", { userId: user, event: "Product Added", properties: hat }],
];
// The visit took a few minutes, ten minutes ago: one minute between calls.
const start = Date.now() - 10 * 60_000;
calls.forEach(([, message], index) => {
  message.timestamp = new Date(start + index * 60_000);
});
const errors = [];
if (sdk === "segment") {
  const analytics = new Analytics({ writeKey, host: collector, flushAt: 20, maxRetries: 0 });
  analytics.on("error", (error) => errors.push(String(error?.reason ?? error)));
  for (const [call, message] of calls) analytics[call](message);
  await analytics.closeAndFlush({ timeout: 20000 });
} else {
  const analytics = new RudderAnalytics(writeKey, {
    dataPlaneUrl: collector,
    flushAt: 20,
    retryCount: 0,
    errorHandler: (error) => errors.push(String(error)),
  });
  for (const [call, message] of calls) analytics[call](message);
  await analytics.flush();
}
process.stdout.write(JSON.stringify({ errors }));
