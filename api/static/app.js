// The page: submit audio, follow jobs (SSE), read and play transcripts, manage the model.
// Plain ES modules, no framework, no request to any host but this server.

import { api, json, onTokenNeeded, sse, submitJob } from "./api.js";
import { FORMATS, duration } from "./formats.js";
import { LANGUAGES } from "./languages.js";

const $ = (id) => document.getElementById(id);
const STORE_KEY = "whisperop.jobs";   // jobs this browser submitted: [{id, filename}], newest first
const STORE_MAX = 50;
const TERMINAL = new Set(["done", "failed", "cancelled"]);
const STATE_TEXT = { unloaded: "unloaded", loading: "loading…", waiting_for_gpu: "waiting for GPU", ready: "ready", unknown: "…" };

const entries = [];        // every job in the queue, newest first
let selected = null;       // the entry whose transcript is shown
let modelState = "unknown";
const modelWaiters = new Set();

// ── token prompt ────────────────────────────────────────────────────────────
onTokenNeeded((reason) => new Promise((resolve) => {
  const dialog = $("token-dialog");
  $("token-reason").textContent = reason;
  $("token-input").value = "";
  dialog.addEventListener("close", () => resolve($("token-input").value.trim()), { once: true });
  dialog.showModal();
  $("token-input").focus();
}));
$("token-dialog").addEventListener("cancel", (e) => e.preventDefault()); // no way on without a token

// ── model ───────────────────────────────────────────────────────────────────
function showModel(state, detail = "") {
  modelState = state;
  const badge = $("model-state");
  badge.dataset.state = state;
  badge.textContent = STATE_TEXT[state] || state;
  $("model-detail").textContent = detail;
  $("model-load").disabled = state === "ready" || state === "loading";
  $("model-unload").disabled = state === "unloaded";
  if (state === "ready") for (const wake of modelWaiters) wake();
}

function gpuDetail(s) {
  return s.vram_needed_mb != null ? `needs ${s.vram_needed_mb} MB, ${s.vram_free_mb} MB free; retry in ${s.retry_in_secs} s` : "";
}

async function refreshModel() {
  const { status, body } = await json("model/status");
  if (status === 200) showModel(body.state, body.state === "waiting_for_gpu" ? gpuDetail(body) : "");
}

async function followModel() {
  for (;;) {
    try {
      const stream = sse("model/events");
      const first = stream.next();          // the request is on its way: now read the state too
      await refreshModel();
      for (let r = await first; !r.done; r = await stream.next()) {
        const { event, data } = r.value;
        if (event === "model_loading") showModel("loading");
        else if (event === "model_ready") showModel("ready");
        else if (event === "model_unloaded") showModel("unloaded");
        else if (event === "model_waiting_for_gpu") showModel("waiting_for_gpu", gpuDetail(data));
      }
    } catch { /* server restarting or network gone: reconnect below */ }
    await sleep(2000);
  }
}

$("model-load").addEventListener("click", async () => {
  const { body } = await json("model/load", { method: "POST" });
  if (body.status === "already_ready") showModel("ready");
});
$("model-unload").addEventListener("click", () => json("model/unload", { method: "POST" }));

function untilModelReady(secs) {
  return new Promise((resolve) => {
    const wake = () => { clearTimeout(timer); modelWaiters.delete(wake); resolve(); };
    const timer = setTimeout(wake, Math.max(secs, 1) * 1000);
    modelWaiters.add(wake);
  });
}

// ── form ────────────────────────────────────────────────────────────────────
function fillLanguages() {
  let names;
  try { names = new Intl.DisplayNames(navigator.languages, { type: "language" }); } catch { names = null; }
  const opts = LANGUAGES.map((code) => ({ code, name: (names && names.of(code)) || code }))
    .sort((a, b) => a.name.localeCompare(b.name));
  for (const { code, name } of opts) $("language").append(new Option(`${name} (${code})`, code));
}

function chosenText(files) {
  if (!files.length) return "MP3, WAV, M4A, video files… several at once.";
  return files.length === 1 ? files[0].name : `${files.length} files: ${[...files].map((f) => f.name).join(", ")}`;
}

let pendingFiles = [];
function setFiles(files) {
  pendingFiles = [...files];
  $("chosen").textContent = chosenText(pendingFiles);
  $("form-error").textContent = "";
}

$("audio").addEventListener("change", (e) => setFiles(e.target.files));
const drop = $("drop");
for (const type of ["dragenter", "dragover"]) drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.add("over"); });
for (const type of ["dragleave", "drop"]) drop.addEventListener(type, () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => { e.preventDefault(); if (e.dataTransfer.files.length) setFiles(e.dataTransfer.files); });
// a file dropped beside the zone must not make the browser open it (and leave the page and its queue)
for (const type of ["dragover", "drop"]) window.addEventListener(type, (e) => e.preventDefault());

$("submit-form").addEventListener("submit", (e) => {
  e.preventDefault();
  if (!pendingFiles.length) { $("form-error").textContent = "Choose or drop at least one audio file first."; return; }
  const opts = { language: $("language").value, task: $("task").value };
  const batch = pendingFiles.map((file) => addEntry({ file, filename: file.name, status: "pending", ...opts }));
  setFiles([]);
  $("audio").value = "";
  sendAll(batch);
});

// Uploads go one after the other: parallel uploads would only share the same link.
async function sendAll(batch) {
  for (const entry of batch) if (!entry.gone) await send(entry);
}

async function send(entry) {
  for (;;) {
    const form = new FormData();
    form.append("audio", entry.file, entry.filename);
    form.append("task", entry.task);
    if (entry.language) form.append("language", entry.language);
    update(entry, { status: "uploading", progress: 0 });
    let res;
    try {
      res = await submitJob(form, (f) => update(entry, { progress: Math.round(f * 100) }), (stop) => { entry.stopUpload = stop; });
    } catch (err) {
      update(entry, err.aborted ? { status: "cancelled", error: "upload stopped; nothing was kept" } : { status: "error", error: err.message });
      return;
    } finally {
      entry.stopUpload = null;
    }
    if (res.status === 202) {
      update(entry, { id: res.body.job_id, status: "queued", progress: 0, error: "" });
      remember(entry);
      if (entry.gone) cancel(entry);  // cancelled after its last byte went out: the server has it, so cancel it there
      follow(entry);
      return;
    }
    if (entry.gone) return;
    if (res.status === 503) {
      // not accepted yet: keep the file here and send it again once the model is ready
      update(entry, { status: "waiting", error: `model ${STATE_TEXT[res.body.state] || res.body.state}; sending when ready` });
      // upload again only once it can be accepted (or to start a load again): a big file is not resent every 10 s
      do {
        await untilModelReady(res.retryAfter || 5);
        if (entry.gone) return;
        await refreshModel().catch(() => {});
      } while (modelState === "loading" || modelState === "waiting_for_gpu");
      continue;
    }
    update(entry, { status: "error", error: res.body.error || `HTTP ${res.status}` });
    return;
  }
}

// ── jobs ────────────────────────────────────────────────────────────────────
function remember(entry) {
  const list = loadRemembered().filter((j) => j.id !== entry.id);
  list.unshift({ id: entry.id, filename: entry.filename });
  localStorage.setItem(STORE_KEY, JSON.stringify(list.slice(0, STORE_MAX)));
}

function forget(id) {
  localStorage.setItem(STORE_KEY, JSON.stringify(loadRemembered().filter((j) => j.id !== id)));
}

function loadRemembered() {
  try { return JSON.parse(localStorage.getItem(STORE_KEY) || "[]"); } catch { return []; }
}

async function follow(entry) {
  while (!TERMINAL.has(entry.status)) {
    try {
      for await (const { event, data } of sse(`jobs/${entry.id}/stream`)) {
        if (event === "progress") update(entry, { status: "running", progress: data.percent });
        else if (event === "error") update(entry, { error: data.message });
        else if (event === "done") finish(entry, data.job);
      }
    } catch (err) {
      if (err.status === 404) { update(entry, { status: "error", error: "job no longer on the server" }); forget(entry.id); return; }
      await sleep(2000);  // stream broken: look again
    }
    if (!TERMINAL.has(entry.status)) {
      const { status, body } = await json(`jobs/${entry.id}`).catch(() => ({ status: 0, body: {} }));
      if (status === 200) (TERMINAL.has(body.status) ? finish(entry, body) : update(entry, { status: body.status, progress: body.progress }));
      if (!TERMINAL.has(entry.status)) await sleep(1000);  // never a tight loop on a stream that keeps closing
    }
  }
}

function finish(entry, job) {
  update(entry, { status: job.status, progress: job.progress, job, error: job.error || entry.error });
  if (job.status === "done" && (!selected || selected === entry || !selected.job)) select(entry);
}

async function cancel(entry) {
  if (!entry.id) {
    entry.gone = true;
    // still uploading: stop it; if the body is already out, the 202 will come and send() cancels the job
    if (entry.stopUpload && !entry.stopUpload()) { update(entry, { error: "cancelling…" }); return; }
    if (!entry.stopUpload) update(entry, { status: "cancelled", error: "not sent" });
    return;
  }
  const { status, body } = await json(`jobs/${entry.id}`, { method: "DELETE" });
  if (status === 200) finish(entry, body);
  else if (status === 409) update(entry, { error: "already finished" });
  else update(entry, { error: body.error || `HTTP ${status}` });
}

function addEntry(fields) {
  const entry = { id: null, progress: 0, error: "", job: null, ...fields };
  entries.unshift(entry);
  entry.el = jobElement(entry);
  $("queue").prepend(entry.el.root);
  $("queue-empty").hidden = true;
  update(entry, {});
  return entry;
}

function jobElement(entry) {
  const root = document.createElement("li");
  root.className = "job";
  const head = document.createElement("div");
  head.className = "job-head";
  const name = document.createElement("span");
  name.className = "job-name";
  name.textContent = entry.filename || entry.id;
  const status = document.createElement("span");
  status.className = "job-status";
  head.append(name, status);
  const bar = document.createElement("progress");
  bar.max = 100;
  bar.setAttribute("aria-label", `Progress of ${entry.filename || entry.id}`);
  const pct = document.createElement("span");
  pct.className = "job-pct";
  const row = document.createElement("div");
  row.className = "job-row";
  row.append(bar, pct);
  const note = document.createElement("p");
  note.className = "job-note";
  const actions = document.createElement("div");
  actions.className = "job-actions";
  const show = button("Show transcript", () => select(entry));
  const stop = button("Cancel", () => cancel(entry), "danger");
  actions.append(show, stop);
  root.append(head, row, note, actions);
  return { root, status, bar, pct, note, show, stop };
}

function button(text, onClick, cls = "") {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = text;
  if (cls) b.className = cls;
  b.addEventListener("click", onClick);
  return b;
}

function update(entry, fields) {
  Object.assign(entry, fields);
  const el = entry.el;
  el.root.dataset.status = entry.status;
  if (entry.id) el.root.dataset.jobId = entry.id;
  el.status.textContent = { pending: "waiting to upload", waiting: "waiting for model" }[entry.status] || entry.status;
  el.bar.value = entry.progress;
  el.pct.textContent = `${entry.progress} %`;
  el.note.textContent = entry.error || "";
  el.show.hidden = entry.status !== "done";
  el.stop.hidden = TERMINAL.has(entry.status) || entry.status === "error";
  el.root.classList.toggle("selected", entry === selected);
}

// ── transcript ──────────────────────────────────────────────────────────────
function select(entry) {
  const prev = selected;
  selected = entry;
  if (prev) update(prev, {});
  update(entry, {});
  const job = entry.job;
  $("transcript-empty").hidden = true;
  $("transcript-body").hidden = false;
  const lang = job.language ? ` · ${job.language}` : "";
  $("transcript-meta").textContent = `${entry.filename || job.id} · ${duration(job.duration_secs)}${lang} · ${job.segments.length} segments`;
  const player = $("player");
  if (entry.file) {
    entry.audioUrl = entry.audioUrl || URL.createObjectURL(entry.file);
    if (player.src !== entry.audioUrl) player.src = entry.audioUrl;
    player.hidden = false;
  } else {
    player.removeAttribute("src");
    player.hidden = true;  // audio stays in the browser that sent it; a reloaded page only has the text
  }
  $("legend").firstChild.textContent = entry.file
    ? "Click a word to play from there; "
    : "The audio stays in the tab that sent it, so words do not play here; ";
  renderSegments(job, Boolean(entry.file));
}

function renderSegments(job, playable) {
  const box = $("segments");
  box.replaceChildren();
  let first = true;
  for (const seg of job.segments) {
    const p = document.createElement("p");
    p.className = "segment";
    const ts = document.createElement("span");
    ts.className = "ts";
    ts.textContent = stamp(seg.start);
    p.append(ts);
    const words = seg.words.length ? seg.words : [{ text: seg.text, start: seg.start, end: seg.end, probability: 1 }];
    for (const w of words) {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "word";
      b.textContent = w.text.trim();
      b.dataset.start = w.start;
      b.dataset.end = w.end;
      b.title = `${w.start.toFixed(2)}–${w.end.toFixed(2)} s · p=${w.probability.toFixed(2)}`;
      if (w.probability < 0.5) b.classList.add("unsure");
      b.tabIndex = first ? 0 : -1;   // one tab stop; arrow keys move between words
      first = false;
      b.disabled = !playable;
      p.append(b, " ");
    }
    box.append(p);
  }
}

function stamp(secs) {
  const m = Math.floor(secs / 60);
  return `${m}:${(secs - m * 60).toFixed(1).padStart(4, "0")}`;
}

$("segments").addEventListener("click", (e) => {
  const w = e.target.closest(".word");
  if (!w) return;
  const player = $("player");
  player.currentTime = Number(w.dataset.start);
  player.play().catch(() => {});
});

$("segments").addEventListener("keydown", (e) => {
  if (!["ArrowRight", "ArrowLeft", "Home", "End"].includes(e.key)) return;
  const words = [...$("segments").querySelectorAll(".word")];
  const i = words.indexOf(document.activeElement);
  if (i < 0) return;
  const j = { ArrowRight: Math.min(i + 1, words.length - 1), ArrowLeft: Math.max(i - 1, 0), Home: 0, End: words.length - 1 }[e.key];
  words[i].tabIndex = -1;
  words[j].tabIndex = 0;
  words[j].focus();
  e.preventDefault();
});

$("player").addEventListener("timeupdate", () => {
  const t = $("player").currentTime;
  for (const w of $("segments").querySelectorAll(".word")) {
    w.classList.toggle("now", Number(w.dataset.start) <= t && t < Number(w.dataset.end));
  }
});

// The server's transcript file when it has a route for it (GET /jobs/{id}/transcript.{fmt}, issue 19);
// otherwise the same file built here from the Job's segments (formats.js).
async function transcriptFile(job, format) {
  const res = await api(`jobs/${job.id}/transcript.${format}`).catch(() => null);
  if (res && res.ok) return res.blob();
  const fmt = FORMATS[format];
  return new Blob([fmt.render(job)], { type: fmt.type });
}

for (const b of document.querySelectorAll(".downloads button")) {
  b.addEventListener("click", async () => {
    if (!selected || !selected.job) return;
    const entry = selected;
    const blob = await transcriptFile(entry.job, b.dataset.format);
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = `${(entry.filename || entry.job.id).replace(/\.[^.]+$/, "")}.${b.dataset.format}`;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  });
}

// ── start ───────────────────────────────────────────────────────────────────
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// The server's own list (GET /jobs, issue 19) where it has one; the jobs this browser sent in any case.
async function listed() {
  const res = await json("jobs?limit=50").catch(() => null);
  return res && res.status === 200 && Array.isArray(res.body.jobs) ? res.body.jobs.map(({ id, filename }) => ({ id, filename })) : [];
}

async function restore() {
  const server = await listed();
  const mine = loadRemembered().filter((j) => !server.some((s) => s.id === j.id));
  for (const { id, filename } of [...server, ...mine].reverse()) {
    const entry = addEntry({ id, filename, status: "queued" });
    json(`jobs/${id}`).then(({ status, body }) => {
      if (status === 404) { entry.el.root.remove(); forget(id); return; }
      if (status !== 200) return;
      if (TERMINAL.has(body.status)) finish(entry, body);
      else { update(entry, { status: body.status, progress: body.progress }); follow(entry); }
    });
  }
}

async function start() {
  fillLanguages();
  const { status, body } = await json("health");
  if (status === 200) {
    $("model-name").textContent = body.model;
    $("model").append(new Option(body.model, body.model));
  }
  followModel();
  // the event stream subscribes a moment after its request is answered: an event in between would be
  // missed, so the state is also read again now and then (cheap: one small GET)
  setInterval(() => refreshModel().catch(() => {}), 15000);
  restore();
}

start();
