// /docs (Swagger UI) and /redoc (ReDoc), both from files the facade serves.
// The OpenAPI document is fetched here, with the same bearer token as the
// page (asked for on 401), and handed to the viewer; Swagger UI's "Try it out"
// requests carry the token too.

import { json, onTokenNeeded } from "./api.js";

onTokenNeeded((reason) => {
  const t = window.prompt(`${reason}\nBearer token:`);
  return t ? Promise.resolve(t.trim()) : Promise.reject(new Error("no token given"));
});

const TOKEN_KEY = "whisperop.token";

async function start() {
  const el = document.getElementById("viewer");
  let res;
  try {
    res = await json("openapi.json");
  } catch (err) {
    res = { status: err.message, body: null };
  }
  if (res.status !== 200) {
    el.textContent = `Could not load /openapi.json (${res.status}). Reload the page to enter a token.`;
    return;
  }
  const body = res.body;
  if (document.body.dataset.viewer === "redoc") {
    window.Redoc.init(body, { hideDownloadButton: false }, el);
    return;
  }
  window.SwaggerUIBundle({
    spec: body,
    domNode: el,
    deepLinking: true,
    validatorUrl: null,  // would send the spec's URL to validator.swagger.io
    presets: [window.SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    requestInterceptor: (req) => {
      const t = sessionStorage.getItem(TOKEN_KEY);
      if (t) req.headers.Authorization = `Bearer ${t}`;
      return req;
    },
  });
}

start();
