// The single page: a hash router (#/page?params) and a poller. Each page module
// exports mount(root, params) -> {refresh}, builds its fixed parts (filters,
// containers) once, and refresh() redraws only the data, so typing in a filter
// is never interrupted by a poll.

import {h, fill} from "./dom.js";
import overview from "./pages/overview.js";
import jobs from "./pages/jobs.js";
import actors from "./pages/actors.js";
import tasks from "./pages/tasks.js";
import nodes from "./pages/nodes.js";
import logs from "./pages/logs.js";
import metrics from "./pages/metrics.js";

const PAGES = {overview, jobs, actors, tasks, nodes, logs, metrics};
const POLL_MS = 2000;

let current = null;   // {page, view, route}
let timer = null;
let generation = 0;   // a refresh of a page left behind must not draw

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, query] = raw.split("?");
  const [name, ...rest] = path.split("/");
  return {name: PAGES[name] ? name : "overview", arg: rest.join("/") || null,
          params: Object.fromEntries(new URLSearchParams(query || ""))};
}

function setStatus(text, isError) {
  const el = document.getElementById("status");
  el.textContent = text;
  el.className = isError ? "status error" : "status";
}

async function refresh() {
  clearTimeout(timer);
  const mine = generation;
  // A tab in the background asks nothing (the dashboard shares the head's CPUs);
  // the timer keeps ticking, so it is fresh within a poll of being shown again.
  if (current && !document.hidden) {
    try {
      await current.view.refresh();
      if (mine === generation) {
        setStatus(`updated ${new Date().toLocaleTimeString()}`, false);
        // Marks the page drawn from live data (tests and scripts wait for it).
        document.getElementById("page").dataset.loaded = current.route.name;
      }
    } catch (err) {
      if (mine === generation) {
        setStatus(err.message, true);
        current.view.showError?.(err);
      }
    }
  }
  if (mine === generation) timer = setTimeout(refresh, POLL_MS);
}

function route() {
  generation++;
  clearTimeout(timer);
  current?.view.unmount?.();
  const r = parseHash();
  for (const a of document.querySelectorAll("#nav a")) {
    a.classList.toggle("active", a.dataset.page === r.name);
  }
  const root = document.getElementById("page");
  delete root.dataset.loaded;
  fill(root);
  const page = PAGES[r.name];
  document.title = `${page.title} · ember`;
  const view = page.mount(root, r.arg, r.params);
  current = {page, view, route: r};
  refresh();
}

window.addEventListener("hashchange", route);
route();
