// Overview: the cluster at a glance — resource use, nodes, what waits for
// resources, the autoscaler when one runs, and counts of actors and jobs.

import {h, fill, panel, table, badge, usage, bytes, amount, shortId, link} from "../dom.js";
import * as api from "../api.js";

function card(label, value, sub) {
  return h("div", {class: "card", dataset: {card: label}},
    h("div", {class: "label"}, label), h("div", {class: "value"}, value), sub ?? null);
}

function shape(resources) {
  return Object.entries(resources).map(([k, v]) => `${k}: ${amount(k, v)}`).join(", ");
}

function resourceCards(status) {
  const cards = [];
  for (const name of ["CPU", "GPU", "memory"]) {
    const u = status.usage[name];
    if (!u) continue;
    cards.push(card(name === "memory" ? "Memory (logical)" : name,
      `${amount(name, u[0])} used`, usage(u[0], u[1], v => amount(name, v))));
  }
  const stores = status.nodes.filter(n => n.object_store);
  const used = stores.reduce((a, n) => a + n.object_store.used, 0);
  const cap = stores.reduce((a, n) => a + n.object_store.capacity, 0);
  cards.push(card("Object store", bytes(used), usage(used, cap, bytes)));
  return cards;
}

function demandRows(demands) {
  const rows = [];
  for (const d of demands.tasks) {
    rows.push([shape(d.shape), `${d.count}+ pending tasks`, d.infeasible ? "infeasible" : ""]);
  }
  for (const g of demands.placement_groups) {
    rows.push([g.bundles.map(shape).join(" + "), `placement group (${g.strategy})`, ""]);
  }
  for (const r of demands.requested) rows.push([shape(r), "request_resources()", ""]);
  return rows;
}

export default {
  title: "Overview",
  mount(root) {
    const error = h("div");
    const cards = h("div", {class: "cards"});
    const nodes = h("div");
    const demands = h("div");
    const autoscaler = h("div");
    fill(root, h("h1", {}, "Cluster overview"), error, cards,
         panel("Nodes", nodes), panel("Resource demands", demands), autoscaler);
    return {
      async refresh() {
        const [status, actors, jobList] = await Promise.all([
          api.clusterStatus(), api.state("actors/summarize"), api.jobs()]);
        fill(error);
        const alive = status.nodes.filter(n => n.state === "ALIVE");
        const actorCounts = Object.values(actors.result.node_id_to_summary.cluster.summary)
          .reduce((acc, g) => acc + (g.state_counts.ALIVE ?? 0), 0);
        const running = jobList.filter(j => j.status === "RUNNING").length;
        fill(cards, card("Nodes", `${alive.length} alive`,
                         h("div", {class: "sub"}, `${status.nodes.length - alive.length} dead`)),
             resourceCards(status),
             card("Actors", `${actorCounts} alive`,
                  h("div", {class: "sub"}, `${actors.total} in all`)),
             card("Jobs", `${running} running`,
                  h("div", {class: "sub"}, `${jobList.length} in all`)));
        fill(nodes, table([
          ["Node", n => link(shortId(n.node_id), "nodes", {node_id: n.node_id}), {class: "mono"}],
          ["IP", n => n.node_ip],
          ["Role", n => n.is_head_node ? "head" : "worker"],
          ["State", n => badge(n.state)],
          ["CPU", n => n.resources_total.CPU === undefined ? "–" : usage(
            n.resources_total.CPU - (n.resources_available.CPU ?? 0), n.resources_total.CPU)],
          ["Object store", n => n.object_store
            ? usage(n.object_store.used, n.object_store.capacity, bytes) : "–"],
        ], status.nodes, {rowAttrs: n => ({dataset: {nodeId: n.node_id}})}));
        const rows = demandRows(status.demands);
        fill(demands, rows.length
          ? table([["Shape", r => r[0], {class: "mono"}], ["Demand", r => r[1]],
                   ["", r => r[2] ? badge("FAILED", "infeasible") : ""]], rows)
          : h("div", {class: "empty"}, "No resource demands: everything submitted has a place."));
        const a = status.autoscaler;
        fill(autoscaler, a ? panel(`Autoscaler (${a.cluster_name})`, table([
          ["Node type", n => n.node_type],
          ["Provider id", n => n.provider_node_id, {class: "mono"}],
          ["Status", n => badge(n.status)], ["Error", n => n.error ?? ""],
        ], [...a.nodes, ...a.failures], {empty: "No autoscaled nodes."})) : null);
      },
      showError(err) { fill(error, h("div", {class: "error-box"}, err.message)); },
    };
  },
};
