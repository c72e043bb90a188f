// Small inline SVG charts, drawn from numbers with DOM calls (no library): bars for a few
// figures, and grouped bars for figures per period. Colours come from console.css.

import { h, points, svg } from "./dom.js";

const WIDTH = 640;
const HEIGHT = 240;
const MARGIN = { top: 16, right: 12, bottom: 40, left: 64 };

/** A round step for about `count` gridlines up to `max`: 1, 2 or 5 times a power of ten. */
function niceStep(max, count = 4) {
  if (max <= 0) return 1;
  const rough = max / count;
  const power = 10 ** Math.floor(Math.log10(rough));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= rough);
  return Math.max(1, step);
}

function axis(top, step, scale, plotWidth) {
  const lines = [];
  for (let value = 0; value <= top; value += step) {
    const y = scale(value);
    lines.push(
      svg("line", { x1: MARGIN.left, x2: MARGIN.left + plotWidth, y1: y, y2: y, class: "grid" }),
      svg("text", { x: MARGIN.left - 8, y: y + 4, "text-anchor": "end", class: "tick" }, points(value)),
    );
  }
  return lines;
}

function frame(title, description, ...children) {
  return h(
    "figure",
    { class: "chart" },
    svg("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", "aria-label": `${title}: ${description}` }, ...children),
    h("figcaption", {}, title),
  );
}

/**
 * Grouped bars: one group per category (a period), one bar per series in each, with a legend.
 * `series` is `[{name, className, values}]`, each `values` as long as `categories`.
 */
export function groupedBars({ title, categories, series }) {
  const plotWidth = WIDTH - MARGIN.left - MARGIN.right;
  const plotHeight = HEIGHT - MARGIN.top - MARGIN.bottom;
  const max = Math.max(0, ...series.flatMap((s) => s.values));
  const step = niceStep(max);
  const top = Math.max(step, Math.ceil(max / step) * step);
  const scale = (value) => MARGIN.top + plotHeight - (value / top) * plotHeight;
  const groupWidth = plotWidth / Math.max(categories.length, 1);
  const barWidth = Math.max(1, (groupWidth * 0.8) / series.length);
  const labelEvery = Math.ceil(categories.length / 7); // a label is about 80 of the 564 units wide
  const parts = [...axis(top, step, scale, plotWidth)];
  categories.forEach((category, i) => {
    const x0 = MARGIN.left + i * groupWidth + groupWidth * 0.1;
    series.forEach((s, j) => {
      const value = s.values[i];
      const y = scale(value);
      parts.push(
        svg(
          "rect",
          { x: x0 + j * barWidth, y, width: Math.max(barWidth - 1, 1), height: MARGIN.top + plotHeight - y, class: `bar ${s.className}` },
          svg("title", {}, `${category}: ${points(value)} ${s.name}`),
        ),
      );
    });
    if (i % labelEvery === 0) {
      parts.push(svg("text", { x: x0 + (groupWidth * 0.8) / 2, y: HEIGHT - MARGIN.bottom + 16, "text-anchor": "middle", class: "tick" }, category));
    }
  });
  let legendX = MARGIN.left;
  for (const s of series) {
    parts.push(
      svg("rect", { x: legendX, y: HEIGHT - 14, width: 10, height: 10, class: `bar ${s.className}` }),
      svg("text", { x: legendX + 14, y: HEIGHT - 5, class: "legend" }, s.name),
    );
    legendX += 24 + s.name.length * 7;
  }
  const description = series.map((s) => `${s.name} ${points(s.values.reduce((a, b) => a + b, 0))} in all`).join(", ");
  return frame(title, description, ...parts);
}

/** One bar per figure (`[{label, value, className}]`), each labelled with its value. */
export function bars({ title, figures }) {
  const plotWidth = WIDTH - MARGIN.left - MARGIN.right;
  const plotHeight = HEIGHT - MARGIN.top - MARGIN.bottom;
  const max = Math.max(0, ...figures.map((f) => f.value));
  const step = niceStep(max);
  const top = Math.max(step, Math.ceil(max / step) * step);
  const scale = (value) => MARGIN.top + plotHeight - (value / top) * plotHeight;
  const slot = plotWidth / Math.max(figures.length, 1);
  const parts = [...axis(top, step, scale, plotWidth)];
  figures.forEach((f, i) => {
    const x = MARGIN.left + i * slot + slot * 0.2;
    const y = scale(f.value);
    parts.push(
      svg("rect", { x, y, width: slot * 0.6, height: MARGIN.top + plotHeight - y, class: `bar ${f.className}` }, svg("title", {}, `${f.label}: ${points(f.value)}`)),
      svg("text", { x: x + slot * 0.3, y: y - 4, "text-anchor": "middle", class: "value" }, points(f.value)),
      svg(
        "text",
        { x: x + slot * 0.3, y: HEIGHT - MARGIN.bottom + 16, "text-anchor": "middle", class: "tick" },
        // A label may take two lines ("Expiring by\n2027-01-04").
        f.label.split("\n").map((line, n) => svg("tspan", { x: x + slot * 0.3, dy: n === 0 ? 0 : 13 }, line)),
      ),
    );
  });
  const description = figures.map((f) => `${f.label.replace("\n", " ")} ${points(f.value)}`).join(", ");
  return frame(title, description, ...parts);
}
