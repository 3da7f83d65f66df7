// Jobs: every job the Jobs API knows (submitted ones and drivers), and one
// job's details with its live log output (#/jobs/<submission id>).

import {h, fill, panel, table, badge, duration, time, link} from "../dom.js";
import * as api from "../api.js";

function jobKey(job) { return job.submission_id ?? job.job_id; }

function jobDuration(job) {
  if (!job.start_time) return "–";
  return duration((job.end_time || Date.now()) - job.start_time);
}

function listView(root) {
  const body = h("div");
  fill(root, h("h1", {}, "Jobs"), panel(null, body));
  return {
    async refresh() {
      const jobs = (await api.jobs()).sort((a, b) => (b.start_time ?? 0) - (a.start_time ?? 0));
      fill(body, table([
        ["Job", j => j.submission_id ? link(j.submission_id, `jobs/${j.submission_id}`)
          : (j.job_id ?? "–"), {class: "mono"}],
        ["Type", j => j.type ?? "–"],
        ["Status", j => badge(j.status)],
        ["Entrypoint", j => j.entrypoint, {class: "mono"}],
        ["Started", j => time(j.start_time)],
        ["Duration", j => jobDuration(j), {num: true}],
        ["Message", j => j.message ?? ""],
      ], jobs, {empty: "No jobs yet. Submit one with `ember job submit -- python script.py`.",
                rowAttrs: j => ({dataset: {jobId: jobKey(j)}})}));
    },
  };
}

function detailView(root, id) {
  const info = h("div");
  const log = h("pre", {class: "log", id: "job-log"});
  fill(root, h("h1", {}, "Job ", h("span", {class: "mono"}, id)), link("← all jobs", "jobs"),
       h("div", {style: "height:12px"}), panel("Details", info), panel("Logs", log));
  let lastText = null;
  return {
    async refresh() {
      const jobs = await api.jobs();
      const job = jobs.find(j => jobKey(j) === id);
      if (!job) {
        fill(info, h("div", {class: "empty"}, `No job ${id} is known to the cluster.`));
        return;
      }
      const fields = [["Status", badge(job.status)], ["Entrypoint", job.entrypoint],
        ["Submission id", job.submission_id ?? "–"], ["Job id", job.job_id ?? "–"],
        ["Started", time(job.start_time)], ["Ended", time(job.end_time)],
        ["Duration", jobDuration(job)], ["Message", job.message ?? ""],
        ["Its work", job.job_id ? [link("tasks", "tasks", {job_id: job.job_id}), " · ",
                                   link("actors", "actors", {job_id: job.job_id})]
                                : "–"]];
      fill(info, h("dl", {class: "kv", dataset: {jobStatus: job.status}},
                   fields.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])));
      if (!job.submission_id) {
        log.textContent = "A driver's output goes to its own terminal; "
          + "only submitted jobs have logs here.";
        return;
      }
      const text = await api.jobLogs(job.submission_id);
      if (text !== lastText) {
        const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
        log.textContent = text || "(no output yet)";
        if (atBottom) log.scrollTop = log.scrollHeight;
        lastText = text;
      }
    },
  };
}

export default {
  title: "Jobs",
  mount(root, arg) { return arg ? detailView(root, arg) : listView(root); },
};
