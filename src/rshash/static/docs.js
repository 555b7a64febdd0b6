// A small offline renderer of this server's OpenAPI schema (FastAPI's /docs would load Swagger UI from a CDN).
"use strict";

(function () {
  let spec = null;

  function el(tag, content, className) {
    const e = document.createElement(tag);
    if (content !== undefined && content !== null) e.textContent = String(content);
    if (className) e.className = className;
    return e;
  }

  function resolve(schema) {
    let s = schema || {};
    for (let i = 0; i < 10 && s.$ref; i++) {
      const parts = s.$ref.replace(/^#\//, "").split("/");
      s = parts.reduce((o, p) => (o ? o[p] : undefined), spec) || {};
    }
    return s;
  }

  function typeOf(schema) {
    const s = resolve(schema);
    if (s.anyOf) return s.anyOf.map(typeOf).filter((t) => t !== "null").join(" | ") + " (optional)";
    if (s.type === "array") return `array of ${typeOf(s.items)}`;
    if (schema && schema.$ref) return schema.$ref.split("/").pop();
    if (s.format === "binary") return "file";
    return s.type || "any";
  }

  function limits(schema) {
    const s = resolve(schema);
    const out = [];
    const sources = s.anyOf ? s.anyOf.map(resolve) : [s];
    for (const x of sources) {
      if (x.minimum !== undefined) out.push(`≥ ${x.minimum}`);
      if (x.maximum !== undefined) out.push(`≤ ${x.maximum}`);
    }
    if (s.default !== undefined && s.default !== null) out.push(`default ${JSON.stringify(s.default)}`);
    return out.join(", ");
  }

  function table(headers, rows) {
    const t = el("table");
    const head = el("tr");
    headers.forEach((h) => head.appendChild(el("th", h)));
    t.appendChild(head);
    for (const row of rows) {
      const tr = el("tr");
      row.forEach((cell, i) => tr.appendChild(el("td", cell, i === 0 ? "name" : "")));
      t.appendChild(tr);
    }
    return t;
  }

  function fields(schema) {
    const s = resolve(schema);
    const required = new Set(s.required || []);
    return Object.entries(s.properties || {}).map(([name, p]) => [
      name, typeOf(p), required.has(name) ? "yes" : "", [resolve(p).description || p.description || "", limits(p)]
        .filter(Boolean).join(" · "),
    ]);
  }

  function operation(path, method, op) {
    const box = el("section", null, "op");
    const h = el("h2");
    h.append(el("span", method.toUpperCase(), `method ${method.toUpperCase()}`), el("code", path));
    box.appendChild(h);
    if (op.summary) box.appendChild(el("p", op.summary));
    if (op.description && op.description !== op.summary) box.appendChild(el("p", op.description));
    if (op.parameters && op.parameters.length) {
      box.appendChild(el("h3", "Parameters"));
      box.appendChild(table(["name", "in", "type", "required", "notes"], op.parameters.map((p) => [
        p.name, p.in, typeOf(p.schema), p.required ? "yes" : "",
        [p.description || (p.schema && p.schema.description) || "", limits(p.schema)].filter(Boolean).join(" · "),
      ])));
    }
    const body = op.requestBody && op.requestBody.content;
    if (body) {
      for (const [type, media] of Object.entries(body)) {
        box.appendChild(el("h3", `Request body (${type})`));
        box.appendChild(table(["field", "type", "required", "notes"], fields(media.schema)));
      }
    }
    box.appendChild(el("h3", "Responses"));
    const rows = Object.entries(op.responses || {}).map(([code, r]) => {
      const json = r.content && r.content["application/json"];
      const shape = json && json.schema ? typeOf(json.schema) : Object.keys(r.content || {}).join(", ");
      return [code, r.description || "", shape];
    });
    box.appendChild(table(["status", "meaning", "body"], rows));
    return box;
  }

  function schemas() {
    const box = el("section", null, "op");
    box.appendChild(el("h2", "Response shapes"));
    for (const [name, s] of Object.entries((spec.components && spec.components.schemas) || {})) {
      if (/Error|^Body_/.test(name)) continue;
      box.appendChild(el("h3", name));
      box.appendChild(table(["field", "type", "required", "notes"], fields(s)));
    }
    box.appendChild(el("h3", "Errors"));
    box.appendChild(el("p", 'Every error is JSON {"detail": "a message for people"} with a 4xx status ' +
      "(5xx only for a server fault)."));
    return box;
  }

  fetch("/openapi.json")
    .then((r) => { if (!r.ok) throw new Error(`HTTP ${r.status}`); return r.json(); })
    .then((s) => {
      spec = s;
      document.getElementById("intro").textContent = `${s.info.title} ${s.info.version}: ${s.info.description || ""}`;
      const ops = document.getElementById("ops");
      for (const [path, methods] of Object.entries(s.paths)) {
        for (const [method, op] of Object.entries(methods)) ops.appendChild(operation(path, method, op));
      }
      ops.appendChild(schemas());
    })
    .catch((e) => {
      const box = document.getElementById("error");
      box.textContent = `Cannot load /openapi.json: ${e.message}`;
      box.hidden = false;
    });
})();
