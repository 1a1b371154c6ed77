// The REST API as the page uses it: every call carries the bearer token
// (asked for on the first 401), and SSE is read with fetch() streaming because
// EventSource cannot send an Authorization header. URLs are relative to the
// page, so a path prefix in front of the facade (an Ingress at /whisper/) works.

const TOKEN_KEY = "whisperop.token";
let askToken = null;
let asking = null;

/** Register the function that asks the person for a token (returns a Promise<string>). */
export function onTokenNeeded(fn) { askToken = fn; }

function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

// One prompt at a time, however many requests got 401 together.
async function newToken(refused) {
  if (!askToken) throw new Error("unauthorized");
  if (!asking) {
    asking = askToken(refused ? "That token was refused. Enter a valid one." : "This server needs an access token.")
      .finally(() => { asking = null; });
  }
  const t = await asking;
  sessionStorage.setItem(TOKEN_KEY, t);
}

function authHeaders(headers) {
  const h = new Headers(headers || {});
  const t = token();
  if (t) h.set("Authorization", `Bearer ${t}`);
  return h;
}

/** fetch() with the token; on 401 asks for a new one and tries again. */
export async function api(path, init = {}) {
  for (;;) {
    const sent = token();
    const res = await fetch(path, { ...init, headers: authHeaders(init.headers) });
    if (res.status !== 401) return res;
    await newToken(Boolean(sent));
  }
}

export async function json(path, init) {
  const res = await api(path, init);
  const body = await res.json().catch(() => ({}));
  return { status: res.status, headers: res.headers, body };
}

/** POST /jobs with upload progress (XMLHttpRequest: fetch has no upload progress).
 *  ``onStart(abort)`` gets a function that stops the upload while its body is still being sent
 *  (and returns false once the whole body is out: the server may be accepting it). */
export async function submitJob(form, onProgress, onStart = () => {}) {
  for (;;) {
    const sent = token();
    const res = await new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      let bodySent = false;
      xhr.open("POST", "jobs");
      if (sent) xhr.setRequestHeader("Authorization", `Bearer ${sent}`);
      xhr.upload.onprogress = (e) => { if (e.lengthComputable) onProgress(e.loaded / e.total); };
      xhr.upload.onload = () => { bodySent = true; };
      xhr.onabort = () => reject(Object.assign(new Error("upload stopped"), { aborted: true }));
      onStart(() => { if (bodySent) return false; xhr.abort(); return true; });
      xhr.onload = () => {
        let body = {};
        try { body = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
        resolve({ status: xhr.status, retryAfter: Number(xhr.getResponseHeader("Retry-After")) || 0, body });
      };
      xhr.onerror = () => reject(new Error("network error while uploading"));
      xhr.send(form);
    });
    if (res.status !== 401) return res;
    await newToken(Boolean(sent));
  }
}

/** Server-Sent Events of ``path`` as {event, data} objects until the server ends the stream. */
export async function* sse(path, signal) {
  const res = await api(path, { signal, headers: { Accept: "text/event-stream" } });
  if (!res.ok) {
    const body = await res.json().catch(() => ({}));
    throw Object.assign(new Error(body.error || `HTTP ${res.status}`), { status: res.status });
  }
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, end);
      buf = buf.slice(end + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (!line || line.startsWith(":")) continue;  // keep-alive comment
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const val = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") event = val;
        else if (field === "data") data.push(val);
      }
      if (data.length) yield { event, data: JSON.parse(data.join("\n")) };
    }
  }
}
