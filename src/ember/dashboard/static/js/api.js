// The dashboard's JSON routes, as the pages read them. Ray's state routes wrap
// their answer as {result, msg, data: {result}}; the Jobs API answers bare JSON.

export class ApiError extends Error {}

async function request(url) {
  let response;
  try {
    response = await fetch(url, {cache: "no-store"});
  } catch (err) {
    throw new ApiError(`The dashboard did not answer (${url}): ${err.message}`);
  }
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = null; }
  if (!response.ok) {
    const why = body?.msg ?? body?.message ?? body?.detail ?? text.slice(0, 200);
    throw new ApiError(`${response.status} from ${url}: ${why}`);
  }
  return body;
}

/** A state route's data.result, with the query built from params. */
export async function state(path, params = {}) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    for (const v of [].concat(value)) if (v !== undefined && v !== "") query.append(key, v);
  }
  const qs = [...query].length ? `?${query}` : "";
  const body = await request(`/api/v0/${path}${qs}`);
  return body.data.result;
}

/** A list route's records, with filters as [[key, predicate, value]]. */
export async function list(resource, {filters = [], limit = 100, detail = false} = {}) {
  return state(resource, {
    limit, detail: detail ? "true" : undefined,
    filter_keys: filters.map(f => f[0]), filter_predicates: filters.map(f => f[1]),
    filter_values: filters.map(f => f[2]),
  });
}

export async function clusterStatus() {
  return (await request("/api/cluster_status")).data.clusterStatus;
}

export async function jobs() {
  return request("/api/jobs/");
}

export async function jobLogs(submissionId) {
  return (await request(`/api/jobs/${encodeURIComponent(submissionId)}/logs`)).logs;
}

/** A log file's last lines as text (Ray's /api/v0/logs/file with format=text). */
export async function logText(params) {
  const query = new URLSearchParams({format: "text", lines: "1000"});
  for (const [key, value] of Object.entries(params)) if (value) query.set(key, value);
  const url = `/api/v0/logs/file?${query}`;
  const response = await fetch(url, {cache: "no-store"});
  const text = await response.text();
  if (!response.ok) {
    let why = text;
    try { why = JSON.parse(text).msg; } catch { /* plain text */ }
    throw new ApiError(why);
  }
  return text;
}
