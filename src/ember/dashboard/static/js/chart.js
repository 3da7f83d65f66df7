// Line charts over time, drawn as SVG by hand: a few series, a shared x axis of
// wall-clock time, a y axis from zero. Small enough to need no library.

import {h, s} from "./dom.js";

export const COLORS = ["#0969da", "#1a7f37", "#cf222e", "#9a6700", "#8250df", "#e8590c",
                       "#1b7c83", "#bf3989"];

const W = 600, H = 220, LEFT = 72, RIGHT = 12, TOP = 10, BOTTOM = 24;

function niceMax(value) {
  if (value <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(value));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= value) return m * p;
  return 10 * p;
}

/**
 * A chart panel. series: [{name, points: [[t_seconds, value], ...]}];
 * format: the y axis's labels; maxY: a fixed top (100 for percent).
 */
export function lineChart(title, series, {format = v => String(v), maxY} = {}) {
  const all = series.flatMap(se => se.points);
  const box = h("div", {class: "panel chart", dataset: {chart: title}}, h("h2", {}, title));
  if (!all.length) {
    box.append(h("div", {class: "empty"},
                 "No samples yet: the dashboard samples every few seconds."));
    return box;
  }
  const t0 = Math.min(...all.map(p => p[0])), t1 = Math.max(...all.map(p => p[0]), t0 + 1);
  const top = maxY ?? niceMax(Math.max(...all.map(p => p[1])));
  const x = t => LEFT + (t - t0) / (t1 - t0) * (W - LEFT - RIGHT);
  const y = v => TOP + (1 - v / top) * (H - TOP - BOTTOM);
  const svg = s("svg", {viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img"});
  for (const frac of [0, 0.5, 1]) {
    const v = top * frac;
    svg.append(s("line", {class: "axis", x1: LEFT, x2: W - RIGHT, y1: y(v), y2: y(v)}),
               s("text", {x: LEFT - 6, y: y(v) + 4, "text-anchor": "end"}, format(v)));
  }
  for (const t of [t0, t1]) {
    svg.append(s("text", {x: x(t), y: H - 6, "text-anchor": t === t0 ? "start" : "end"},
                 new Date(t * 1000).toLocaleTimeString()));
  }
  series.forEach((se, i) => {
    if (!se.points.length) return;
    const d = se.points.map(
      (p, j) => `${j ? "L" : "M"}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`);
    svg.append(s("path", {d: d.join(" "), fill: "none", stroke: COLORS[i % COLORS.length],
                          "stroke-width": 2, "vector-effect": "non-scaling-stroke"},
                 s("title", {}, se.name)));
  });
  box.append(svg, h("div", {class: "legend"}, series.map((se, i) => h("span", {},
    h("i", {style: `background:${COLORS[i % COLORS.length]}`}), se.name))));
  return box;
}
