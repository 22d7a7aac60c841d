// Loads HTML report pages in headless Chromium and says, as JSON on stdout, what a reader would
// meet: console errors, uncaught exceptions, any request the page makes (every one is refused:
// the page must need no network), and for each Plotly chart whether it drew axes with tick
// labels and answers a real mouse hover with a label.
//
//   node check_page.mjs PAGE.html [PAGE.html ...] [--screenshots DIR]
//
// Run by tests/test_report_pages.py from a folder where `npm ci` installed package.json.
import chromium from "@sparticuz/chromium";
import puppeteer from "puppeteer-core";
import { pathToFileURL } from "node:url";
import path from "node:path";

const args = process.argv.slice(2);
let screenshots = null;
const pages = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--screenshots") screenshots = args[++i];
  else pages.push(path.resolve(args[i]));
}

const browser = await puppeteer.launch({
  executablePath: await chromium.executablePath(),
  args: chromium.args,
  headless: true,
  defaultViewport: { width: 1280, height: 900 },
});

async function check(file, index) {
  const url = pathToFileURL(file).href;
  const page = await browser.newPage();
  const result = { file, console_errors: [], page_errors: [], requests: [], charts: [] };
  page.on("console", (message) => {
    if (message.type() === "error") result.console_errors.push(message.text());
  });
  page.on("pageerror", (error) => result.page_errors.push(String(error.message ?? error)));
  await page.setRequestInterception(true);
  page.on("request", (request) => {
    // The page itself, and data: URLs (no network: older plotly.js probes WebP support so).
    if (request.url() === url || request.url().startsWith("data:")) return request.continue();
    result.requests.push(request.url());
    return request.abort("blockedbyclient");
  });
  await page.goto(url, { waitUntil: "load", timeout: 30000 });
  result.title = await page.title();
  const count = await page.$$eval(".plotly-graph-div", (divs) => divs.length);
  await page
    .waitForFunction(
      (n) =>
        document.querySelectorAll(".plotly-graph-div svg.main-svg").length >= n &&
        [...document.querySelectorAll(".plotly-graph-div")].every((d) => d._fullLayout),
      { timeout: 20000 },
      count,
    )
    .catch((error) => result.page_errors.push(`charts not drawn: ${error.message}`));
  const ids = await page.$$eval(".plotly-graph-div", (divs) => divs.map((d) => d.id));
  for (const id of ids) {
    const chart = await page.$eval(`#${id}`, (div) => {
      const texts = (selector) =>
        [...div.querySelectorAll(selector)].map((t) => t.textContent.trim()).filter((t) => t);
      return {
        id: div.id,
        traces: div.data ? div.data.length : 0,
        xticks: texts(".xtick text"),
        yticks: texts(".ytick text"),
        xtick_marks: div.querySelectorAll(".xaxislayer-above .xtick, .xaxislayer-above path.xtick").length,
        ytick_marks: div.querySelectorAll(".yaxislayer-above .ytick, .yaxislayer-above path.ytick").length,
        axis_titles: texts(".g-xtitle text, .g-ytitle text, [class^='g-x'] .xtitle, [class^='g-y'] .ytitle"),
        error_bars: div.querySelectorAll("g.errorbar").length,
        shapes: div.querySelectorAll(".shapelayer path").length,
        annotations: texts(".annotation-text"),
        subplots: Object.keys(div._fullLayout || {}).filter((k) => /^yaxis\d*$/.test(k)).length,
        xranges: Object.keys(div._fullLayout || {})
          .filter((k) => /^xaxis\d*$/.test(k))
          .sort((a, b) => Number(a.slice(5) || 1) - Number(b.slice(5) || 1))
          .map((k) => div._fullLayout[k].range),
      };
    });
    // A real mouse over a drawn point or bar (the tallest bar; the middle point of a line or
    // a scatter): the hover label must show its numbers.
    const points = await page.$$(`#${id} .trace .point`);
    const areas = await Promise.all(
      points.map((p) => p.evaluate((e) => {
        const r = e.getBoundingClientRect();
        return r.width * r.height;
      })),
    );
    const largest = Math.max(0, ...areas);
    const candidates = areas.map((a, i) => [a, i]).filter(([a]) => a === largest && a > 0);
    const target = candidates.length
      ? points[candidates[Math.floor(candidates.length / 2)][1]]
      : null;
    chart.hover = "";
    if (target) {
      await target.scrollIntoView();
      const box = await target.boundingBox();
      if (box) {
        await page.mouse.move(box.x + box.width / 2, box.y + Math.max(1, box.height / 2));
        await page
          .waitForFunction(
            (chartId) => document.querySelector(`#${chartId} .hoverlayer .hovertext`),
            { timeout: 3000 },
            id,
          )
          .catch(() => {});
        chart.hover = await page.$eval(`#${id}`, (div) =>
          [...div.querySelectorAll(".hoverlayer .hovertext")].map((t) => t.textContent).join(" | "),
        );
        await page.mouse.move(1, 1);
      }
    }
    result.charts.push(chart);
  }
  if (screenshots) {
    await page.screenshot({ path: path.join(screenshots, `page-${index}.png`), fullPage: true });
  }
  await page.close();
  return result;
}

const results = [];
try {
  for (const [index, file] of pages.entries()) results.push(await check(file, index));
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(results, null, 1) + "\n");
