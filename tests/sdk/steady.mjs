// A quiet server's tracking with a server SDK's default batching: one `track` a second for
// <seconds> seconds, then flush. `node steady.mjs <sdk> <collector> <key> <user> <seconds>`.
// <sdk> is `segment` (@segment/analytics-node) or `rudderstack` (@rudderstack/rudder-sdk-node);
// neither `flushAt` nor `flushInterval` is set, so each sends as it ships: every 10 s or every
// 15 (Segment) or 20 (RudderStack) events.
import { Analytics } from "@segment/analytics-node";
import RudderAnalytics from "@rudderstack/rudder-sdk-node";

const [sdk, collector, writeKey, user, seconds] = process.argv.slice(2);
const errors = [];
const analytics =
  sdk === "segment"
    ? new Analytics({ writeKey, host: collector, maxRetries: 0 })
    : new RudderAnalytics(writeKey, {
        dataPlaneUrl: collector,
        retryCount: 0,
        errorHandler: (error) => errors.push(String(error)),
      });
if (sdk === "segment") analytics.on("error", (error) => errors.push(String(error?.reason ?? error)));
for (let second = 0; second < Number(seconds); second += 1) {
  analytics.track({ userId: user, event: "Product Viewed", properties: { product_id: `p${second}` } });
  await new Promise((resolve) => setTimeout(resolve, 1000));
}
if (sdk === "segment") await analytics.closeAndFlush({ timeout: 20000 });
else await analytics.flush();
process.stdout.write(JSON.stringify({ errors }));
