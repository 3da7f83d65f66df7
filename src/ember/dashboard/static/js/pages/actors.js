// Actors: every actor with its state, class, node, pid and restarts, and a link
// to the log of the worker it runs in.

import {h, fill, panel, table, badge, shortId, link, href} from "../dom.js";
import * as api from "../api.js";
import {filterBar} from "./filters.js";

function logLink(actor, suffix) {
  return h("a", {href: href("logs", {actor_id: actor.actor_id, suffix}), dataset: {log: suffix}},
           suffix);
}

const STATES = ["DEPENDENCIES_UNREADY", "PENDING_CREATION", "ALIVE", "RESTARTING", "DEAD"];

export default {
  title: "Actors",
  mount(root, arg, params) {
    const body = h("div");
    const count = h("span", {class: "muted"});
    let view;
    const bar = filterBar([{key: "state", label: "State", options: STATES},
                           {key: "class_name", label: "Class"}, {key: "job_id", label: "Job id"}],
                          () => view.refresh(), params);
    fill(root, h("h1", {}, "Actors ", count), bar.element, panel(null, body));
    view = {
      async refresh() {
        const reply = await api.list("actors", {filters: bar.filters(), limit: 1000, detail: true});
        count.textContent = `(${reply.num_after_truncation})`;
        fill(body, table([
          ["Actor id", a => shortId(a.actor_id), {class: "mono"}],
          ["Class", a => a.class_name],
          ["Name", a => a.name || "–"],
          ["State", a => badge(a.state)],
          ["Node", a => a.node_id ? link(shortId(a.node_id), "nodes", {node_id: a.node_id}) : "–",
           {class: "mono"}],
          ["PID", a => a.pid ?? "–", {num: true}],
          ["Restarts", a => a.num_restarts ?? 0, {num: true}],
          ["Job", a => a.job_id, {class: "mono"}],
          ["Death cause", a => a.death_cause?.error_message ?? ""],
          ["Logs", a => a.pid ? [logLink(a, "out"), " ", logLink(a, "err")] : "–"],
        ], reply.result, {empty: "No actors match.",
                          rowAttrs: a => ({dataset: {actorId: a.actor_id, state: a.state}})}));
      },
    };
    return view;
  },
};
