// rshash map page: indexed rasters as image overlays (warped by the server), click or shift-drag to search,
// hits as footprints coloured by distance, thumbnails in the side list, GeoJSON download. Offline: Leaflet is
// vendored and no tile layer is used.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const map = L.map("map", { boxZoom: false, zoomSnap: 0.25, maxZoom: 24, minZoom: 1, worldCopyJump: false });
  window.rshashMap = map; // for tests and the console
  map.attributionControl.setPrefix('Leaflet (BSD-2, vendored)');
  map.setView([0, 0], 2);

  const hitLayer = L.layerGroup().addTo(map);
  const queryLayer = L.layerGroup().addTo(map);
  let hitShapes = new Map(); // id -> Leaflet layer
  let lastUrl = null;
  let seq = 0;

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
    for (const raster of data.rasters) {
      if (!raster.overlay) continue;
      const [w, s, e, n] = raster.overlay.bounds;
      L.imageOverlay(raster.overlay.url, [[s, w], [n, eastOf(w, e)]], { opacity: 1, interactive: false, className: "raster" })
        .addTo(map);
      const [bw, bs, be, bn] = raster.bounds;
      L.rectangle([[bs, bw], [bn, eastOf(bw, be)]], { color: "#555", weight: 1, fill: false, interactive: false })
        .bindTooltip(raster.name).addTo(map);
    }
    if (data.bounds) {
      const [w, s, e, n] = data.bounds;
      map.fitBounds([[s, w], [n, eastOf(w, e)]]);
    }
    document.body.dataset.ready = "1";
  }

  function params(extra) {
    const p = new URLSearchParams(extra);
    p.set("k", $("k").value || "20");
    if ($("radius").value !== "") p.set("radius", $("radius").value);
    if ($("aoi-view").checked) {
      const b = map.getBounds();
      const [west, east] = lonBox(b);
      p.set("aoi", [west, b.getSouth(), east, b.getNorth()].map((v) => v.toFixed(7)).join(","));
    }
    return p;
  }

  async function search(extra, label) {
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
      meta.append(line1, line2, line3);
      li.append(img, meta);
      li.addEventListener("click", () => focusHit(h));
      list.append(li);
    }
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
  loadRasters().catch((err) => setError(`cannot load the rasters: ${err.message || err}`));
})();
