// The web app's other pages, over the public API only, with hash routing (#/generations, ...):
//
// - Generations: GET /v1/requests (newest first, cursor pages, model and status filters), each
//   request's GET .../result?include_cost=true&include_inputs=true; re-run fills the playground.
// - Usage: GET /v1/usage?group_by=day|model&from=&to= and GET /v1/keys/me (budget and rate).
// - API keys: the admin API (/v1/admin/keys...) for an admin key; GET /v1/keys/me for a user key.
// - Workers: GET /v1/admin/workers and /v1/admin/queue, refreshed every 2 s while shown.
//
// playground.js owns the key, the models and the form; it hands this module what it needs.

const PAGE_SIZE = 12;
const REFRESH_MS = 2000;
const TITLES = {
  playground: "playground", generations: "Generations", generation: "Generation", usage: "Usage",
  keys: "API keys", workers: "Workers and queue",
};
const ADMIN_ONLY = new Set(["workers"]);

let ctx;            // {api, h, describe, money, state, rerun, openViewer}
const app = {
  route: "playground",
  me: null,         // GET /v1/keys/me of the key in use (null: none or refused)
  timer: null,      // the Workers page's refresh
  gen: { cursors: [null], index: 0, next: null, seq: 0 },
  detail: null,     // the result shown on the detail page
  editing: null,    // the key being edited (null: creating)
  usageSeq: 0,
};

const $ = (id) => document.getElementById(id);

// -- formatting ------------------------------------------------------------------------------
function when(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString([], { dateStyle: "medium", timeStyle: "medium" });
}
function duration(s) {
  if (s === null || s === undefined) return "—";
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 90) return `${s.toFixed(1)} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}
const usd = (x) => (x === null || x === undefined ? "—" : `$${Number(x).toFixed(2)}`);
const num = (x) => (x === null || x === undefined ? "—" : String(x));
const shortModel = (id) => (id || "").split("/").slice(1).join("/") || id;
const isoDay = (d) => d.toISOString().slice(0, 10);
function addDays(day, n) { const d = new Date(day + "T00:00:00Z"); d.setUTCDate(d.getUTCDate() + n); return isoDay(d); }

function table(node, head, rows, foot = null) {
  const { h } = ctx;
  node.replaceChildren(
    h("thead", {}, h("tr", {}, head.map((c) => h("th", { scope: "col", text: c })))),
    h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c, i) => h("td", { "data-label": head[i] }, c))))));
  if (foot) node.append(h("tfoot", {}, h("tr", {}, foot.map((c, i) => h(i ? "td" : "th", { scope: i ? undefined : "row", "data-label": head[i] }, c)))));
}

function cards(node, items) {
  const { h } = ctx;
  node.replaceChildren(...items.map(([label, value, note, name]) => h("div", { class: "card", "data-card": name || label },
    h("span", { class: "card-label", text: label }), h("span", { class: "card-value", text: value }),
    note ? h("span", { class: "card-note", text: note }) : null)));
}

function fail(id, err) { $(id).textContent = ctx.describe(err); }

// -- routing ---------------------------------------------------------------------------------
function parseRoute() {
  const m = /^#\/([a-z]+)(?:\/(.+))?$/.exec(location.hash);
  if (!m) return location.hash ? null : { name: "playground" }; // other fragments (#main, #key=) keep the page
  if (m[1] === "generations" && m[2]) return { name: "generation", id: decodeURIComponent(m[2]) };
  return TITLES[m[1]] ? { name: m[1] } : { name: "playground" };
}

function route({ focus = true } = {}) {
  const r = parseRoute();
  if (!r) return;
  clearInterval(app.timer);
  app.timer = null;
  if (app.route === "keys" && r.name !== "keys") hideNewKey(); // shown once: gone when the page is left
  app.route = r.name;
  for (const node of document.querySelectorAll("[data-page]")) node.hidden = node.dataset.page !== r.name;
  const navName = r.name === "generation" ? "generations" : r.name;
  for (const a of document.querySelectorAll(".nav a")) {
    if (a.dataset.route === navName) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  $("page-title").textContent = TITLES[r.name];
  document.title = `${TITLES[r.name]} · modelapi`;
  if (focus && r.name !== "playground") document.querySelector(`[data-page="${r.name}"] h2`)?.focus();
  show(r);
}

function show(r) {
  if (r.name === "playground") return;
  const ready = ctx.state.key ? null : "Enter an API key above first.";
  const errorId = { generations: "gen-error", generation: "det-error", usage: "usage-error", keys: "keys-error", workers: "workers-error" }[r.name];
  $(errorId).textContent = ready || "";
  if (ready) return;
  if (r.name === "generations") showGenerations();
  else if (r.name === "generation") showDetail(r.id);
  else if (r.name === "usage") showUsage();
  else if (r.name === "keys") showKeys();
  else if (r.name === "workers") { showWorkers(); app.timer = setInterval(showWorkers, REFRESH_MS); }
}

/** The key changed (or was checked again): its role decides the admin pages; the page reloads. */
async function keyChanged() {
  app.me = null;
  hideNewKey();
  if (ctx.state.key) {
    try { app.me = await ctx.api("v1/keys/me"); } catch { app.me = null; }
  }
  const admin = app.me?.role === "admin";
  for (const node of document.querySelectorAll("[data-admin]")) node.hidden = !admin;
  document.documentElement.dataset.role = app.me?.role || "";
  app.gen = { cursors: [null], index: 0, next: null, seq: app.gen.seq + 1 };
  fillModelFilter();
  route({ focus: false });
}

function fillModelFilter() {
  const { h } = ctx;
  const select = $("gen-model"), current = select.value;
  select.replaceChildren(h("option", { value: "", text: "All models" }),
    ...ctx.state.models.map((m) => h("option", { value: m.model_id, text: m.model_id })));
  select.value = ctx.state.models.some((m) => m.model_id === current) ? current : "";
}

// -- Generations -----------------------------------------------------------------------------
function promptOf(result) {
  const inputs = result?.inputs || {};
  return inputs.text || inputs.prompt || result?.metadata?.prompts?.[0] || "";
}

async function showGenerations() {
  const { h, api } = ctx;
  const gen = app.gen, seq = ++gen.seq;
  const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if ($("gen-model").value) params.set("model", $("gen-model").value);
  if ($("gen-status").value) params.set("status", $("gen-status").value);
  if (gen.cursors[gen.index]) params.set("cursor", gen.cursors[gen.index]);
  $("gen-error").textContent = "";
  $("gen-grid").setAttribute("aria-busy", "true");
  let body;
  try {
    body = await api(`v1/requests?${params}`);
  } catch (err) {
    if (seq !== gen.seq) return;
    fail("gen-error", err);
    $("gen-grid").replaceChildren();
    $("gen-grid").removeAttribute("aria-busy");
    $("gen-empty").hidden = true;
    $("gen-newer").disabled = $("gen-older").disabled = true;
    $("gen-page").textContent = "";
    return;
  }
  if (seq !== gen.seq) return;
  const items = body.requests || [];
  gen.next = body.next_cursor;
  const filtered = $("gen-model").value || $("gen-status").value;
  $("gen-empty").hidden = items.length > 0;
  $("gen-empty").textContent = filtered ? "No requests match these filters." : "No requests with this key yet: run one in the Playground.";
  $("gen-newer").disabled = gen.index === 0;
  $("gen-older").disabled = !gen.next;
  $("gen-page").textContent = items.length ? `Page ${gen.index + 1}` : "";
  const tiles = items.map((item) => {
    const thumb = h("span", { class: "gen-thumb" }, h("span", { class: "gen-none", text: item.status === "completed" ? "…" : "no image" }));
    const prompt = h("span", { class: "gen-prompt", text: "" });
    const count = h("span", { class: "gen-count" });
    const li = h("li", { class: "gen-item", "data-request-id": item.request_id, "data-status": item.status },
      h("a", { class: "gen-tile", href: `#/generations/${encodeURIComponent(item.request_id)}` },
        thumb,
        h("span", { class: "gen-meta" },
          h("span", { class: "gen-top" }, h("span", { class: "gen-model", text: shortModel(item.model_id) }),
            h("span", { class: `badge ${item.status}`, text: item.status })),
          prompt,
          h("span", { class: "gen-when" }, when(item.created_at), count))));
    api(`v1/requests/${encodeURIComponent(item.request_id)}/result?include_inputs=true`).then((result) => {
      prompt.textContent = promptOf(result);
      const images = result.output?.images || [];
      if (images.length) {
        thumb.replaceChildren(h("img", { src: images[0], alt: "", loading: "lazy", decoding: "async" }));
        count.textContent = ` · ${images.length} image${images.length === 1 ? "" : "s"}`;
      }
    }).catch(() => { prompt.textContent = "(its result could not be read)"; });
    return li;
  });
  $("gen-grid").replaceChildren(...tiles);
  $("gen-grid").removeAttribute("aria-busy");
}

function pageTo(delta) {
  const gen = app.gen;
  if (delta > 0) {
    if (!gen.next) return;
    gen.cursors[gen.index + 1] = gen.next;
    gen.cursors.length = gen.index + 2;
  }
  gen.index = Math.max(0, gen.index + delta);
  showGenerations();
}

async function showDetail(id) {
  const { h, api, money } = ctx;
  $("det-id").textContent = id;
  $("det-rerun").disabled = true;
  const body = $("det-body");
  body.replaceChildren(h("p", { class: "help", text: "Loading…" }));
  app.detail = null;
  let r;
  try {
    r = await api(`v1/requests/${encodeURIComponent(id)}/result?include_cost=true&include_inputs=true`);
  } catch (err) {
    body.replaceChildren();
    fail("det-error", err);
    return;
  }
  if (app.route !== "generation" || $("det-id").textContent !== id) return;
  app.detail = r;
  const meta = r.metadata || {}, t = meta.timings || {};
  const images = r.output?.images || [];
  const modelId = r.model_id || "";
  const facts = [
    ["Status", h("span", { class: `badge ${r.status}`, text: r.status })],
    ["Model", modelId ? h("code", { text: modelId }) : "—"],
    ["Seed", num(r.seed)],
    ["Created", when(r.created_at)],
    ["Finished", when(r.finished_at)],
    ["Cost", typeof r.cost === "number" ? money(r.cost) : "—"],
  ];
  if (meta.width) facts.push(["Size", `${meta.width}×${meta.height}`]);
  if (Object.keys(t).length) {
    facts.push(["Timings", `queued ${duration(t.queue_s)} · fetch ${duration(t.fetch_s)} · inference ${duration(t.inference_s)} · `
      + `post ${duration(t.postprocess_s)} · total ${duration(t.total_s)}`]);
  }
  if (r.status === "failed") facts.push(["Error", `${r.error?.message || "unknown"}${r.error?.code ? ` (${r.error.code})` : ""}`]);
  const inputs = Object.entries(r.inputs || {});
  body.replaceChildren(
    images.length ? h("div", { class: "gallery det-gallery" }, images.map((url, i) => {
      const name = `${r.request_id}_${i}.${/\.png(\?|$)/.test(url) ? "png" : "jpg"}`;
      const alt = `output ${i + 1} of ${images.length}${meta.prompts?.[i] ? ": " + meta.prompts[i] : ""}`;
      return h("figure", { class: "output" },
        h("button", { type: "button", class: "thumb-button", "aria-label": `Open output ${i + 1} full size`, onclick: () => ctx.openViewer(url, alt, name) },
          h("img", { src: url, alt, decoding: "async" })),
        h("figcaption", {}, h("span", { class: "facts" }, `seed ${r.seed + i}`),
          h("a", { href: url, download: name, class: "download", text: "Download", "aria-label": `Download output ${i + 1}` })));
    })) : h("p", { class: "empty", text: r.status === "completed" ? "No images." : `No images: the request is ${r.status}.` }),
    h("div", { class: "detail-cols" },
      h("section", { class: "panel", "aria-labelledby": "det-facts-h" }, h("h3", { id: "det-facts-h", text: "Facts" }),
        h("dl", { class: "facts-list", id: "det-facts" }, facts.flatMap(([k, v]) => [h("dt", { text: k }), h("dd", { "data-fact": k }, v)]))),
      h("section", { class: "panel", "aria-labelledby": "det-prompts-h" }, h("h3", { id: "det-prompts-h", text: "Prompts" }),
        meta.prompts?.length ? h("ol", { class: "prompts", id: "det-prompts" }, meta.prompts.map((p) => h("li", { text: p })))
          : h("p", { class: "help", text: "None yet: the prompts are planned when the request runs." })),
      h("section", { class: "panel", "aria-labelledby": "det-inputs-h" }, h("h3", { id: "det-inputs-h", text: "Inputs" }),
        inputs.length ? h("dl", { class: "facts-list inputs", id: "det-inputs" }, inputs.flatMap(([k, v]) => [
          h("dt", {}, h("code", { text: k })),
          h("dd", { "data-input": k, class: "mono" }, typeof v === "string" ? v : JSON.stringify(v))]))
          : h("p", { class: "help", text: "Not known." }))));
  $("det-rerun").disabled = !modelId || !r.inputs;
}

// -- Usage -----------------------------------------------------------------------------------
async function showUsage() {
  const { api } = ctx;
  const seq = ++app.usageSeq;
  if (!$("usage-to").value) $("usage-to").value = isoDay(new Date());
  if (!$("usage-from").value) $("usage-from").value = addDays($("usage-to").value, -29);
  const from = $("usage-from").value, to = $("usage-to").value;
  $("usage-error").textContent = "";
  if (to < from) { $("usage-error").textContent = "“To” is before “From”."; return; }
  const range = `from=${from}&to=${addDays(to, 1)}`;
  let days, models, me;
  try {
    [days, models, me] = await Promise.all([
      api(`v1/usage?group_by=day&${range}`), api(`v1/usage?group_by=model&${range}`), api("v1/keys/me")]);
  } catch (err) {
    if (seq === app.usageSeq) fail("usage-error", err);
    return;
  }
  if (seq !== app.usageSeq) return;
  app.usage = { days, models, from, to };
  renderLimits(me);
  cards($("usage-totals"), [
    ["Requests", String(days.requests), `${from} to ${to}`, "requests"],
    ["Images", String(days.images), null, "images"],
    ["Cost", usd(days.cost_usd), `${days.billed_units} billed units`, "cost"],
  ]);
  renderChart();
  const rows = models.rows.map((r) => [h("code", { text: r.model_id }), String(r.requests), String(r.images), String(r.billed_units), usd(r.cost_usd)]);
  table($("usage-models"), ["Model", "Requests", "Images", "Billed units", "Cost"],
    rows.length ? rows : [["No completed requests in this range.", "", "", "", ""]],
    ["Total", String(models.requests), String(models.images), String(models.billed_units), usd(models.cost_usd)]);
  document.documentElement.dataset.usage = "ready";
}

function h(...args) { return ctx.h(...args); }

function renderLimits(me) {
  const budget = me.budget_usd === null
    ? ["Budget", "No budget", "This key has no spending limit.", "budget"]
    : ["Budget left", usd(me.budget_remaining_usd), `of ${usd(me.budget_usd)} per ${me.budget_period}; spent ${usd(me.budget_spent_usd)}, `
      + `reserved ${usd(me.budget_reserved_usd)}${me.budget_resets_at ? `; resets ${when(me.budget_resets_at)}` : ""}`, "budget"];
  const rate = me.rpm === null
    ? ["Rate", "Unlimited", "No submits-per-minute limit.", "rate"]
    : ["Rate left", `${me.rate_remaining} / ${me.rpm}`, `submits this minute; resets ${when(me.rate_resets_at)}`, "rate"];
  cards($("usage-limits"), [budget, rate,
    ["Queued · running now", `${me.queued} · ${me.running}`, `limits: ${me.max_queued ?? "server default"} queued, ${me.max_running ?? "server default"} running`, "now"]]);
}

function metric() { return document.querySelector("input[name=usage-metric]:checked")?.value || "requests"; }

function renderChart() {
  const data = app.usage;
  if (!data) return;
  const key = metric();
  const byDay = new Map(data.days.rows.map((r) => [r.day, r]));
  const days = [];
  for (let d = data.from; d <= data.to && days.length < 400; d = addDays(d, 1)) days.push(d);
  const values = days.map((d) => Number(byDay.get(d)?.[key] || 0));
  const label = { requests: "requests", images: "images", cost_usd: "USD" }[key];
  const fmt = (v) => (key === "cost_usd" ? usd(v) : String(v));
  const chart = $("usage-chart");
  const W = Math.max(260, chart.clientWidth || 600), H = 220, left = 48, bottom = 28, top = 12, right = 8;
  const max = Math.max(...values, 0) || 1;
  const slot = (W - left - right) / days.length, barW = Math.max(1, slot * 0.7);
  const NS = "http://www.w3.org/2000/svg";
  const el = (tag, attrs = {}, text) => {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  };
  const total = values.reduce((a, b) => a + b, 0);
  const svg = el("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img",
    "aria-label": `${label} by day, ${days[0]} to ${days[days.length - 1]}: ${fmt(key === "cost_usd" ? Number(total.toFixed(6)) : total)} in all` });
  const y = (v) => top + (H - top - bottom) * (1 - v / max);
  for (const v of [0, max / 2, max]) {
    if (key !== "cost_usd" && !Number.isInteger(v)) continue; // counts: whole-number lines only
    svg.append(el("line", { x1: left, x2: W - right, y1: y(v), y2: y(v), class: "grid" }));
    svg.append(el("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end", class: "axis" },
      key === "cost_usd" ? usd(v) : (Number.isInteger(v) ? String(v) : v.toFixed(1))));
  }
  days.forEach((d, i) => {
    const x = left + i * slot + (slot - barW) / 2, v = values[i];
    const bar = el("rect", { x, y: y(v), width: barW, height: Math.max(0, H - bottom - y(v)), class: "bar", "data-day": d, "data-value": v });
    bar.append(el("title", {}, `${d}: ${fmt(v)}`));
    svg.append(bar);
  });
  const ticks = days.length <= 7 ? days.map((_, i) => i) : [0, Math.floor((days.length - 1) / 2), days.length - 1];
  for (const i of ticks) {
    svg.append(el("text", { x: left + i * slot + slot / 2, y: H - 8, "text-anchor": i === 0 && days.length > 7 ? "start" : i === days.length - 1 && days.length > 7 ? "end" : "middle", class: "axis" }, days[i].slice(5)));
  }
  chart.replaceChildren(svg);
  if (total === 0) chart.append(h("p", { class: "chart-empty", text: "No completed requests in this range." }));
  table($("usage-days"), ["Day", "Requests", "Images", "Cost"],
    days.filter((d) => byDay.has(d)).map((d) => { const r = byDay.get(d); return [d, String(r.requests), String(r.images), usd(r.cost_usd)]; }));
}

// -- API keys --------------------------------------------------------------------------------
function keyState(k) {
  if (k.revoked_at) return "revoked";
  if (k.expires_at && Date.parse(k.expires_at) <= Date.now()) return "expired";
  return "active";
}

function limitsText(k) {
  const parts = [];
  parts.push(k.rpm === null ? "rpm unlimited" : `${k.rpm} rpm`);
  if (k.max_queued !== null) parts.push(`${k.max_queued} queued`);
  if (k.max_running !== null) parts.push(`${k.max_running} running`);
  parts.push(k.budget_usd === null ? "no budget" : `${usd(k.budget_usd)}/${k.budget_period} (${usd(k.budget_remaining_usd)} left)`);
  parts.push(k.models.length ? `models: ${k.models.map(shortModel).join(", ")}` : "all models");
  return parts.join(" · ");
}

async function showKeys() {
  const admin = app.me?.role === "admin";
  $("keys-admin").hidden = !admin;
  $("key-mine").hidden = admin;
  $("keys-error").textContent = "";
  if (!admin) return showMine();
  let list;
  try { list = await ctx.api("v1/admin/keys"); } catch (err) { fail("keys-error", err); return; }
  if (app.route !== "keys") return;
  const rows = list.keys.map((k) => {
    const st = keyState(k);
    return [
      h("span", { class: "key-name" }, h("strong", { text: k.name }), " ", h("code", { text: `${k.prefix}…` })),
      k.role,
      h("span", { class: `badge ${st === "active" ? "completed" : "failed"}`, text: st }),
      limitsText(k),
      when(k.last_used_at),
      `${when(k.created_at)}${k.expires_at ? ` · expires ${when(k.expires_at)}` : ""}`,
      h("span", { class: "row-actions" },
        h("button", { type: "button", class: "secondary", text: "Edit limits", "aria-label": `Edit limits of ${k.name}`, disabled: st === "revoked", onclick: () => openEditor(k) }),
        h("button", { type: "button", class: "danger", text: "Revoke", "aria-label": `Revoke ${k.name}`, disabled: st === "revoked", onclick: () => revoke(k) })),
    ];
  });
  table($("keys-table"), ["Name", "Role", "State", "Limits", "Last used", "Created", "Actions"], rows);
  [...$("keys-table").querySelectorAll("tbody tr")].forEach((tr, i) => { tr.dataset.keyId = list.keys[i].id; });
}

async function showMine() {
  let me;
  try { me = await ctx.api("v1/keys/me"); } catch (err) { fail("keys-error", err); $("key-mine").hidden = true; return; }
  const facts = [
    ["Name", me.name], ["Prefix", `${me.prefix}…`], ["Role", me.role], ["Created", when(me.created_at)],
    ["Expires", me.expires_at ? when(me.expires_at) : "never"],
    ["Models", me.models.length ? me.models.join(", ") : "all"],
    ["Submits per minute", me.rpm === null ? "unlimited" : `${me.rpm} (${me.rate_remaining} left this minute)`],
    ["Max queued", num(me.max_queued ?? "server default")], ["Max running", num(me.max_running ?? "server default")],
    ["Budget", me.budget_usd === null ? "none" : `${usd(me.budget_usd)} per ${me.budget_period}`],
    ["Budget left", me.budget_usd === null ? "—" : `${usd(me.budget_remaining_usd)} (spent ${usd(me.budget_spent_usd)}, reserved ${usd(me.budget_reserved_usd)})`],
  ];
  $("key-mine-facts").replaceChildren(...facts.flatMap(([k, v]) => [h("dt", { text: k }), h("dd", { "data-fact": k, text: v })]));
  $("keys-h").textContent = "Your API key";
}

function openEditor(k = null) {
  app.editing = k;
  hideNewKey();
  $("key-editor").hidden = false;
  $("key-editor-h").textContent = k ? `Change the limits of ${k.name}` : "Create a key";
  $("key-save").textContent = k ? "Save limits" : "Create";
  $("key-edit-error").textContent = "";
  $("k-name").value = k?.name || "";
  $("k-role").value = k?.role || "user";
  $("k-rpm").value = k?.rpm ?? "";
  $("k-max-queued").value = k?.max_queued ?? "";
  $("k-max-running").value = k?.max_running ?? "";
  $("k-budget").value = k?.budget_usd ?? "";
  $("k-period").value = k?.budget_period || "";
  $("k-expires").value = k?.expires_at ? k.expires_at.slice(0, 16) : "";
  const allowed = new Set(k?.models || []);
  $("k-models").replaceChildren(...ctx.state.models.map((m, i) => h("label", { class: "check-row" },
    h("input", { type: "checkbox", value: m.model_id, id: `k-model-${i}`, checked: allowed.has(m.model_id) }), m.model_id)));
  $("k-name").focus();
  $("key-editor").scrollIntoView({ block: "nearest" });
}

function editorFields() {
  const int = (id) => ($(id).value.trim() === "" ? null : Number($(id).value));
  const models = [...$("k-models").querySelectorAll("input:checked")].map((i) => i.value);
  return {
    name: $("k-name").value.trim() || null, role: $("k-role").value, rpm: int("k-rpm"), max_queued: int("k-max-queued"),
    max_running: int("k-max-running"), budget_usd: int("k-budget"), budget_period: $("k-period").value || null,
    expires_at: $("k-expires").value ? $("k-expires").value + ":00Z" : null, models,
  };
}

async function saveKey(event) {
  event.preventDefault();
  const k = app.editing, fields = editorFields();
  $("key-edit-error").textContent = "";
  let body = fields;
  if (k) { // only what changed; null removes a limit
    const was = { ...k, expires_at: k.expires_at ? k.expires_at.slice(0, 16) + ":00Z" : null };
    body = Object.fromEntries(Object.entries(fields).filter(([name, v]) => JSON.stringify(v) !== JSON.stringify(was[name])));
    if (!Object.keys(body).length) { $("key-editor").hidden = true; return; }
  } else {
    body = Object.fromEntries(Object.entries(fields).filter(([, v]) => v !== null && !(Array.isArray(v) && !v.length)));
  }
  $("key-save").disabled = true;
  try {
    const answer = await ctx.api(k ? `v1/admin/keys/${encodeURIComponent(k.id)}` : "v1/admin/keys", { method: k ? "PATCH" : "POST", body });
    $("key-editor").hidden = true;
    if (!k) showNewKey(answer);
    await showKeys();
    if (k) $("keys-error").textContent = "";
  } catch (err) {
    const detail = Array.isArray(err.body?.detail) ? err.body.detail.map((d) => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`).join(" ") : "";
    $("key-edit-error").textContent = detail ? `The server refused it: ${detail}` : ctx.describe(err);
  } finally {
    $("key-save").disabled = false;
  }
}

function showNewKey(created) {
  $("new-key").hidden = false;
  $("new-key-name").textContent = `“${created.name}”`;
  $("new-key-value").value = created.key;
  $("new-key-status").textContent = "";
  $("new-key-copy").focus();
}

function hideNewKey() { // the secret leaves the page: it cannot be shown again
  $("new-key-value").value = "";
  $("new-key").hidden = true;
}

async function copyNewKey() {
  const input = $("new-key-value");
  let copied = false;
  try { await navigator.clipboard.writeText(input.value); copied = true; } catch { /* no permission */ }
  if (!copied) { input.select(); try { copied = document.execCommand("copy"); } catch { copied = false; } }
  $("new-key-status").textContent = copied ? "Copied to the clipboard." : "Select the key and copy it.";
}

async function revoke(k) {
  if (!confirm(`Revoke the key “${k.name}” (${k.prefix}…)? Its calls are refused (401) from now on; this cannot be undone.`)) return;
  try {
    await ctx.api(`v1/admin/keys/${encodeURIComponent(k.id)}/revoke`, { method: "POST" });
  } catch (err) { fail("keys-error", err); return; }
  await showKeys();
}

// -- Workers and queue -----------------------------------------------------------------------
async function showWorkers() {
  let workers, queue;
  try {
    [workers, queue] = await Promise.all([ctx.api("v1/admin/workers"), ctx.api("v1/admin/queue")]);
  } catch (err) {
    if (app.route === "workers") fail("workers-error", err);
    return;
  }
  if (app.route !== "workers") return;
  $("workers-error").textContent = "";
  cards($("queue-cards"), [
    ["Queued", String(queue.queued), null, "queued"], ["Running", String(queue.running), null, "running"],
    ["Oldest wait", duration(queue.oldest_wait_s), queue.oldest_queued_at ? `since ${when(queue.oldest_queued_at)}` : "nothing queued", "oldest"],
    ["Workers", String(workers.workers.length), `${workers.workers.filter((w) => w.current_request).length} busy`, "workers"],
  ]);
  table($("queue-table"), ["Model", "Queued", "Running", "Oldest wait"],
    queue.models.map((m) => [h("code", { text: m.model_id }), String(m.queued), String(m.running), duration(m.oldest_wait_s)]));
  [...$("queue-table").querySelectorAll("tbody tr")].forEach((tr, i) => { tr.dataset.model = queue.models[i].model_id; });
  const rows = workers.workers.map((w) => [
    h("code", { text: w.worker_id }), `${w.host} · pid ${w.pid}`,
    [w.engine?.engine, w.engine?.device, w.engine?.weights && `weights: ${w.engine.weights}`].filter(Boolean).join(" · "),
    w.current_request ? h("code", { text: w.current_request }) : "idle",
    w.draining ? "draining" : "ready",
    `up ${duration(Date.now() / 1000 - w.started_at)}`, `${duration(w.heartbeat_age_s)} ago`,
  ]);
  table($("workers-table"), ["Worker", "Host", "Engine", "Runs", "State", "Started", "Heartbeat"],
    rows.length ? rows : [["No live workers: queued requests wait until one starts.", "", "", "", "", "", ""]]);
  [...$("workers-table").querySelectorAll("tbody tr")].forEach((tr, i) => { if (workers.workers[i]) tr.dataset.worker = workers.workers[i].worker_id; });
  $("workers-updated").textContent = `Updated ${new Date().toLocaleTimeString()} · every ${REFRESH_MS / 1000} s`;
}

// -- start -----------------------------------------------------------------------------------
export function initPages(context) {
  ctx = context;
  window.addEventListener("hashchange", () => route());
  $("gen-model").addEventListener("change", () => { app.gen = { cursors: [null], index: 0, next: null, seq: app.gen.seq }; showGenerations(); });
  $("gen-status").addEventListener("change", () => { app.gen = { cursors: [null], index: 0, next: null, seq: app.gen.seq }; showGenerations(); });
  $("gen-filters").addEventListener("submit", (e) => e.preventDefault());
  $("gen-newer").addEventListener("click", () => pageTo(-1));
  $("gen-older").addEventListener("click", () => pageTo(1));
  $("det-rerun").addEventListener("click", () => {
    const r = app.detail;
    if (r) ctx.rerun(r.model_id, r.inputs);
  });
  $("usage-range").addEventListener("submit", (e) => { e.preventDefault(); showUsage(); });
  for (const radio of document.querySelectorAll("input[name=usage-metric]")) radio.addEventListener("change", renderChart);
  let pending = false;
  window.addEventListener("resize", () => {
    if (pending || app.route !== "usage") return;
    pending = true;
    requestAnimationFrame(() => { pending = false; renderChart(); });
  });
  $("key-new").addEventListener("click", () => openEditor(null));
  $("key-cancel").addEventListener("click", () => { $("key-editor").hidden = true; });
  $("key-form-edit").addEventListener("submit", saveKey);
  $("new-key-copy").addEventListener("click", copyNewKey);
  $("new-key-done").addEventListener("click", hideNewKey);
  route({ focus: false });
  return { keyChanged };
}
