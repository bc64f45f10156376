// What a shopper does on the test page, through whichever SDK the page loaded.
// `analytics` has Segment's call signatures (RudderStack's SDK shares them).
export const params = new URLSearchParams(location.search);

// A shopper's steps are some time apart: each is stamped in the browser, and the collector
// corrects each request's stamps for its own clock skew. Carts are kept to the second, so
// the product added after the order comes more than a second later.
const pause = (ms = 100) => new Promise((resolve) => setTimeout(resolve, ms));

async function shop(analytics, user) {
  await analytics.page("Home", { path: "/" });
  await pause();
  await analytics.identify(user, { plan: "gold" });
  await pause();
  await analytics.track("Product Viewed", { product_id: "p1", category: "shoes", price: 20 });
  await pause();
  await analytics.track("Product Added", {
    product_id: "p1",
    category: "shoes",
    price: 20,
    quantity: 2,
  });
  await pause();
  await analytics.track("Order Completed", {
    order_id: "o1",
    revenue: 40,
    products: [{ product_id: "p1", category: "shoes", price: 20, quantity: 2 }],
  });
  await pause(1100);
  await analytics.track("Product Added", {
    product_id: "p2",
    category: "hats",
    price: 15,
    quantity: 1,
  });
}

// Shop, then tell the browser driver how it went (window.__outcome).
export function visit(analytics, user) {
  shop(analytics, user).then(
    () => {
      window.__outcome = "sent";
    },
    (error) => {
      window.__outcome = `failed: ${error}`;
    },
  );
}
