// The filter bar the list pages share: each field becomes a state-API filter
// (key = value) when it is not empty; changing one refreshes the page.

import {h} from "../dom.js";

/**
 * fields: [{key, label, options?: [values]}] -> {element, filters()}.
 * A field with options is a <select> (first option: any); else a text input.
 */
export function filterBar(fields, onChange, initial = {}) {
  const inputs = fields.map(f => {
    const input = f.options
      ? h("select", {name: f.key, onchange: onChange},
          h("option", {value: ""}, `${f.label}: any`),
          f.options.map(o => h("option", {value: o}, o)))
      : h("input", {name: f.key, placeholder: f.label, size: 18, oninput: debounce(onChange)});
    if (initial[f.key]) input.value = initial[f.key];
    return [f.key, input];
  });
  return {
    element: h("div", {class: "filters"}, inputs.map(([, el]) => el)),
    filters: () => inputs.filter(([, el]) => el.value.trim() !== "")
      .map(([key, el]) => [key, "=", el.value.trim()]),
  };
}

function debounce(fn, ms = 400) {
  let t = null;
  return () => { clearTimeout(t); t = setTimeout(fn, ms); };
}
