// Building the page from data, safely: every value goes in as text or as an
// attribute set from script, never as HTML, because names, entrypoints and log
// lines are user input. Also the formatting every page shares.

const SVG_NS = "http://www.w3.org/2000/svg";

function build(el, attrs, children) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.setAttribute("class", value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "style") el.setAttribute("style", value);
    else if (key in el && !(el instanceof SVGElement)) el[key] = value;
    else el.setAttribute(key, value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** An HTML element: h("td", {class: "mono"}, text, child, ...). */
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** An SVG element, the same way. */
export function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

/** The state names of tasks, actors, jobs and nodes, by the colour they get. */
const STATE_CLASS = {
  ALIVE: "ok", FINISHED: "ok", SUCCEEDED: "ok", CREATED: "ok",
  RUNNING: "run", SUBMITTED_TO_WORKER: "run", PENDING_CREATION: "warn", PENDING: "warn",
  PENDING_ARGS_AVAIL: "warn", PENDING_NODE_ASSIGNMENT: "warn", RESTARTING: "warn",
  DEPENDENCIES_UNREADY: "warn", RESCHEDULING: "warn", STOPPED: "",
  DEAD: "bad", FAILED: "bad", REMOVED: "",
};

export function badge(state, extra) {
  return h("span", {class: `badge ${STATE_CLASS[state] ?? ""}`, dataset: {state}},
           state, extra === undefined ? "" : ` ${extra}`);
}

/** A table of rows: columns are [header, row => cell content, options]. */
export function table(columns, rows, {empty = "None.", rowAttrs} = {}) {
  const head = h("tr", {}, columns.map(([title, , opts]) =>
    h("th", {class: opts?.num ? "num" : undefined}, title)));
  const body = rows.length
    ? rows.map(row => h("tr", rowAttrs ? rowAttrs(row) : {}, columns.map(([, cell, opts]) =>
        h("td", {class: opts?.class ?? (opts?.num ? "num" : undefined)}, cell(row)))))
    : [h("tr", {}, h("td", {class: "empty", colSpan: columns.length}, empty))];
  return h("table", {}, h("thead", {}, head), h("tbody", {}, body));
}

export function panel(title, ...children) {
  return h("section", {class: "panel"}, title ? h("h2", {}, title) : null, children);
}

/** Swap a container's content for new nodes (polling re-renders this way). */
export function fill(container, ...children) {
  container.replaceChildren(...children.flat(Infinity).filter(c => c != null));
}

export function bytes(n) {
  if (n === null || n === undefined || n < 0) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return i === 0 ? `${n} B` : `${n.toFixed(1)} ${units[i]}`;
}

export function amount(name, value) {
  return name === "memory" || name === "object_store_memory" ? bytes(value)
    : Number(value.toFixed(2)).toString();
}

export function duration(ms) {
  if (ms === null || ms === undefined || ms < 0) return "–";
  const sec = Math.round(ms / 1000);
  if (sec < 60) return `${sec}s`;
  if (sec < 3600) return `${Math.floor(sec / 60)}m ${sec % 60}s`;
  return `${Math.floor(sec / 3600)}h ${Math.floor(sec % 3600 / 60)}m`;
}

export function time(ms) {
  return ms ? new Date(ms).toLocaleString() : "–";
}

export function shortId(id) {
  return id ? id.slice(0, 12) : "–";
}

/** A usage bar with its text: used of total. */
export function usage(used, total, format = v => v) {
  const frac = total > 0 ? Math.min(1, used / total) : 0;
  return h("div", {},
    h("div", {class: "sub"}, `${format(used)} / ${format(total)}`),
    h("div", {class: frac > 0.8 ? "bar hot" : "bar"},
      h("span", {style: `width:${(frac * 100).toFixed(1)}%`})));
}

/** A link inside the app: route and query params. */
export function link(text, route, params) {
  return h("a", {href: href(route, params)}, text);
}

export function href(route, params) {
  const query = params ? new URLSearchParams(
    Object.entries(params).filter(([, v]) => v !== undefined && v !== null && v !== "")) : null;
  return `#/${route}${query && [...query].length ? "?" + query : ""}`;
}
