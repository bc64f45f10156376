// Open a page in Debian's headless Chromium and report what happened during the visit, as
// JSON on stdout: the page's outcome, console errors and warnings, failed requests, and every
// request with its status. What the page sends while it is being closed is not the visit's.
//
//   node browser.mjs <page url> [seconds]
import { chromium } from "playwright-core";

const [url, seconds = "30"] = process.argv.slice(2);
const deadline = Date.now() + Number(seconds) * 1000;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
  ],
});
const report = { outcome: null, console: [], failed: [], requests: [] };
let recording = true;
let inFlight = 0;
let quietSince = Date.now();
try {
  const page = await browser.newPage();
  page.on("console", (message) => {
    if (recording && (message.type() === "error" || message.type() === "warning")) {
      report.console.push(`${message.type()}: ${message.text()}`);
    }
  });
  page.on("pageerror", (error) => report.console.push(`pageerror: ${error.message}`));
  page.on("request", () => {
    inFlight += 1;
  });
  const settle = () => {
    inFlight -= 1;
    quietSince = Date.now();
  };
  page.on("requestfinished", async (request) => {
    if (!recording) return;
    const response = await request.response();
    const headers = response ? await response.allHeaders() : {};
    report.requests.push({
      method: request.method(),
      url: request.url(),
      status: response ? response.status() : null,
      contentType: request.headers()["content-type"] ?? null,
      allowOrigin: headers["access-control-allow-origin"] ?? null,
    });
    settle();
  });
  page.on("requestfailed", (request) => {
    if (!recording) return;
    report.failed.push(`${request.method()} ${request.url()}: ${request.failure()?.errorText}`);
    settle();
  });
  await page.goto(url);
  while (Date.now() < deadline) {
    report.outcome = await page.evaluate(() => window.__outcome ?? null);
    if (report.outcome !== null && inFlight === 0 && Date.now() - quietSince > 1500) break;
    await page.waitForTimeout(100);
  }
  recording = false;
  await page.close({ runBeforeUnload: true });
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(report));
