// The modelapi playground: a page over the public HTTP API only (the same routes the SDK and curl
// use), so it works the same against one machine or a fleet behind a load balancer.
//
// - The API key comes from the URL fragment (#key=..., never sent to the server in a URL) or the
//   "API key" field, and is kept in localStorage. It travels only in Authorization headers. A key
//   from the fragment replaces a different stored key only after the user confirms it.
// - The form is generated from GET /v1/models/{id}/schema; the documented example (from
//   /openapi.json, which is public) and the schema's defaults fill it.
// - Status: GET .../status/stream (SSE read with fetch, so the key stays in a header) when the
//   server advertises one in /openapi.json, else polling GET .../status.
// - History: GET /v1/requests when advertised, merged with a local history (localStorage, per
//   key) that also keeps each request's form values.
//
// No build step and no dependencies: plain ES2020 modules. The other pages (Generations, Usage,
// API keys, Workers) are in pages.js, which gets what it needs from here.

import { initPages } from "./pages.js?v=2";

const STORE = "modelapi.playground.";
const TERMINAL = new Set(["completed", "failed", "cancelled"]);
const HISTORY_MAX = 50;
const IMAGE_RULE = /^(file_size_mb|width_pixels|height_pixels|width\/height)\s*(<=|>=|≤|≥|<|>)$/;
const OPS = {
  "<=": (a, b) => a <= b, "≤": (a, b) => a <= b, ">=": (a, b) => a >= b, "≥": (a, b) => a >= b,
  "<": (a, b) => a < b, ">": (a, b) => a > b,
};

const state = {
  key: null,
  models: [],             // [{model_id, random_weights, ...}] from GET /v1/models
  schemas: new Map(),     // model_id -> input_schema
  examples: {},           // model_id -> documented example body (from /openapi.json)
  features: { list: false, stream: false },
  modelId: null,
  fields: [],             // field controllers of the current form
  watch: null,            // {id, ctrl} of the request being watched
  view: null,             // request_id shown in Results
  serverList: [],         // items from GET /v1/requests (when the server has it)
  submitting: false,
};

// -- small DOM helpers -----------------------------------------------------------------------
const $ = (id) => document.getElementById(id);

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name in node && typeof value !== "string") node[name] = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const sleep = (ms, signal) => new Promise((resolve, reject) => {
  const t = setTimeout(resolve, ms);
  signal?.addEventListener("abort", () => { clearTimeout(t); reject(new DOMException("aborted", "AbortError")); }, { once: true });
});

function same(a, b) { return JSON.stringify(a) === JSON.stringify(b); }

function hashKey(key) { // FNV-1a: a storage name per key that does not contain the key
  let x = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) { x ^= key.charCodeAt(i); x = Math.imul(x, 0x01000193) >>> 0; }
  return x.toString(16).padStart(8, "0");
}

function load(name, fallback) {
  try { const v = localStorage.getItem(STORE + name); return v === null ? fallback : JSON.parse(v); } catch { return fallback; }
}
function save(name, value) {
  try { value === undefined ? localStorage.removeItem(STORE + name) : localStorage.setItem(STORE + name, JSON.stringify(value)); } catch { /* private mode */ }
}

// -- the API ---------------------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, body) {
    const message = (body && (body.error_message || body.detail)) || `HTTP ${status}`;
    super(typeof message === "string" ? message : `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
  }
}

const apiUrl = (path) => new URL(path, new URL(".", location.href)).toString();
const modelPath = (id) => "v1/models/" + id.split("/").map(encodeURIComponent).join("/");
const requestPath = (id, what) => `v1/requests/${encodeURIComponent(id)}/${what}`;

async function api(path, { method = "GET", body, signal, headers = {} } = {}) {
  const init = { method, signal, headers: { Accept: "application/json", ...headers } };
  if (state.key) init.headers.Authorization = `Bearer ${state.key}`;
  if (body instanceof FormData) init.body = body;
  else if (body !== undefined) { init.body = JSON.stringify(body); init.headers["Content-Type"] = "application/json"; }
  const resp = await fetch(apiUrl(path), init);
  let data = null;
  try { data = await resp.json(); } catch { /* empty or not JSON */ }
  if (!resp.ok) throw new ApiError(resp.status, data);
  return data;
}

function describe(err) {
  if (err instanceof ApiError) {
    if (err.status === 401) return `The API key was refused (${err.message.replace(/\.$/, "")}).`;
    if (err.status === 429) return `Too many requests: ${err.message}`;
    if (err.status === 403) return `Not allowed: ${err.message}`;
    if (err.status === 402) return `Out of budget: ${err.message}`;
    return err.message;
  }
  return `Could not reach the server (${err.message}).`;
}

// -- the key ---------------------------------------------------------------------------------
function keyFromFragment() {
  // Parsed by hand: URLSearchParams would turn a "+" in a key into a space.
  const parts = location.hash.replace(/^#/, "").split("&").filter(Boolean);
  const found = parts.find((p) => p.startsWith("key="));
  if (!found) return null;
  let key;
  try { key = decodeURIComponent(found.slice(4)); } catch { key = found.slice(4); }
  const rest = parts.filter((p) => p !== found).join("&");
  // Drop the key from the address bar and this history entry; it lives in localStorage now.
  history.replaceState(null, "", location.pathname + location.search + (rest ? "#" + rest : ""));
  return key.trim() || null;
}

function keyToUse(offered, current) {
  // A key from a link replaces a different stored key only when the user says so: a link could
  // otherwise silently switch this browser to someone else's account. The fragment is gone either way.
  if (!offered || !current || offered === current) return offered || current;
  const shown = (k) => (k.length > 16 ? `${k.slice(0, 12)}…` : k);
  const replace = confirm(`This link carries an API key (${shown(offered)}) that is not the one this browser uses `
    + `(${shown(current)}).\n\nUse the key from the link? Requests and history will then be that key's.`);
  return replace ? offered : current;
}

function setKey(key) {
  state.key = key || null;
  save("key", state.key || undefined);
  $("api-key").value = state.key || "";
  $("key-error").textContent = "";
}

// -- feature detection -----------------------------------------------------------------------
async function detectFeatures() {
  try {
    const resp = await fetch(apiUrl("openapi.json"));
    if (!resp.ok) return;
    const spec = await resp.json();
    const paths = spec.paths || {};
    state.features.list = Boolean(paths["/v1/requests"]?.get);
    state.features.stream = Object.keys(paths).some((p) => /^\/v1\/requests\/\{[^}]+\}\/status\/stream$/.test(p) && paths[p].get);
    for (const [path, ops] of Object.entries(paths)) {
      const m = /^\/v1\/models\/(.+)$/.exec(path);
      const example = ops.post?.requestBody?.content?.["application/json"]?.example;
      if (m && !path.includes("{") && example) state.examples[m[1]] = example;
    }
  } catch { /* no OpenAPI: polling, local history, schema defaults */ }
}

// -- models and the form ---------------------------------------------------------------------
async function loadModels() {
  const select = $("model");
  if (!state.key) {
    select.replaceChildren(h("option", { value: "", text: "Enter an API key first" }));
    select.disabled = true;
    $("fields").replaceChildren();
    state.fields = [];
    state.modelId = null;
    setFormEnabled(false);
    renderHistory();
    $("api-key").focus();
    return;
  }
  try {
    const { models } = await api("v1/models");
    state.models = models;
  } catch (err) {
    $("key-error").textContent = describe(err);
    select.replaceChildren(h("option", { value: "", text: "No models: check the API key" }));
    select.disabled = true;
    $("fields").replaceChildren();
    state.fields = [];
    state.modelId = null;
    setFormEnabled(false);
    return;
  }
  select.replaceChildren(...state.models.map((m) => h("option", { value: m.model_id, text: m.model_id })));
  select.disabled = false;
  $("random-notice").hidden = !state.models.some((m) => m.random_weights === true);
  // All schemas at once (small): switching models is then instant, and the first choice can be
  // a model that runs without reference images.
  await Promise.all(state.models.map((m) => schemaOf(m.model_id).catch(() => null)));
  const needsImages = (m) => {
    const schema = state.schemas.get(m.model_id);
    return !schema || (schema.required || []).some((name) => kindOf(name, schema.properties?.[name] || {}) === "images");
  };
  const wanted = load("model", null);
  const first = state.models.find((m) => m.model_id === wanted) || state.models.find((m) => !needsImages(m)) || state.models[0];
  if (first) await selectModel(first.model_id);
  refreshHistory();
}

async function schemaOf(modelId) {
  if (!state.schemas.has(modelId)) {
    const body = await api(`${modelPath(modelId)}/schema`);
    state.schemas.set(modelId, body.input_schema);
  }
  return state.schemas.get(modelId);
}

async function selectModel(modelId, values = null) {
  $("model").value = modelId;
  state.modelId = modelId;
  save("model", modelId);
  let schema;
  try {
    schema = await schemaOf(modelId);
  } catch (err) {
    $("form-error").textContent = describe(err);
    return;
  }
  if (state.modelId !== modelId) return; // another model was picked meanwhile
  renderForm(schema, values ?? { ...defaults(schema), ...(state.examples[modelId] || {}) });
  setFormEnabled(true);
  refreshCode();
}

function defaults(schema) {
  const out = {};
  for (const [name, prop] of Object.entries(schema.properties || {})) if ("default" in prop) out[name] = prop.default;
  return out;
}

function setFormEnabled(on) {
  for (const id of ["run", "copy-curl", "copy-python"]) $(id).disabled = !on;
}

function kindOf(name, prop) {
  if (prop.type === "array" && prop.items?.format === "image_uri") return "images";
  if (Array.isArray(prop.enum)) return "enum";
  if (prop.type === "boolean") return "boolean";
  if (prop.type === "integer" || prop.type === "number" || prop.type === "float") return "number";
  if (prop.type === "string") return (prop.maxLength || 0) > 120 || /prompt|text/i.test(name) ? "textarea" : "text";
  return "json";
}

function renderForm(schema, values) {
  const container = $("fields");
  container.replaceChildren();
  state.fields = [];
  $("form-error").textContent = "";
  const required = new Set(schema.required || []);
  Object.entries(schema.properties || {}).forEach(([name, prop], index) => {
    const field = makeField(name, prop, required.has(name), `f${index}`);
    field.set(name in values ? values[name] : undefined);
    state.fields.push(field);
    container.append(field.node);
  });
}

function helpText(name, prop, isRequired, extra) {
  const sentence = (text) => (/[.!?'"]$/.test(text) ? text : text + ".");
  const parts = [];
  if (isRequired) parts.push("Required.");
  if (prop.title && prop.title !== name) parts.push(prop.description ? prop.title + " —" : sentence(prop.title));
  if (prop.description) parts.push(sentence(prop.description.trim()));
  if (extra) parts.push(extra);
  return parts.join(" ");
}

function makeField(name, prop, isRequired, id) {
  const kind = kindOf(name, prop);
  const helpId = `${id}-help`, errId = `${id}-err`;
  const error = h("p", { id: errId, class: "error", "aria-live": "polite" });
  const field = { name, prop, kind, required: isRequired, hasDefault: "default" in prop, error, id };

  const showErrors = (messages, source = "browser") => {
    error.textContent = messages.join(" ");
    error.dataset.source = messages.length ? source : "";
    field.control?.setAttribute("aria-invalid", messages.length ? "true" : "false");
    field.node.classList.toggle("invalid", messages.length > 0);
  };
  field.showErrors = showErrors;
  field.check = () => { const m = field.validate(); showErrors(m); return m; };

  if (kind === "images") return makeImagesField(field, helpId, errId);

  let control, extra = "";
  const describedBy = `${helpId} ${errId}`;
  if (kind === "enum") {
    control = h("select", { id, name, "aria-describedby": describedBy },
      prop.enum.map((v) => h("option", { value: String(v), text: String(v) })));
    field.get = () => {
      const raw = control.value;
      const hit = prop.enum.find((v) => String(v) === raw);
      return hit === undefined ? raw : hit;
    };
    field.set = (v) => { control.value = v === undefined ? String(prop.default ?? prop.enum[0]) : String(v); };
    field.validate = () => [];
  } else if (kind === "boolean") {
    control = h("input", { id, name, type: "checkbox", "aria-describedby": describedBy });
    field.get = () => control.checked;
    field.set = (v) => { control.checked = Boolean(v ?? prop.default); };
    field.validate = () => [];
  } else if (kind === "number") {
    const integer = prop.type === "integer";
    control = h("input", {
      id, name, type: "number", inputmode: integer ? "numeric" : "decimal", step: integer ? "1" : "any",
      min: prop.minimum ?? prop.exclusiveMinimum, max: prop.maximum ?? prop.exclusiveMaximum,
      placeholder: "default" in prop ? String(prop.default) : (name === "seed" ? "random" : ""),
      "aria-describedby": describedBy,
    });
    if ("minimum" in prop && "maximum" in prop) extra = `Between ${prop.minimum} and ${prop.maximum}.`;
    else if ("minimum" in prop) extra = `At least ${prop.minimum}.`;
    else if ("maximum" in prop) extra = `At most ${prop.maximum}.`;
    if (name === "seed" && !("default" in prop)) extra += (extra ? " " : "") + "Empty: a random seed.";
    field.get = () => {
      const raw = control.value.trim();
      if (raw === "") return control.validity.badInput ? NaN : undefined;
      return Number(raw);
    };
    field.set = (v) => { control.value = v === undefined || v === null ? "" : String(v); };
    field.validate = () => {
      const v = field.get();
      if (v === undefined) return [];
      if (Number.isNaN(v)) return [`Input should be of type ${integer ? "integer" : "number"}`];
      if (integer && !Number.isInteger(v)) return ["Input should be of type integer"];
      const out = [];
      if ("minimum" in prop && v < prop.minimum) out.push(`Input should be greater than or equal to ${prop.minimum}`);
      if ("maximum" in prop && v > prop.maximum) out.push(`Input should be less than or equal to ${prop.maximum}`);
      if ("exclusiveMinimum" in prop && v <= prop.exclusiveMinimum) out.push(`Input should be greater than ${prop.exclusiveMinimum}`);
      if ("exclusiveMaximum" in prop && v >= prop.exclusiveMaximum) out.push(`Input should be less than ${prop.exclusiveMaximum}`);
      return out;
    };
  } else if (kind === "textarea" || kind === "text") {
    // No maxlength attribute: it would silently cut pasted text; the counter and the check say it.
    control = kind === "textarea"
      ? h("textarea", { id, name, rows: 4, spellcheck: "true", "aria-describedby": describedBy })
      : h("input", { id, name, type: "text", "aria-describedby": describedBy });
    field.get = () => control.value;
    field.set = (v) => { control.value = v ?? ""; updateCounter(); };
    field.validate = () => {
      const v = control.value, out = [];
      if ("maxLength" in prop && [...v].length > prop.maxLength) out.push(`String should have at most ${prop.maxLength} characters`);
      if ("minLength" in prop && [...v].length < prop.minLength) out.push(`String should have at least ${prop.minLength} characters`);
      return out;
    };
  } else { // anything else: JSON text
    control = h("textarea", { id, name, rows: 3, class: "mono", "aria-describedby": describedBy });
    extra = "JSON.";
    field.get = () => {
      const raw = control.value.trim();
      if (raw === "") return undefined;
      try { return JSON.parse(raw); } catch { return raw; }
    };
    field.set = (v) => { control.value = v === undefined ? "" : JSON.stringify(v); };
    field.validate = () => {
      const raw = control.value.trim();
      if (raw === "") return [];
      try { JSON.parse(raw); return []; } catch { return ["Input should be valid JSON"]; }
    };
  }
  field.control = control;

  const counter = "maxLength" in prop ? h("span", { class: "counter", "aria-hidden": "true" }) : null;
  function updateCounter() {
    if (!counter) return;
    const n = [...control.value].length;
    counter.textContent = `${n} / ${prop.maxLength}`;
    counter.classList.toggle("over", n > prop.maxLength);
  }
  const onEdit = () => { updateCounter(); field.check(); };
  control.addEventListener(kind === "enum" || kind === "boolean" ? "change" : "input", onEdit);

  const help = h("p", { id: helpId, class: "help" }, helpText(name, prop, isRequired, extra));
  const label = h("label", { for: id, class: "field-name" }, name);
  if (kind === "boolean") {
    field.node = h("div", { class: "field check", "data-field": name },
      h("div", { class: "check-row" }, control, label), help, error);
  } else {
    field.node = h("div", { class: "field", "data-field": name },
      h("div", { class: "label-row" }, label, counter), control, help, error);
  }
  return field;
}

// -- image-list fields: files (picked, dropped or pasted) uploaded with POST /v1/files, or URLs --
function parseRules(prop) {
  return (prop.validations || []).map((rule) => {
    const m = IMAGE_RULE.exec(String(rule.validation_rule).trim());
    return m && { metric: m[1], op: m[2], value: Number(rule.validation_value), message: rule.validation_error };
  }).filter(Boolean);
}

function imageProblems(rules, item) {
  const metrics = {};
  if (item.bytes !== undefined) metrics.file_size_mb = item.bytes / (1024 * 1024);
  if (item.width) {
    metrics.width_pixels = item.width;
    metrics.height_pixels = item.height;
    metrics["width/height"] = item.height ? item.width / item.height : Infinity;
  }
  const out = [];
  for (const rule of rules) {
    if (!(rule.metric in metrics)) continue; // unknown until the server reads the image
    if (!OPS[rule.op](metrics[rule.metric], rule.value) && !out.includes(rule.message)) out.push(rule.message);
  }
  return out;
}

function makeImagesField(field, helpId, errId) {
  const { name, prop, id } = field;
  const rules = parseRules(prop);
  const items = []; // {url, thumb, label, status: "uploading"|"ready"|"error", problems, bytes, width, height}
  const legendId = `${id}-legend`, dropId = `${id}-drop`;
  const list = h("ul", { class: "thumbs", "aria-label": `${name}: images` });
  const fileInput = h("input", {
    id, type: "file", multiple: true, accept: "image/png,image/jpeg", class: "file",
    "aria-labelledby": `${legendId} ${dropId}`, "aria-describedby": `${helpId} ${errId}`,
  });
  const urlInput = h("input", {
    id: `${id}-url`, type: "url", inputmode: "url", placeholder: "https://…", "aria-label": `Image URL for ${name}`,
    "aria-describedby": `${helpId} ${errId}`,
  });
  const addButton = h("button", { type: "button", class: "secondary", text: "Add URL" });
  const drop = h("div", { class: "drop" },
    h("p", { id: dropId, class: "drop-text" }, "Drop or paste JPEG/PNG images here, or choose files"),
    fileInput);
  field.control = fileInput;

  const counterText = () => {
    const max = prop.maxItems ? ` (${prop.minItems || 0}–${prop.maxItems})` : "";
    return `${items.length} image${items.length === 1 ? "" : "s"}${max}`;
  };
  const counter = h("span", { class: "counter", "aria-hidden": "true" });

  function render() {
    queueMicrotask(refreshCode);
    list.replaceChildren(...items.map((item, i) => {
      const img = h("img", { alt: `${name} ${i + 1}: ${item.label}`, loading: "lazy", decoding: "async" });
      if (item.thumb) img.src = item.thumb;
      img.addEventListener("load", () => {
        if (item.width === undefined) { item.width = img.naturalWidth; item.height = img.naturalHeight; item.problems = [...item.problems, ...imageProblems(rules, item)]; render(); field.check(); }
      }, { once: true });
      img.addEventListener("error", () => { img.replaceWith(h("span", { class: "thumb-missing", text: "no preview" })); }, { once: true });
      const size = item.width ? `${item.width}×${item.height}` : "";
      const statusText = item.status === "uploading" ? "uploading…" : item.status === "error" ? "not uploaded"
        : item.problems.length ? `refused${size ? " · " + size : ""} (see below)` : size;
      return h("li", { class: `thumb ${item.status}${item.problems.length ? " refused" : ""}`, "data-status": item.status },
        h("div", { class: "thumb-img" }, img),
        h("div", { class: "thumb-meta" },
          h("span", { class: "thumb-name", title: item.url || item.label, text: item.label }),
          h("span", { class: "thumb-status", text: statusText })),
        h("button", {
          type: "button", class: "ghost remove", "aria-label": `Remove ${name} ${i + 1}`, text: "×",
          onclick: () => { items.splice(i, 1); if (item.objectUrl) URL.revokeObjectURL(item.objectUrl); render(); field.check(); },
        }));
    }));
    counter.textContent = counterText();
  }

  async function addFiles(files) {
    for (const file of files) {
      const item = { url: null, label: file.name || "pasted image", status: "uploading", problems: [], bytes: file.size };
      item.objectUrl = item.thumb = URL.createObjectURL(file);
      if (!/^image\/(png|jpeg)$/.test(file.type)) item.problems.push("Only JPEG and PNG images are supported");
      items.push(item);
      render();
      try {
        const form = new FormData();
        form.append("file", file, file.name || "image");
        const uploaded = await api("v1/files", { method: "POST", body: form });
        item.url = uploaded.url;
        item.status = "ready";
      } catch (err) {
        item.status = "error";
        const detail = Array.isArray(err.body?.detail) ? err.body.detail.map((d) => d.msg).join(" ") : describe(err);
        item.problems = [detail];
      }
      render();
      field.check();
    }
  }

  function addUrl() {
    const url = urlInput.value.trim();
    if (!url) return;
    items.push(urlItem(url));
    urlInput.value = "";
    render();
    field.check();
  }

  function urlItem(url) {
    const item = { url, label: url.split("/").pop() || url, status: "ready", problems: [] };
    item.thumb = null;
    thumbFor(url).then((src) => { item.thumb = src; render(); });
    return item;
  }

  addButton.addEventListener("click", addUrl);
  urlInput.addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); addUrl(); } });
  fileInput.addEventListener("change", () => { addFiles([...fileInput.files]); fileInput.value = ""; });
  for (const type of ["dragenter", "dragover"]) drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.add("over"); });
  for (const type of ["dragleave", "drop"]) drop.addEventListener(type, () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    const files = [...(e.dataTransfer?.files || [])];
    if (files.length) addFiles(files);
    else {
      const text = e.dataTransfer?.getData("text/uri-list") || e.dataTransfer?.getData("text/plain");
      if (text) { urlInput.value = text.split("\n")[0]; addUrl(); }
    }
  });
  field.onPaste = (e) => {
    const files = [...(e.clipboardData?.files || [])].filter((f) => f.type.startsWith("image/"));
    if (files.length) { e.preventDefault(); addFiles(files); }
  };
  drop.addEventListener("paste", field.onPaste);
  drop.tabIndex = -1;

  field.get = () => items.filter((i) => i.url).map((i) => i.url);
  field.set = (v) => {
    items.splice(0, items.length, ...(Array.isArray(v) ? v : []).map(urlItem));
    render();
  };
  field.pending = () => items.some((i) => i.status === "uploading");
  field.validate = () => {
    const n = items.filter((i) => i.url).length, out = [];
    if ("minItems" in prop && n < prop.minItems) out.push(`List should have at least ${prop.minItems} item${prop.minItems === 1 ? "" : "s"}`);
    if ("maxItems" in prop && n > prop.maxItems) out.push(`List should have at most ${prop.maxItems} items`);
    items.forEach((item, i) => { if (item.problems.length) out.push(`Image ${i + 1}: ${item.problems.join(" ")}`); });
    return out;
  };
  field.showItemError = (index, message) => { // index: among the URLs sent
    const item = items.filter((i) => i.url)[index];
    if (item) { item.problems = [message]; render(); }
  };

  const help = h("p", { id: helpId, class: "help" }, helpText(name, prop, field.required, "Pasted URLs are fetched by the server."));
  field.node = h("fieldset", { class: "field images", "data-field": name },
    h("legend", { id: legendId, class: "label-row" }, h("span", { class: "field-name", text: name }), counter),
    drop,
    h("div", { class: "url-row" }, urlInput, addButton),
    list, help, field.error);
  render();
  return field;
}

async function thumbFor(url) {
  // Files uploaded to this server need the key: read them with it and show a blob.
  try {
    const u = new URL(url, location.href);
    if (/\/v1\/files\/[^/]+$/.test(u.pathname)) {
      const resp = await fetch(apiUrl(u.pathname.replace(/^\//, "")), { headers: { Authorization: `Bearer ${state.key}` } });
      if (resp.ok) return URL.createObjectURL(await resp.blob());
      return null;
    }
  } catch { return null; }
  return url;
}

// -- the request body and its code -----------------------------------------------------------
function formValues() {
  const out = {};
  for (const f of state.fields) { const v = f.get(); if (v !== undefined) out[f.name] = v; }
  return out;
}

function requestBody() {
  // Required fields, and every field whose value differs from the schema's default: the
  // documented example comes out exactly as documented.
  const body = {};
  for (const f of state.fields) {
    const v = f.get();
    if (v === undefined) continue;
    if (f.required || !f.hasDefault || !same(v, f.prop.default)) body[f.name] = v;
  }
  return body;
}

function curlCode(modelId, body) {
  const json = JSON.stringify(body, null, 2).replace(/'/g, `'"'"'`);
  return [
    "curl --request POST \\",
    `--url "$BASE/${modelPath(modelId)}" \\`,
    '--header "Content-Type: application/json" \\',
    '--header "Authorization: Bearer $YOUR_API_TOKEN" \\',
    `--data '${json}'`,
  ].join("\n");
}

function pyLiteral(v, indent = "") {
  const next = indent + "    ";
  if (v === null) return "None";
  if (v === true) return "True";
  if (v === false) return "False";
  if (typeof v === "number") return Number.isFinite(v) ? String(v) : "None";
  if (typeof v === "string") return JSON.stringify(v);
  if (Array.isArray(v)) {
    if (!v.length) return "[]";
    return "[\n" + v.map((x) => next + pyLiteral(x, next) + ",\n").join("") + indent + "]";
  }
  const entries = Object.entries(v);
  if (!entries.length) return "{}";
  return "{\n" + entries.map(([k, x]) => `${next}${JSON.stringify(k)}: ${pyLiteral(x, next)},\n`).join("") + indent + "}";
}

function pythonCode(modelId, body) {
  return [
    "import os",
    "",
    "from modelapi import Client  # pip install modelapi",
    "",
    'client = Client(os.environ["BASE"], api_key=os.environ["YOUR_API_TOKEN"])',
    `result = client.run(${JSON.stringify(modelId)}, ${pyLiteral(body)})`,
    'print(result["output"]["images"])',
  ].join("\n");
}

function codeFor(kind) {
  const body = requestBody();
  return kind === "curl" ? curlCode(state.modelId, body) : pythonCode(state.modelId, body);
}

function refreshCode() { // the shown code follows the form
  const code = $("code");
  if (code.hidden || !code.dataset.kind) return;
  if (!state.modelId) { code.hidden = true; $("copy-status").textContent = ""; return; }
  const text = codeFor(code.dataset.kind);
  if (text === code.textContent) return;
  code.textContent = text;
  $("copy-status").textContent = `Updated with the form: press Copy as ${code.dataset.kind === "curl" ? "curl" : "Python"} to copy it.`;
}

async function copyCode(kind) {
  if (!state.modelId) return;
  const text = codeFor(kind);
  const code = $("code");
  code.textContent = text;
  code.hidden = false;
  code.dataset.kind = kind;
  let copied = false;
  try { await navigator.clipboard.writeText(text); copied = true; } catch { /* no clipboard permission */ }
  if (!copied) {
    const range = document.createRange();
    range.selectNodeContents(code);
    getSelection().removeAllRanges();
    getSelection().addRange(range);
    try { copied = document.execCommand("copy"); } catch { copied = false; }
  }
  $("copy-status").textContent = copied
    ? `Copied the ${kind === "curl" ? "curl command" : "Python code"}. Set BASE=${new URL(".", location.href).toString().replace(/\/$/, "")} and YOUR_API_TOKEN first.`
    : "Select the code below and copy it.";
}

// -- submit, watch, cancel -------------------------------------------------------------------
function clearErrors() {
  $("form-error").textContent = "";
  for (const f of state.fields) f.showErrors([]);
}

function showServerErrors(detail) {
  const general = [];
  for (const d of Array.isArray(detail) ? detail : []) {
    const loc = Array.isArray(d.loc) ? d.loc : [];
    const field = loc[0] === "body" ? state.fields.find((f) => f.name === loc[1]) : null;
    if (!field) { general.push(d.msg); continue; }
    const index = loc[2];
    const message = typeof index === "number" && field.kind === "images" ? `Image ${index + 1}: ${d.msg}` : d.msg;
    if (typeof index === "number" && field.showItemError) field.showItemError(index, d.msg);
    const current = field.error.dataset.source === "server" ? field.error.textContent + " " : "";
    field.showErrors([current + message].map((s) => s.trim()), "server");
  }
  const first = state.fields.find((f) => f.error.dataset.source === "server");
  (first?.control || first?.node)?.focus?.();
  return general;
}

async function submit(event) {
  event.preventDefault();
  if (!state.modelId || state.submitting) return; // one at a time (Run stays focusable: not disabled)
  clearErrors();
  if (state.fields.some((f) => f.pending?.())) { $("form-error").textContent = "Wait for the uploads to finish."; return; }
  // The browser's checks mirror the schema and show at once; the request is still sent, so the
  // server's own answer (authoritative) replaces them when it disagrees or says more.
  for (const f of state.fields) f.check();
  const modelId = state.modelId, values = formValues(), body = requestBody();
  state.submitting = true;
  $("run").setAttribute("aria-busy", "true");
  try {
    const submitted = await api(modelPath(modelId), { method: "POST", body });
    for (const f of state.fields) f.showErrors([]);
    const entry = { request_id: submitted.request_id, model_id: modelId, values, body, submitted_at: Date.now(), status: "in_queue" };
    addHistory(entry);
    openRequest(entry, { fresh: true }); // runs on: it shows the status panel first, synchronously
    if (matchMedia("(max-width: 959px)").matches) $("status-panel").scrollIntoView({ block: "start" });
  } catch (err) {
    if (err instanceof ApiError && err.status === 422) {
      for (const f of state.fields) f.showErrors([]);
      const general = showServerErrors(err.body.detail);
      $("form-error").textContent = general.length ? `The server refused the input: ${general.join(" ")}`
        : "The server refused the input: see the messages by the fields.";
    } else {
      $("form-error").textContent = describe(err);
      if (err.status === 401) $("key-error").textContent = describe(err);
    }
  } finally {
    state.submitting = false;
    $("run").removeAttribute("aria-busy");
  }
}

function stopWatching() {
  if (state.watch) state.watch.ctrl.abort();
  state.watch = null;
}

async function openRequest(entry, { fresh = false } = {}) {
  stopWatching();
  const ctrl = new AbortController();
  const watch = { id: entry.request_id, ctrl, entry, seenRunning: null };
  state.watch = watch;
  state.view = entry.request_id;
  $("status-panel").hidden = false;
  $("request-id").textContent = entry.request_id;
  clearResults(fresh ? "Waiting for the images…" : "Loading…");
  renderStatus({ status: entry.status || "in_queue" }, watch);
  try {
    let last = null;
    if (!TERMINAL.has(entry.status)) {
      if (state.features.stream) last = await streamStatus(watch).catch((e) => { if (e.name === "AbortError") throw e; return null; });
      if (!last || !TERMINAL.has(last.status)) last = await pollStatus(watch);
    }
    const result = await api(`${requestPath(entry.request_id, "result")}?include_cost=true`, { signal: ctrl.signal });
    if (state.watch !== watch) return;
    renderStatus(result, watch);
    renderResult(result, watch);
    updateHistory(entry.request_id, {
      status: result.status, image_count: result.output?.images?.length ?? 0,
      queued_s: watch.queued_s, ran_s: watch.ran_s,
    });
  } catch (err) {
    if (err.name === "AbortError") return;
    if (state.watch === watch) {
      $("status-text").textContent = describe(err);
      if (err.status === 404) updateHistory(entry.request_id, { status: "gone" });
      clearResults("");
    }
  } finally {
    if (state.watch === watch) state.watch = null;
  }
}

async function pollStatus(watch) {
  const started = Date.now();
  let failures = 0;
  for (;;) {
    let body;
    try {
      body = await api(requestPath(watch.id, "status"), { signal: watch.ctrl.signal });
      failures = 0;
    } catch (err) {
      // 4xx (but 429) is an answer; a lost connection, 429 or 5xx (e.g. 503 while the database
      // restarts) is retried with a growing pause.
      if (err.name === "AbortError" || (err instanceof ApiError && err.status < 500 && err.status !== 429)) throw err;
      failures += 1;
      $("status-text").textContent = `${describe(err)} Retrying…`;
      await sleep(Math.min(1000 * 2 ** failures, 10000), watch.ctrl.signal);
      continue;
    }
    renderStatus(body, watch);
    if (TERMINAL.has(body.status)) return body;
    await sleep(Date.now() - started < 20000 ? 250 : 1000, watch.ctrl.signal);
  }
}

async function streamStatus(watch) {
  // Server-Sent Events read with fetch (EventSource cannot send an Authorization header).
  const resp = await fetch(apiUrl(requestPath(watch.id, "status/stream")), {
    headers: { Authorization: `Bearer ${state.key}`, Accept: "text/event-stream" }, signal: watch.ctrl.signal,
  });
  if (!resp.ok || !resp.body) return null;
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "", last = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (value) buffer += value.replace(/\r\n?/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) continue;
        const [field, ...rest] = line.split(":");
        const text = rest.join(":").replace(/^ /, "");
        if (field === "event") event = text;
        else if (field === "data") data.push(text);
      }
      if (!data.length || (event !== "status" && event !== "message")) continue;
      try { last = JSON.parse(data.join("\n")); } catch { continue; }
      renderStatus(last, watch);
      if (TERMINAL.has(last.status)) { reader.cancel().catch(() => {}); return last; }
    }
    if (done) return last;
  }
}

const STATUS_WORDS = {
  in_queue: "In queue", in_progress: "Running", completed: "Done.", cancelled: "Taken off the queue: it will not run.",
  failed: "Failed.",
};

function renderStatus(body, watch) {
  if (state.watch !== watch) return;
  const bar = $("progress"), text = $("status-text"), cancel = $("cancel");
  const status = body.status;
  const now = Date.now();
  if (status === "in_progress" && watch.seenRunning === null) {
    watch.seenRunning = now;
    if (watch.entry.submitted_at) watch.queued_s = (now - watch.entry.submitted_at) / 1000;
  }
  if (TERMINAL.has(status) && watch.seenRunning !== null && watch.ran_s === undefined) watch.ran_s = (now - watch.seenRunning) / 1000;
  let words = STATUS_WORDS[status] || status, value = null;
  if (status === "in_queue") {
    const pos = body.queue_position;
    words += typeof pos === "number" ? (pos === 0 ? " — next" : ` — ${pos} ahead`) : "";
  } else if (status === "in_progress") {
    value = Math.round(100 * (body.progress || 0));
    words += ` — ${value}%`;
  } else if (status === "completed") value = 100;
  bar.dataset.state = status;
  if (value === null) { bar.removeAttribute("aria-valuenow"); bar.style.setProperty("--p", status === "in_queue" ? "100%" : "0%"); }
  else { bar.setAttribute("aria-valuenow", String(value)); bar.style.setProperty("--p", value + "%"); }
  bar.setAttribute("aria-valuetext", words);
  bar.hidden = TERMINAL.has(status) && status !== "completed";
  const badge = h("span", { class: `badge ${status}`, text: status });
  const note = status === "failed" && body.error?.message ? ` ${body.error.message}` : "";
  text.replaceChildren(badge, " ", words, note);
  if (watch.announced !== status) { // screen readers hear each new status once, not every poll
    watch.announced = status;
    $("status-announce").textContent = `${watch.id}: ${status.replace("_", " ")}`;
  }
  cancel.hidden = status !== "in_queue";
  cancel.disabled = false;
  if (body.partial_output) renderImages(imagesOf(body.partial_output), null, watch);
  updateHistory(watch.id, { status });
}

async function cancelActive() {
  const watch = state.watch;
  if (!watch) return;
  const button = $("cancel");
  button.disabled = true;
  try {
    const answer = await api(requestPath(watch.id, "cancel"), { method: "POST" });
    if (answer.outcome === "cancelled") {
      renderStatus({ status: "cancelled" }, watch);
      watch.ctrl.abort();
      state.watch = null;
      updateHistory(watch.id, { status: "cancelled" });
      clearResults("Cancelled: no images.");
    } else {
      $("status-text").append(" Too late to cancel: it is already running.");
    }
  } catch (err) {
    $("status-text").append(" " + describe(err));
    button.disabled = false;
  }
}

// -- results ---------------------------------------------------------------------------------
function imagesOf(output) {
  if (!output) return [];
  if (Array.isArray(output)) return output;
  if (Array.isArray(output.images)) return output.images;
  return output.image ? [output.image] : [];
}

function clearResults(message) {
  $("gallery").replaceChildren();
  $("result-summary").replaceChildren();
  $("results-empty").textContent = message;
  $("results-empty").hidden = !message;
}

function seconds(s) { return s < 10 ? `${s.toFixed(1)} s` : `${Math.round(s)} s`; }
function money(x) { const v = Number(x); return `$${v >= 0.01 || v === 0 ? v.toFixed(2) : String(Number(v.toFixed(6)))}`; }

function renderImages(urls, result, watch) {
  if (watch && state.watch !== watch) return;
  const gallery = $("gallery");
  const meta = result?.metadata || {};
  const n = urls.length;
  const total = result?.created_at && result?.finished_at ? (Date.parse(result.finished_at) - Date.parse(result.created_at)) / 1000 : null;
  if (n) $("results-empty").hidden = true;
  urls.forEach((url, i) => {
    let figure = gallery.children[i];
    if (figure && figure.dataset.url === url && figure.dataset.final === String(Boolean(result))) return;
    const prompt = Array.isArray(meta.prompts) ? meta.prompts[i] : null;
    const img = h("img", { src: url, alt: `output ${i + 1} of ${n}${prompt ? ": " + prompt : ""}`, decoding: "async" });
    const size = h("span", { class: "size" }, meta.width ? `${meta.width}×${meta.height}` : "");
    img.addEventListener("load", () => { if (!meta.width) size.textContent = `${img.naturalWidth}×${img.naturalHeight}`; figure.classList.add("loaded"); });
    const facts = [];
    if (result && typeof result.seed === "number") facts.push(h("span", { text: `seed ${result.seed + i}` }));
    facts.push(size);
    if (total !== null) facts.push(h("span", { text: `${seconds(total)} total` }));
    if (result && typeof result.cost === "number") facts.push(h("span", { text: `cost ${money(result.cost)} (request)` }));
    const name = `${result?.request_id || "output"}_${i}.png`;
    figure = h("figure", { class: "output", "data-url": url, "data-final": String(Boolean(result)) },
      h("button", { type: "button", class: "thumb-button", "aria-label": `Open output ${i + 1} full size`, onclick: () => openViewer(url, img.alt, name) }, img),
      h("figcaption", {}, h("span", { class: "facts" }, facts),
        h("a", { href: url, download: name, target: "_blank", rel: "noopener", class: "download", text: "Download", "aria-label": `Download output ${i + 1}` })));
    if (gallery.children[i]) gallery.children[i].replaceWith(figure); else gallery.append(figure);
  });
}

function renderResult(result, watch) {
  if (state.watch !== watch) return;
  const summary = $("result-summary");
  if (result.status === "completed") {
    const urls = imagesOf(result.output);
    renderImages(urls, result, watch);
    const meta = result.metadata || {};
    const parts = [`${urls.length} image${urls.length === 1 ? "" : "s"}`];
    if (typeof result.seed === "number") parts.push(`seed ${result.seed}`);
    if (meta.width) parts.push(`${meta.width}×${meta.height}`);
    if (result.created_at && result.finished_at) {
      let t = `${seconds((Date.parse(result.finished_at) - Date.parse(result.created_at)) / 1000)} in all`;
      if (watch.queued_s !== undefined && watch.ran_s >= 0.1) t += ` (queued ${seconds(watch.queued_s)}, ran ${seconds(watch.ran_s)})`;
      parts.push(t);
    }
    if (typeof result.cost === "number") parts.push(`cost ${money(result.cost)}`);
    if (meta.weights) parts.push(`weights: ${meta.weights}`);
    summary.textContent = parts.join(" · ");
    const random = meta.random_weights === true || String(meta.random_weights).toLowerCase() === "true";
    if (random) $("random-notice").hidden = false;
  } else if (result.status === "failed") {
    clearResults("");
    summary.textContent = `Failed: ${result.error?.message || "unknown error"}${result.error?.code ? ` (${result.error.code})` : ""}`;
  } else if (result.status === "cancelled") {
    clearResults("Cancelled: no images.");
  }
}

function openViewer(url, alt, name) {
  const dialog = $("viewer");
  const img = $("viewer-img");
  img.src = url;
  img.classList.remove("actual");
  $("viewer-zoom").setAttribute("aria-pressed", "false");
  img.alt = alt.replace(/^output/, "full-size output");
  $("viewer-download").href = url;
  $("viewer-download").setAttribute("download", name);
  dialog.showModal();
  $("viewer-close").focus();
}

// -- history ---------------------------------------------------------------------------------
const historyName = () => `history.${hashKey(state.key || "")}`;
const localHistory = () => load(historyName(), []);

function addHistory(entry) {
  const list = localHistory().filter((e) => e.request_id !== entry.request_id);
  list.unshift(entry);
  save(historyName(), list.slice(0, HISTORY_MAX));
  renderHistory();
}

function updateHistory(requestId, changes) {
  const list = localHistory();
  const entry = list.find((e) => e.request_id === requestId);
  if (entry) {
    const changed = Object.entries(changes).some(([k, v]) => v !== undefined && entry[k] !== v);
    if (!changed) return;
    for (const [k, v] of Object.entries(changes)) if (v !== undefined) entry[k] = v;
    save(historyName(), list);
  }
  const item = state.serverList.find((e) => e.request_id === requestId);
  if (item && changes.status) item.status = changes.status;
  renderHistory();
}

async function refreshHistory() {
  if (state.features.list && state.key) {
    try {
      const body = await api("v1/requests?limit=20");
      const items = Array.isArray(body) ? body : body.requests || body.data || body.items || [];
      state.serverList = items.filter((i) => i && i.request_id);
    } catch { state.serverList = []; }
  }
  renderHistory();
}

function mergedHistory() {
  const local = localHistory();
  const byId = new Map(local.map((e) => [e.request_id, { ...e }]));
  for (const item of state.serverList) {
    const known = byId.get(item.request_id);
    if (known) { known.status = item.status || known.status; continue; }
    byId.set(item.request_id, {
      request_id: item.request_id, model_id: item.model_id, status: item.status,
      submitted_at: item.created_at ? Date.parse(item.created_at) : 0, values: null,
    });
  }
  return [...byId.values()].sort((a, b) => (b.submitted_at || 0) - (a.submitted_at || 0));
}

function renderHistory() {
  const list = $("history-list");
  const entries = state.key ? mergedHistory() : [];
  list.replaceChildren(...entries.map((e) => {
    const when = e.submitted_at ? new Date(e.submitted_at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" }) : "";
    const short = (e.model_id || "").split("/").slice(1).join("/");
    const count = e.image_count ? ` · ${e.image_count} image${e.image_count === 1 ? "" : "s"}` : "";
    const prompt = e.values ? (e.values.text || e.values.prompt || "") : "(made elsewhere)";
    return h("li", { class: e.request_id === state.view ? "current" : "" },
      h("button", {
        type: "button", class: "history-item", "data-request-id": e.request_id,
        "aria-current": e.request_id === state.view ? "true" : undefined,
        onclick: () => reopen(e),
      },
        h("span", { class: "history-top" }, h("span", { class: "history-model", text: short || e.model_id }), h("span", { class: `badge ${e.status}`, text: e.status || "" })),
        h("span", { class: "history-prompt", text: String(prompt).slice(0, 90) }),
        h("span", { class: "history-when", text: `${when}${count} · ${e.request_id}` })));
  }));
  $("history-help").textContent = entries.length
    ? "This key's recent requests. Open one to see its form values and outputs."
    : "No requests yet with this key in this browser.";
}

async function reopen(entry) {
  if (state.models.some((m) => m.model_id === entry.model_id)) {
    const schema = await schemaOf(entry.model_id).catch(() => null);
    if (schema) {
      // Form values as they were sent; fields left at their defaults come back as defaults.
      await selectModel(entry.model_id, entry.values ? { ...defaults(schema), ...entry.values } : null);
      if (!entry.values) $("form-error").textContent = "This request was made elsewhere: its form values are not known here.";
    }
  }
  openRequest(entry);
  renderHistory();
  $("results").scrollIntoView({ block: "nearest" });
}

/** Re-run from Generations: the playground's form, filled with that request's inputs. */
async function rerun(modelId, inputs) {
  location.hash = "#/playground";
  if (!state.models.some((m) => m.model_id === modelId)) {
    $("form-error").textContent = `This server has no model ${modelId} any more.`;
    return;
  }
  const schema = await schemaOf(modelId).catch(() => null);
  if (!schema) return;
  await selectModel(modelId, { ...defaults(schema), ...inputs });
  $("form-error").textContent = "";
  $("run").focus();
}

// -- start -----------------------------------------------------------------------------------
let pages = null;

async function keyChanged() {
  await loadModels();
  await pages?.keyChanged();
}

async function start() {
  setKey(keyToUse(keyFromFragment(), load("key", null)));
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    setKey($("api-key").value.trim());
    state.schemas.clear();
    keyChanged();
  });
  $("forget-key").addEventListener("click", () => { setKey(null); state.serverList = []; renderHistory(); keyChanged(); });
  $("model").addEventListener("change", (e) => selectModel(e.target.value));
  $("run-form").addEventListener("submit", submit);
  $("fields").addEventListener("input", refreshCode);
  $("fields").addEventListener("change", refreshCode);
  $("copy-curl").addEventListener("click", () => copyCode("curl"));
  $("copy-python").addEventListener("click", () => copyCode("python"));
  $("cancel").addEventListener("click", cancelActive);
  $("clear-history").addEventListener("click", () => { save(historyName(), undefined); state.serverList = []; renderHistory(); });
  $("viewer-close").addEventListener("click", () => $("viewer").close());
  const zoom = () => {
    const actual = $("viewer-img").classList.toggle("actual");
    $("viewer-zoom").setAttribute("aria-pressed", String(actual));
  };
  $("viewer-zoom").addEventListener("click", zoom);
  $("viewer-img").addEventListener("click", zoom);
  $("viewer").addEventListener("click", (e) => { if (e.target === $("viewer")) $("viewer").close(); });
  document.addEventListener("paste", (e) => {
    const field = state.fields.find((f) => f.onPaste);
    if (field && !e.target.closest?.("input, textarea")) field.onPaste(e);
  });
  window.addEventListener("hashchange", () => {
    const key = keyToUse(keyFromFragment(), state.key);
    if (key && key !== state.key) { setKey(key); state.schemas.clear(); keyChanged(); }
  });
  pages = initPages({ api, h, describe, money, state, rerun, openViewer });
  await detectFeatures();
  document.documentElement.dataset.stream = String(state.features.stream);
  document.documentElement.dataset.list = String(state.features.list);
  await keyChanged();
  document.documentElement.dataset.ready = "true";
}

start();
