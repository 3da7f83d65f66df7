// Metrics: the dashboard's last ten minutes of samples (/api/v0/metrics_history),
// the values each node's /metrics exports: task attempts by state, object
// store use and CPU use per node.

import {h, fill, bytes, shortId} from "../dom.js";
import {lineChart} from "../chart.js";
import * as api from "../api.js";

function perNode(samples, value) {
  const series = new Map();
  for (const sample of samples) {
    for (const [id, node] of Object.entries(sample.nodes)) {
      if (node[value] === undefined) continue;
      if (!series.has(id)) series.set(id, {name: `${node.node_ip} · ${shortId(id)}`, points: []});
      series.get(id).points.push([sample.time, node[value]]);
    }
  }
  return [...series.values()];
}

function taskStates(samples) {
  const states = [...new Set(samples.flatMap(sm => Object.keys(sm.tasks)))].sort();
  return states.map(state => ({name: state,
    points: samples.map(sm => [sm.time, sm.tasks[state] ?? 0])}));
}

export default {
  title: "Metrics",
  mount(root) {
    const charts = h("div", {class: "charts"});
    const note = h("p", {class: "muted"});
    fill(root, h("h1", {}, "Metrics"), note, charts);
    return {
      async refresh() {
        const history = await api.state("metrics_history");
        const samples = history.samples;
        note.textContent = `The last ${samples.length} samples, one every ${history.interval_s} s `
          + "(the values each node's /metrics exports).";
        fill(charts,
          lineChart("Tasks by state", taskStates(samples), {format: v => String(Math.round(v))}),
          lineChart("Object store use", perNode(samples, "object_store_used"), {format: bytes}),
          lineChart("CPU use (%)", perNode(samples, "cpu_percent"),
                    {maxY: 100, format: v => `${v}%`}),
          lineChart("Memory use", perNode(samples, "mem_used"), {format: bytes}));
      },
    };
  },
};
