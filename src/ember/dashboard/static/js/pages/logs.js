// Logs: browse a node's log files and tail one; also the log of an actor, a
// task or a worker pid (#/logs?actor_id=...), as Ray's /api/v0/logs/file finds
// them. The shown file is re-read every poll; the view stays at the bottom
// while the reader is there, so new lines scroll in as with `tail -f`.

import {h, fill, panel, shortId, href} from "../dom.js";
import * as api from "../api.js";

const TARGETS = ["filename", "actor_id", "task_id", "pid"];

function describe(params) {
  if (params.filename) return params.filename;
  if (params.actor_id) return `actor ${shortId(params.actor_id)} (${params.suffix ?? "out"})`;
  if (params.task_id) return `task ${shortId(params.task_id)} (${params.suffix ?? "out"})`;
  if (params.pid) return `worker pid ${params.pid} (${params.suffix ?? "out"})`;
  return null;
}

export default {
  title: "Logs",
  mount(root, arg, params) {
    const nodeSelect = h("select", {name: "node", onchange: () => {
      location.hash = href("logs", {node_id: nodeSelect.value});
    }});
    const files = h("div", {class: "filelist"});
    const title = h("h2", {}, describe(params) ?? "Pick a file");
    const log = h("pre", {class: "log", id: "log-view"},
                  describe(params) ? "loading…" : "Choose a log file on the left.");
    fill(root, h("h1", {}, "Logs"), h("div", {class: "split"},
      panel("Files", nodeSelect, files),
      h("section", {class: "panel"}, title, log)));
    let lastText = null;
    let nodesShown = null;
    return {
      async refresh() {
        const nodes = (await api.list("nodes", {filters: [["state", "=", "ALIVE"]]})).result;
        const nodeId = params.node_id ?? (nodes.find(n => n.is_head_node) ?? nodes[0])?.node_id;
        const key = nodes.map(n => n.node_id).join();
        if (key !== nodesShown) {
          fill(nodeSelect, nodes.map(n => h("option", {value: n.node_id},
            `${n.is_head_node ? "head " : ""}${n.node_ip} · ${shortId(n.node_id)}`)));
          nodesShown = key;
        }
        if (nodeId) nodeSelect.value = nodeId;
        const listing = nodeId ? await api.state("logs", {node_id: nodeId}) : {};
        fill(files, Object.keys(listing).sort().map(category => [
          h("h3", {}, category),
          listing[category].map(name => h("a", {
            href: href("logs", {node_id: nodeId, filename: name}), dataset: {file: name},
            class: params.filename === name ? "active" : undefined}, name))]));
        if (!TARGETS.some(t => params[t])) return;
        const text = await api.logText({node_id: params.filename ? nodeId : params.node_id,
          filename: params.filename, actor_id: params.actor_id, task_id: params.task_id,
          attempt_number: params.attempt_number, pid: params.pid, suffix: params.suffix});
        if (text !== lastText) {
          const atBottom = lastText === null
            || log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
          log.textContent = text || "(empty)";
          if (atBottom) log.scrollTop = log.scrollHeight;
          lastText = text;
        }
      },
      showError(err) { log.textContent = err.message; },
    };
  },
};
