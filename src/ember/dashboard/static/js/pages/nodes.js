// Nodes: each node's resources, object store and, from the latest metrics
// sample, its CPU and memory use. #/nodes?node_id=... shows one node.

import {h, fill, panel, table, badge, usage, bytes, amount, shortId, time, link} from "../dom.js";
import * as api from "../api.js";

function resources(n) {
  return h("div", {}, Object.keys(n.resources_total).sort().map(name => h("div", {},
    h("span", {class: "muted"}, `${name} `),
    `${amount(name, n.resources_total[name] - (n.resources_available[name] ?? 0))} / `
    + amount(name, n.resources_total[name]))));
}

export default {
  title: "Nodes",
  mount(root, arg, params) {
    const body = h("div");
    const only = params.node_id;
    fill(root, h("h1", {}, only ? ["Node ", h("span", {class: "mono"}, shortId(only))] : "Nodes"),
         only ? link("← all nodes", "nodes") : null, panel(null, body));
    return {
      async refresh() {
        const [status, history] = await Promise.all([api.clusterStatus(),
                                                     api.state("metrics_history")]);
        const latest = history.samples.at(-1)?.nodes ?? {};
        const nodes = status.nodes.filter(n => !only || n.node_id === only);
        fill(body, table([
          ["Node id", n => shortId(n.node_id), {class: "mono"}],
          ["IP / host", n => [n.node_ip, h("div", {class: "muted"}, n.hostname)]],
          ["Role", n => n.is_head_node ? "head" : "worker"],
          ["State", n => [badge(n.state), n.draining ? badge("PENDING", "draining") : "",
                          n.death_reason ? h("div", {class: "muted"}, n.death_reason) : ""]],
          ["CPU use", n => latest[n.node_id]
            ? `${latest[n.node_id].cpu_percent.toFixed(0)}%` : "–", {num: true}],
          ["Memory", n => latest[n.node_id]
            ? usage(latest[n.node_id].mem_used, latest[n.node_id].mem_total, bytes) : "–"],
          ["Object store", n => n.object_store
            ? [usage(n.object_store.used, n.object_store.capacity, bytes),
               h("div", {class: "muted"}, `${n.object_store.num_objects} objects, `
                 + `${bytes(n.object_store.spilled_bytes)} spilled`)] : "–"],
          ["Resources (used / total)", resources],
          ["Started", n => time(n.start_time_ms)],
          ["Logs", n => n.state === "ALIVE" ? link("files", "logs", {node_id: n.node_id}) : "–"],
        ], nodes, {empty: only ? `No node ${only}.` : "No nodes.",
                   rowAttrs: n => ({dataset: {nodeId: n.node_id, state: n.state}})}));
      },
    };
  },
};
