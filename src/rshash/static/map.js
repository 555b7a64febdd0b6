// rshash map page: indexed rasters as image overlays (warped by the server), click or shift-drag to search,
// hits as footprints coloured by distance, thumbnails in the side list, GeoJSON download; one acquisition
// date at a time; hits marked yes / no (kept across searches), refine, and "find all" above a threshold as
// one layer of merged areas. Offline: Leaflet is vendored and no tile layer is used.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const map = L.map("map", { boxZoom: false, zoomSnap: 0.25, maxZoom: 24, minZoom: 1, worldCopyJump: false });
  window.rshashMap = map; // for tests and the console
  map.attributionControl.setPrefix('Leaflet (BSD-2, vendored)');
  map.setView([0, 0], 2);

  const hitLayer = L.layerGroup().addTo(map);
  const queryLayer = L.layerGroup().addTo(map);
  const markLayer = L.layerGroup().addTo(map);
  const foundLayer = L.layerGroup().addTo(map);
  let hitShapes = new Map(); // id -> Leaflet layer
  let lastUrl = null;
  let seq = 0;
  let lastHits = new Map(); // id -> hit of the results shown
  let baseIds = []; // indexed ids the last search was made of (a point's chip, ids): 'yes' when refining
  const marks = new Map(); // id -> {yes: bool, footprint}
  const overlays = []; // {layer, outline, datetime}
  let foundScores = [];

  // Distance -> colour: green (nearest hit shown) to amber to red (farthest hit shown).
  function colour(distance, minDistance, maxDistance) {
    const t = maxDistance > minDistance ? Math.min(1, (distance - minDistance) / (maxDistance - minDistance)) : 0;
    const stops = [[26, 152, 80], [217, 162, 27], [215, 48, 39]];
    const [a, b, u] = t < 0.5 ? [stops[0], stops[1], t * 2] : [stops[1], stops[2], (t - 0.5) * 2];
    const c = a.map((v, i) => Math.round(v + (b[i] - v) * u));
    return `rgb(${c[0]}, ${c[1]}, ${c[2]})`;
  }

  function setStatus(text) { $("status").textContent = text; }
  function setError(text) {
    const e = $("error");
    e.hidden = !text;
    e.textContent = text || "";
  }

  // Longitudes: Leaflet lets the map pan round the world (lng past +-180); the server wants [-180, 180],
  // and a box whose west is east of its east crosses the antimeridian (drawn with east + 360).
  const wrapLon = (v) => L.Util.wrapNum(v, [-180, 180], true);
  const lonBox = (b) => (b.getEast() - b.getWest() >= 360 ? [-180, 180]
    : [wrapLon(b.getWest()), wrapLon(b.getEast())]);
  const eastOf = (w, e) => (e < w ? e + 360 : e);

  async function loadRasters() {
    const r = await fetch("/api/geo/rasters");
    if (!r.ok) throw new Error(`rasters: ${r.status}`);
    const data = await r.json();
    $("stats").textContent = `${data.rasters.length} raster${data.rasters.length === 1 ? "" : "s"}, ` +
      `${data.chips} chips indexed`;
    const dates = new Map(); // filter value -> label
    for (const raster of data.rasters) {
      if (raster.datetime) dates.set(dateFilter(raster), dateLabel(raster));
      if (!raster.overlay) continue;
      const [w, s, e, n] = raster.overlay.bounds;
      const layer = L.imageOverlay(raster.overlay.url, [[s, w], [n, eastOf(w, e)]],
        { opacity: 1, interactive: false, className: "raster" }).addTo(map);
      const [bw, bs, be, bn] = raster.bounds;
      const outline = L.rectangle([[bs, bw], [bn, eastOf(bw, be)]], { color: "#555", weight: 1, fill: false,
        interactive: false }).bindTooltip(raster.name + (raster.datetime ? ` (${dateLabel(raster)})` : "")).addTo(map);
      overlays.push({ layer, outline, filter: raster.datetime ? dateFilter(raster) : null });
    }
    const select = $("date");
    for (const [value, label] of [...dates.entries()].sort()) {
      const o = document.createElement("option");
      o.value = value;
      o.textContent = label;
      select.append(o);
    }
    if (data.bounds) {
      const [w, s, e, n] = data.bounds;
      map.fitBounds([[s, w], [n, eastOf(w, e)]]);
    }
    document.body.dataset.ready = "1";
  }

  // A raster's acquisition as a date filter (the day, or START/END of an interval) and as a label.
  const day = (iso) => iso.slice(0, 10);
  function dateFilter(r) { return r.datetime_end ? `${day(r.datetime)}/${day(r.datetime_end)}` : day(r.datetime); }
  function dateLabel(r) {
    if (!r.datetime_end) return day(r.datetime);
    const [a, b] = [day(r.datetime), day(r.datetime_end)];
    return a.endsWith("-01-01") && b.endsWith("-12-31") && a.slice(0, 4) === b.slice(0, 4) ? a.slice(0, 4) : `${a} – ${b}`;
  }

  // One acquisition at a time: the other dates' overlays are hidden and searches are filtered to it.
  $("date").addEventListener("change", () => {
    const value = $("date").value;
    for (const o of overlays) {
      const show = !value || o.filter === value;
      o.layer.setOpacity(show ? 1 : 0);
      o.outline.setStyle({ opacity: show ? 1 : 0.2 });
    }
    document.body.dataset.date = value;
  });

  function params(extra) {
    const p = new URLSearchParams();
    for (const [key, value] of Object.entries(extra)) {
      for (const v of Array.isArray(value) ? value : [value]) p.append(key, v);
    }
    p.set("k", $("k").value || "20");
    if ($("radius").value !== "") p.set("radius", $("radius").value);
    if ($("date").value) p.set("datetime", $("date").value);
    if ($("aoi-view").checked) {
      const b = map.getBounds();
      const [west, east] = lonBox(b);
      p.set("aoi", [west, b.getSouth(), east, b.getNorth()].map((v) => v.toFixed(7)).join(","));
    }
    return p;
  }

  // ------------------------------------------------------------------ marks, refine, find all

  const yesIds = () => [...marks.entries()].filter(([, m]) => m.yes).map(([id]) => id);
  const noIds = () => [...marks.entries()].filter(([, m]) => !m.yes).map(([id]) => id);
  function positives() { return [...new Set([...baseIds, ...yesIds()])].filter((id) => !noIds().includes(id)); }

  function drawMarks() {
    markLayer.clearLayers();
    for (const [id, m] of marks) {
      if (!m.footprint) continue;
      const c = m.yes ? "#1a9850" : "#d73027";
      const shape = L.geoJSON(m.footprint, { style: { color: c, weight: 3, fill: false, dashArray: m.yes ? null : "3 3" },
        interactive: false });
      shape.addTo(markLayer);
      shape.eachLayer((l) => { const el = l.getElement(); if (el) { el.classList.add(m.yes ? "mark-yes" : "mark-no"); el.dataset.id = id; } });
    }
    const [y, n] = [yesIds().length, noIds().length];
    $("mark-count").textContent = y + n ? `${y} yes · ${n} no` : "no marks";
    $("refine").disabled = positives().length === 0;
    $("find-all").disabled = positives().length === 0;
    $("clear-marks").disabled = y + n === 0;
    for (const li of document.querySelectorAll("#hits .hit")) {
      const m = marks.get(+li.dataset.id);
      li.classList.toggle("marked-yes", !!m && m.yes);
      li.classList.toggle("marked-no", !!m && !m.yes);
      li.querySelector(".mark.yes").classList.toggle("on", !!m && m.yes);
      li.querySelector(".mark.no").classList.toggle("on", !!m && !m.yes);
    }
  }

  function mark(id, yes) {
    const current = marks.get(id);
    if (current && current.yes === yes) marks.delete(id); // pressing it again unmarks
    else marks.set(id, { yes, footprint: (lastHits.get(id) || current || {}).footprint || null });
    drawMarks();
  }

  function refine() {
    const pos = positives();
    if (!pos.length) { setError("mark at least one hit 'yes' to refine"); return; }
    search({ id: pos, not_id: noIds() }, `refine:${pos.length}+/${noIds().length}-`, pos);
  }

  async function findAll() {
    const pos = positives();
    if (!pos.length) { setError("mark at least one hit 'yes' to find all"); return; }
    const p = params({ id: pos, not_id: noIds(), threshold: $("threshold").value });
    p.delete("k");
    const url = `/api/geo/find_all?${p}`;
    setError(null);
    setStatus("finding all…");
    document.body.classList.add("busy");
    try {
      const r = await fetch(url);
      const body = await r.json();
      if (!r.ok) throw new Error(body.detail || `HTTP ${r.status}`);
      foundScores = body.scores;
      foundLayer.clearLayers();
      const shape = L.geoJSON(body.areas, { style: { color: "#6a3d9a", weight: 2, fillColor: "#6a3d9a", fillOpacity: 0.3 } });
      shape.addTo(foundLayer);
      shape.eachLayer((l) => { const el = l.getElement(); if (el) el.classList.add("found-area"); });
      $("found").hidden = false;
      const areas = body.areas.features.length;
      $("found-count").textContent = `${body.count} chips in ${areas} area${areas === 1 ? "" : "s"} (threshold ${body.threshold})`
        + (body.capped ? ": the most one search ranks; there may be more (narrow the area or the dates)" : "");
      $("found-download").href = url + "&format=geojson";
      $("found").dataset.count = body.count;
      $("found").dataset.areas = body.areas.features.length;
      setStatus(`found ${body.count} chips in ${body.query_ms} ms`);
    } catch (err) {
      setError(String(err.message || err));
    } finally {
      document.body.classList.remove("busy");
    }
  }

  // The slider shows at once how many candidates a threshold keeps; releasing it asks for the layer again.
  $("threshold").addEventListener("input", () => {
    const t = +$("threshold").value;
    $("found-count").textContent = `${foundScores.filter((v) => v <= t).length} chips at threshold ${t}`;
  });
  $("threshold").addEventListener("change", () => { if (!$("find-all").disabled) findAll(); });
  $("refine").addEventListener("click", refine);
  $("find-all").addEventListener("click", findAll);
  $("clear-marks").addEventListener("click", () => { marks.clear(); foundLayer.clearLayers(); $("found").hidden = true; drawMarks(); });
  document.addEventListener("keydown", (ev) => {
    if (ev.target.closest && ev.target.closest("input, select, textarea")) return;
    const active = document.querySelector(".hit.active");
    if ((ev.key === "y" || ev.key === "n") && active) mark(+active.dataset.id, ev.key === "y");
    else if (ev.key === "r") refine();
    else if (ev.key === "f") findAll();
  });

  async function search(extra, label, base) {
    const mine = ++seq;
    const p = params(extra);
    const url = `/api/geo/search?${p}`;
    document.body.classList.add("busy");
    setError(null);
    setStatus(`searching ${label}…`);
    try {
      const r = await fetch(url);
      const body = await r.json();
      if (mine !== seq) return; // a newer search started meanwhile
      if (!r.ok) throw new Error(body.detail || `HTTP ${r.status}`);
      lastUrl = url;
      const q = body.query || {};
      baseIds = base || (q.ids ? q.ids : q.id != null ? [q.id] : q.chip != null ? [q.chip] : []);
      show(body, label);
    } catch (err) {
      if (mine !== seq) return;
      clear();
      setError(String(err.message || err));
      setStatus("");
      $("hits").dataset.query = `error:${label}`;
    } finally {
      if (mine === seq) document.body.classList.remove("busy");
    }
  }

  function clear() {
    hitLayer.clearLayers();
    queryLayer.clearLayers();
    hitShapes = new Map();
    $("hits").replaceChildren();
    $("download").hidden = true;
  }

  function show(body, label) {
    clear();
    for (const fp of body.query.footprints || []) {
      if (fp) L.geoJSON(fp, { style: { color: "#1f4eb4", weight: 2, dashArray: "6 4", fill: false },
        interactive: false }).addTo(queryLayer);
    }
    const distances = body.results.map((h) => h.distance);
    const minDistance = Math.min(...distances), maxDistance = Math.max(...distances);
    const list = $("hits");
    lastHits = new Map(body.results.map((h) => [h.id, h]));
    for (const h of body.results) {
      const c = colour(h.distance, minDistance, maxDistance);
      if (h.footprint) {
        const shape = L.geoJSON(h.footprint, { style: { color: c, weight: 2, fillColor: c, fillOpacity: 0.25 } });
        shape.on("click", (ev) => { L.DomEvent.stopPropagation(ev); search({ id: h.id }, `id:${h.id}`); });
        shape.bindTooltip(`#${h.rank} · d = ${h.distance}`);
        shape.addTo(hitLayer);
        shape.eachLayer((l) => { const el = l.getElement(); if (el) { el.classList.add("footprint"); el.dataset.id = h.id; } });
        hitShapes.set(h.id, shape);
      }
      const li = document.createElement("li");
      li.className = "hit";
      li.dataset.id = h.id;
      li.style.borderLeftColor = c;
      const img = document.createElement("img");
      img.src = h.thumbnail_url;
      img.alt = `chip ${h.id}`;
      img.loading = "lazy";
      const meta = document.createElement("div");
      meta.className = "meta";
      const where = h.lon == null ? "" : `${h.lon.toFixed(5)}, ${h.lat.toFixed(5)}`;
      const line1 = document.createElement("div");
      line1.innerHTML = `#${h.rank} <span class="dist">d = ${h.distance}</span>`;
      const line2 = document.createElement("div");
      line2.textContent = where;
      const line3 = document.createElement("div");
      line3.className = "raster";
      line3.textContent = h.raster ? `${h.raster} [${(h.window || []).join(",")}]` : `item ${h.id}`;
      if (h.datetime) line3.textContent += ` · ${dateLabel(h)}`;
      meta.append(line1, line2, line3);
      const buttons = document.createElement("div");
      for (const [yes, text] of [[true, "✓"], [false, "✗"]]) {
        const b = document.createElement("button");
        b.type = "button";
        b.className = `mark ${yes ? "yes" : "no"}`;
        b.textContent = text;
        b.title = yes ? "yes: like this (y)" : "no: not like this (n)";
        b.addEventListener("click", (ev) => { ev.stopPropagation(); mark(h.id, yes); });
        buttons.append(b);
      }
      li.append(img, meta, buttons);
      li.addEventListener("click", () => focusHit(h));
      list.append(li);
    }
    drawMarks();
    list.dataset.query = label;
    setStatus(`${body.count} result${body.count === 1 ? "" : "s"} in ${body.query_ms} ms`);
    const link = $("download");
    link.href = lastUrl.replace("/api/geo/search?", "/api/geo/search?format=geojson&");
    link.hidden = body.count === 0;
  }

  function focusHit(h) {
    document.querySelectorAll(".hit.active").forEach((e) => e.classList.remove("active"));
    const li = document.querySelector(`.hit[data-id="${h.id}"]`);
    if (li) li.classList.add("active");
    const shape = hitShapes.get(h.id);
    if (shape) {
      map.fitBounds(shape.getBounds(), { maxZoom: map.getZoom() + 2 });
      shape.setStyle({ weight: 4 });
    }
  }

  // Shift-drag: draw a box and search by that area (read and encoded by the server).
  let boxStart = null;
  let boxShape = null;
  let suppressClick = false; // the click that ends a shift-drag is not a point search
  map.on("mousedown", (ev) => {
    if (!ev.originalEvent.shiftKey) return;
    ev.originalEvent.preventDefault(); // no text selection while dragging
    boxStart = ev.latlng;
    map.dragging.disable();
    boxShape = L.rectangle([boxStart, boxStart], { className: "select-box", color: "#2f6f4f", weight: 2,
      dashArray: "4 3", interactive: false }).addTo(map);
  });
  map.on("mousemove", (ev) => { if (boxStart && boxShape) boxShape.setBounds([boxStart, ev.latlng]); });
  map.on("mouseup", (ev) => {
    if (!boxStart) return;
    const b = L.latLngBounds(boxStart, ev.latlng);
    boxStart = null;
    map.dragging.enable();
    if (boxShape) { boxShape.remove(); boxShape = null; }
    if (b.getNorth() === b.getSouth() || b.getEast() === b.getWest()) return;
    const [west, east] = lonBox(b);
    const box = [west, b.getSouth(), east, b.getNorth()].map((v) => v.toFixed(7)).join(",");
    suppressClick = true;
    setTimeout(() => { suppressClick = false; }, 300);
    search({ box }, `box:${box}`);
  });

  // Click: search from that place (the indexed chip containing it).
  map.on("click", (ev) => {
    if (suppressClick) { suppressClick = false; return; }
    const { lat, lng } = ev.latlng.wrap();
    search({ lon: lng.toFixed(7), lat: lat.toFixed(7) }, `point:${lng.toFixed(5)},${lat.toFixed(5)}`);
  });

  window.rshashSearch = search;
  window.rshashMarks = marks;
  loadRasters().catch((err) => setError(`cannot load the rasters: ${err.message || err}`));
})();
