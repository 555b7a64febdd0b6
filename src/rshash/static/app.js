// rshash search page: plain JavaScript, no libraries, talks only to this server's /api.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const els = {
    stats: $("stats"), drop: $("drop-zone"), file: $("file-input"), preview: $("query-preview"),
    hint: $("drop-hint"), info: $("query-info"), k: $("k"), label: $("class-filter"), radius: $("radius"),
    status: $("status"), error: $("error"), empty: $("empty"), results: $("results"), controls: $("controls"),
  };
  let stats = null;        // /api/stats
  let lastQuery = null;    // {kind: "file", file} or {kind: "id", id, path, label}
  let previewUrl = null;   // object URL of an uploaded query, revoked when replaced
  let generation = 0;      // answers to superseded searches are dropped

  function text(tag, value, className) {
    const el = document.createElement(tag);
    el.textContent = value;
    if (className) el.className = className;
    return el;
  }

  function showError(message) {
    els.error.textContent = message;
    els.error.hidden = false;
  }

  function clearError() {
    els.error.hidden = true;
    els.error.textContent = "";
  }

  async function errorMessage(response) {
    try {
      const body = await response.json();
      if (body && typeof body.detail === "string") return body.detail;
    } catch (e) { /* not JSON */ }
    return `the server answered ${response.status} ${response.statusText}`;
  }

  // ------------------------------------------------------------------ index stats and controls

  async function loadStats() {
    try {
      const response = await fetch("/api/stats");
      if (!response.ok) throw new Error(await errorMessage(response));
      stats = await response.json();
    } catch (e) {
      els.stats.textContent = "index unavailable";
      showError(`Cannot load the index description: ${e.message}`);
      return;
    }
    const short = stats.fingerprint.slice(0, 12);
    els.stats.textContent = `${stats.images.toLocaleString()} images · ${stats.bits}-bit codes · ` +
      `${stats.kind} index · model ${short}`;
    els.stats.title = `index ${stats.index}, model fingerprint ${stats.fingerprint}`;
    for (const c of stats.classes) {
      const option = text("option", `${c.name} (${c.count})`);
      option.value = c.name;
      els.label.appendChild(option);
    }
    els.k.max = stats.k_max;
    els.radius.max = stats.bits;
    els.radius.placeholder = `any (0–${stats.bits})`;
    if (!stats.can_search_by_image) {
      els.file.disabled = true;
      els.hint.textContent = "Searching by image is unavailable (the model files are missing on the server). " +
        "Search by id still works: GET /api/search?id=N.";
    }
    if (stats.images === 0) {
      els.empty.replaceChildren(text("p", "The index is empty: add images with `rshash index` first."));
    }
  }

  function params() {
    const out = new URLSearchParams();
    const k = parseInt(els.k.value, 10);
    if (!Number.isNaN(k)) out.set("k", String(k));
    if (els.radius.value.trim() !== "") out.set("radius", els.radius.value.trim());
    if (els.label.value) out.set("label", els.label.value);
    return out;
  }

  // ------------------------------------------------------------------ searching

  function setPreview(src) {
    if (previewUrl && previewUrl !== src) URL.revokeObjectURL(previewUrl);
    previewUrl = src && src.startsWith("blob:") ? src : null;
    els.preview.src = src;
    els.preview.hidden = false;
    els.drop.classList.add("has-image");
  }

  function searchFile(file) {
    if (!file) return;
    if (stats && file.size > stats.max_upload_bytes) {
      const mb = (stats.max_upload_bytes / 1048576).toFixed(0);
      showError(`${file.name} is ${(file.size / 1048576).toFixed(1)} MB; the server accepts at most ${mb} MB.`);
      return;
    }
    lastQuery = { kind: "file", file };
    setPreview(URL.createObjectURL(file));  // TIFFs do not preview in most browsers; the alt text shows instead
    els.info.replaceChildren(text("span", `Uploaded: ${file.name}`));
    const body = new FormData();
    body.append("image", file, file.name);
    run(`upload:${file.name}`, () => fetch(`/api/search?${params()}`, { method: "POST", body }));
  }

  function searchId(id, path, label, thumbnail) {
    // a raster chip has no image file of its own: its thumbnail comes from the geo route the result names
    thumbnail = thumbnail || `/api/images/${id}/thumbnail`;
    lastQuery = { kind: "id", id, path, label, thumbnail };
    setPreview(thumbnail);
    els.info.replaceChildren(
      text("span", `Image #${id}`), text("span", path || "", "path"), text("span", label || "", "tag"));
    const p = params();
    p.set("id", String(id));
    run(`id:${id}`, () => fetch(`/api/search?${p}`));
  }

  function rerun() {
    if (!lastQuery) return;
    if (lastQuery.kind === "file") searchFile(lastQuery.file);
    else searchId(lastQuery.id, lastQuery.path, lastQuery.label, lastQuery.thumbnail);
  }

  async function run(queryKey, request) {
    const mine = ++generation;
    clearError();
    els.status.textContent = "searching…";
    document.body.classList.add("busy");
    let response;
    try {
      response = await request();
    } catch (e) {
      if (mine !== generation) return;
      document.body.classList.remove("busy");
      els.status.textContent = "";
      showError(`The server cannot be reached (${e.message}).`);
      return;
    }
    if (mine !== generation) return;
    document.body.classList.remove("busy");
    if (!response.ok) {
      els.status.textContent = "";
      showError(await errorMessage(response));
      els.results.replaceChildren();  // results of an earlier query would look like answers to this one
      els.results.dataset.query = `error:${queryKey}`;
      return;
    }
    render(queryKey, await response.json());
  }

  function distanceClass(distance) {
    const bits = stats ? stats.bits : 64;
    const r = distance / bits;
    return r <= 0.125 ? "near" : r <= 0.3 ? "mid" : "far";
  }

  function render(queryKey, answer) {
    els.empty.hidden = true;
    const n = answer.count;
    const filters = [];
    if (answer.label) filters.push(`class ${answer.label}`);
    if (answer.radius !== null) filters.push(`distance ≤ ${answer.radius}`);
    els.status.textContent = `${n} result${n === 1 ? "" : "s"}` +
      (filters.length ? ` (${filters.join(", ")})` : "") + ` in ${answer.query_ms.toFixed(1)} ms`;
    const items = answer.results.map((r) => {
      const li = document.createElement("li");
      const card = document.createElement("button");
      card.type = "button";
      card.className = "card";
      card.dataset.id = String(r.id);
      card.title = `${r.path}\nclick: search for images like this one`;
      const img = document.createElement("img");
      img.src = r.thumbnail_url;
      img.alt = r.path;
      img.loading = "lazy";
      img.width = stats ? stats.thumbnail_size : 128;
      img.height = img.width;
      const meta = document.createElement("div");
      meta.className = "meta";
      meta.append(text("span", `#${r.rank}`, "rank"), text("span", `d = ${r.distance}`, `dist ${distanceClass(r.distance)}`));
      card.append(img, meta, text("div", r.label || "unlabelled", "label"), text("div", r.path, "path"));
      card.addEventListener("click", () => searchId(r.id, r.path, r.label, r.thumbnail_url));
      li.appendChild(card);
      return li;
    });
    els.results.replaceChildren(...items);
    els.results.dataset.query = queryKey;
    if (n === 0) {
      els.results.replaceChildren(text("li", "No indexed image matches: try a larger max distance or another class.",
        "no-results"));
    }
  }

  // ------------------------------------------------------------------ input: picker, drag and drop

  els.file.addEventListener("change", () => {
    if (els.file.files.length) searchFile(els.file.files[0]);
    els.file.value = "";  // choosing the same file again still searches
  });
  els.drop.addEventListener("click", (e) => {
    if (e.target === els.file || e.target.closest("label")) return;
    if (!els.file.disabled) els.file.click();
  });
  els.drop.addEventListener("keydown", (e) => {
    if ((e.key === "Enter" || e.key === " ") && !els.file.disabled) { e.preventDefault(); els.file.click(); }
  });
  for (const type of ["dragenter", "dragover"]) {
    els.drop.addEventListener(type, (e) => { e.preventDefault(); els.drop.classList.add("dragging"); });
  }
  els.drop.addEventListener("dragleave", () => els.drop.classList.remove("dragging"));
  els.drop.addEventListener("drop", (e) => {
    e.preventDefault();
    els.drop.classList.remove("dragging");
    const files = e.dataTransfer && e.dataTransfer.files;
    if (!files || !files.length) { showError("Drop an image file (not a link or text)."); return; }
    if (els.file.disabled) { showError("Searching by image is unavailable on this server."); return; }
    searchFile(files[0]);
  });
  // A file dropped next to the zone would make the browser navigate away from the page.
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());

  els.controls.addEventListener("change", rerun);
  els.controls.addEventListener("submit", (e) => { e.preventDefault(); rerun(); });

  loadStats();
})();
