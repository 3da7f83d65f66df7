// Tasks: counts by function and state (the task-event store's summary), and
// the attempts themselves, filtered by state, function or job.

import {h, fill, panel, table, badge, shortId, link} from "../dom.js";
import * as api from "../api.js";
import {filterBar} from "./filters.js";

const STATES = ["PENDING_ARGS_AVAIL", "PENDING_NODE_ASSIGNMENT", "SUBMITTED_TO_WORKER",
                "RUNNING", "FINISHED", "FAILED"];

export default {
  title: "Tasks",
  mount(root, arg, params) {
    const summary = h("div");
    const list = h("div");
    const note = h("div", {class: "muted"});
    let view;
    const bar = filterBar([{key: "state", label: "State", options: STATES},
                           {key: "func_or_class_name", label: "Function"},
                           {key: "job_id", label: "Job id"}], () => view.refresh(), params);
    fill(root, h("h1", {}, "Tasks"), panel("Summary by function", summary),
         panel("Task attempts", bar.element, list, note));
    view = {
      async refresh() {
        const [sum, tasks] = await Promise.all([
          api.state("tasks/summarize"),
          api.list("tasks", {filters: bar.filters(), limit: 200})]);
        const groups = Object.values(sum.result.node_id_to_summary.cluster.summary)
          .sort((a, b) => a.func_or_class_name.localeCompare(b.func_or_class_name));
        fill(summary, table([
          ["Function", g => g.func_or_class_name, {class: "mono"}],
          ["Type", g => g.type],
          ["States", g => h("div", {class: "badges"}, Object.entries(g.state_counts)
            .map(([state, n]) => badge(state, n)))],
          ["Total", g => Object.values(g.state_counts).reduce((a, b) => a + b, 0), {num: true}],
        ], groups, {empty: "No tasks have run yet.",
                    rowAttrs: g => ({dataset: {func: g.func_or_class_name}})}));
        fill(list, table([
          ["Task id", t => t.task_id, {class: "mono id"}],
          ["Name", t => t.name, {class: "mono"}],
          ["Attempt", t => t.attempt_number, {num: true}],
          ["State", t => badge(t.state)],
          ["Type", t => t.type],
          ["Node", t => shortId(t.node_id), {class: "mono"}],
          ["PID", t => t.worker_pid ?? "–", {num: true}],
          ["Error", t => t.error_type ?? ""],
          ["Logs", t => t.worker_id
            ? link("out", "logs", {task_id: t.task_id, attempt_number: t.attempt_number}) : "–"],
        ], tasks.result, {empty: "No task attempts match.",
                          rowAttrs: t => ({dataset: {taskId: t.task_id, state: t.state}})}));
        note.textContent = tasks.warnings.join(" ");
      },
    };
    return view;
  },
};
