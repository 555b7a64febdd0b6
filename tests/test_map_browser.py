"""The map page end to end in headless Chromium, against a real ``rshash serve`` process over a raster index.

The rasters appear as image overlays, a real click on the map searches from that place and draws the hits'
footprints with thumbnails in the side list, the GeoJSON download link serves a FeatureCollection, and a
shift-drag box searches by area. Skipped without chromium / chromedriver (as tests/test_browser.py).
Ends with a screenshot in ``/tmp/rshash_map.png``.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import httpx
import pytest
from PIL import Image

from test_browser import CHROMEDRIVER, CHROMIUM, Process, WebDriver, browser  # noqa: F401 (the shared fixture)

SCREENSHOT = Path("/tmp/rshash_map.png")
NAIP = "naip_m_3211605_ne_11_060_20200415.tif"

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="headless Chromium not installed (apt-get install chromium chromium-driver)",
)


@pytest.fixture(scope="module")
def server(raster_index_dir, tmp_path_factory):
    index_dir = shutil.copytree(raster_index_dir, tmp_path_factory.mktemp("map") / "index")
    proc = Process([sys.executable, "-m", "rshash.cli", "serve", "--index", str(index_dir), "--port", "0"])
    try:
        url = proc.wait_for(r"at (http://127\.0\.0\.1:\d+)/")[1]
        proc.wait_for(r"Application startup complete")
        yield url
    finally:
        proc.stop()


def map_state(web: WebDriver) -> dict:
    return web.js(
        "return {status: document.getElementById('status').textContent,"
        " error: document.getElementById('error').hidden ? null : document.getElementById('error').textContent,"
        " query: document.getElementById('hits').dataset.query,"
        " hits: document.querySelectorAll('#hits .hit').length,"
        " footprints: document.querySelectorAll('path.footprint').length}"
    )


def pointer(web: WebDriver, element: str, points: list[tuple[float, float]], shift: bool = False) -> None:
    """A real mouse gesture over ``element``: press at the first point, move through the others, release;
    with Shift held if asked. Points are offsets from the element's centre (W3C WebDriver)."""
    origin = {WebDriver.ELEMENT: element}
    moves = [{"type": "pointerMove", "origin": origin, "x": int(x), "y": int(y), "duration": 100} for x, y in points]
    mouse = [moves[0], {"type": "pointerDown", "button": 0}, *moves[1:], {"type": "pointerUp", "button": 0}]
    sources = [{"type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"}, "actions": mouse}]
    if shift:
        keys = [{"type": "keyDown", "value": "\ue008"}] + [{"type": "pause"}] * (len(mouse) - 1) + [
            {"type": "keyUp", "value": "\ue008"}]
        sources[0]["actions"] = [{"type": "pause"}] + mouse
        sources.append({"type": "key", "id": "keyboard", "actions": keys})
    web.call("POST", "/actions", {"actions": sources})
    web.call("DELETE", "/actions")


def offset_of(web: WebDriver, lon: float, lat: float) -> tuple[float, float]:
    """The map point of (lon, lat) as an offset from the map element's centre."""
    return tuple(web.js(
        "const m = window.rshashMap; const p = m.latLngToContainerPoint([arguments[1], arguments[0]]);"
        " const s = m.getSize(); return [p.x - s.x / 2, p.y - s.y / 2];", lon, lat))


def test_map_click_and_box_search(server, browser):
    url, web = server, browser
    rasters = httpx.get(f"{url}/api/geo/rasters").json()["rasters"]
    naip = next(r for r in rasters if r["name"] == NAIP)
    web.open(url + "/map")
    web.wait("return document.body.dataset.ready === '1'", "the rasters")
    assert "2 rasters, 21 chips" in web.js("return document.getElementById('stats').textContent")
    web.wait("const o = Array.from(document.querySelectorAll('img.leaflet-image-layer'));"
             " return o.length === 2 && o.every(i => i.complete && i.naturalWidth > 0)", "the raster overlays")

    # zoom to the NAIP raster and click inside it, off-centre: a real click on the map
    w, s, e, n = naip["bounds"]
    web.js("window.rshashMap.fitBounds([[arguments[1], arguments[0]], [arguments[3], arguments[2]]], {animate: false});",
           w, s, e, n)
    element = web.find("#map")
    lon, lat = w + (e - w) * 0.3, s + (n - s) * 0.6
    pointer(web, element, [offset_of(web, lon, lat)])
    web.wait("return (document.getElementById('hits').dataset.query || '').startsWith('point:')", "the click search")
    state = map_state(web)
    assert state["error"] is None and state["hits"] > 0 and state["footprints"] == state["hits"], state
    clicked = web.js("return document.getElementById('hits').dataset.query")
    got_lon, got_lat = map(float, clicked.split(":")[1].split(","))
    assert got_lon == pytest.approx(lon, abs=2e-5) and got_lat == pytest.approx(lat, abs=2e-5)  # lon first
    web.wait("return Array.from(document.querySelectorAll('#hits .hit img')).every(i => i.complete && i.naturalWidth > 0)",
             "the thumbnails")
    expected = httpx.get(f"{url}/api/geo/search", params={"lon": f"{lon:.7f}", "lat": f"{lat:.7f}", "k": 20}).json()
    assert web.js("return Array.from(document.querySelectorAll('#hits .hit')).map(h => +h.dataset.id)") == [
        h["id"] for h in expected["results"]]
    assert web.js("return document.querySelectorAll('path[stroke-dasharray]').length") >= 1  # own place

    # the download link gives the same hits as GeoJSON
    href = web.js("const a = document.getElementById('download'); return a.hidden ? null : a.getAttribute('href')")
    assert href and "format=geojson" in href
    doc = httpx.get(url + href).json()
    assert doc["type"] == "FeatureCollection" and [f["properties"]["id"] for f in doc["features"]] == [
        h["id"] for h in expected["results"]]

    # shift-drag a box: a search by that area
    a = offset_of(web, w + (e - w) * 0.55, s + (n - s) * 0.3)
    b = offset_of(web, w + (e - w) * 0.85, s + (n - s) * 0.7)
    pointer(web, element, [a, ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2), b], shift=True)
    web.wait("return (document.getElementById('hits').dataset.query || '').startsWith('box:')", "the box search")
    state = map_state(web)
    assert state["error"] is None and state["hits"] > 0 and state["footprints"] == state["hits"], state

    web.screenshot(SCREENSHOT)
    with Image.open(SCREENSHOT) as shot:
        assert shot.size[0] >= 1000


def keys(web: WebDriver, text: str) -> None:
    """Real key presses (to the focused page)."""
    actions = [a for ch in text for a in ({"type": "keyDown", "value": ch}, {"type": "keyUp", "value": ch})]
    web.call("POST", "/actions", {"actions": [{"type": "key", "id": "keyboard", "actions": actions}]})
    web.call("DELETE", "/actions")


def hit_ids(web: WebDriver) -> list[int]:
    return web.js("return Array.from(document.querySelectorAll('#hits .hit')).map(h => +h.dataset.id)")


def test_map_marks_refine_find_all_and_dates(server, browser):
    url, web = server, browser
    web.state = lambda: map_state(web)  # what a timed-out wait shows
    rasters = httpx.get(f"{url}/api/geo/rasters").json()["rasters"]
    naip = next(r for r in rasters if r["name"] == NAIP)
    web.open(url + "/map")
    web.wait("return document.body.dataset.ready === '1'", "the rasters")
    web.wait("const o = Array.from(document.querySelectorAll('img.leaflet-image-layer'));"
             " return o.length === 2 && o.every(i => i.complete && i.naturalWidth > 0)", "the raster overlays")
    # the date selector lists the dated acquisition (NAIP, from its file name); choosing it hides the others
    options = web.js("return Array.from(document.querySelectorAll('#date option')).map(o => [o.value, o.textContent])")
    assert options == [["", "all dates"], ["2020-04-15", "2020-04-15"]]
    web.js("const s = document.getElementById('date'); s.value = '2020-04-15'; s.dispatchEvent(new Event('change'));")
    assert web.js("return Array.from(document.querySelectorAll('img.leaflet-image-layer')).map(i => i.style.opacity)"
                  ) == ["0", "1"]  # cogeo has no date: hidden; NAIP shown

    w, s, e, n = naip["bounds"]
    # zoom to the NAIP raster (again, until it holds: the page's own first view may still be settling)
    web.wait(f"const m = window.rshashMap; if (m.getZoom() < 15) m.fitBounds([[{s}, {w}], [{n}, {e}]], "
             "{animate: false}); return m.getZoom() >= 15 && !m._animatingZoom", "the map on the NAIP raster")
    pointer(web, web.find("#map"), [offset_of(web, w + (e - w) * 0.3, s + (n - s) * 0.6)])
    web.wait("return (document.getElementById('hits').dataset.query || '').startsWith('point:')", "the click search")
    assert map_state(web)["error"] is None, map_state(web)
    raster_names = web.js("return Array.from(document.querySelectorAll('#hits .raster')).map(e => e.textContent)")
    assert raster_names and all(NAIP in t and "2020-04-15" in t for t in raster_names)  # NAIP chips only

    # all dates again: marks on the hits of a search by an indexed chip (a click on a footprint does the same)
    web.js("const s = document.getElementById('date'); s.value = ''; s.dispatchEvent(new Event('change'));")
    web.js("window.rshashSearch({id: 1}, 'id:1');")
    web.wait("return (document.getElementById('hits').dataset.query || '') === 'id:1'", "the id search")
    first = hit_ids(web)
    assert len(first) >= 4, map_state(web)
    assert web.js("return document.getElementById('refine').disabled") is False  # the query's chip is a 'yes'

    # mark with the buttons (real clicks) and with the keyboard on the selected hit
    web.click(f'#hits .hit[data-id="{first[0]}"] .mark.yes')
    web.click(f'#hits .hit[data-id="{first[1]}"] .mark.no')
    web.click(f'#hits .hit[data-id="{first[2]}"] .meta')
    keys(web, "n")
    assert web.js("return document.getElementById('mark-count').textContent") == "1 yes · 2 no"
    assert web.js("return document.querySelectorAll('path.mark-yes').length") == 1
    assert web.js("return document.querySelectorAll('path.mark-no').length") == 2

    web.click("#refine")
    web.wait("return (document.getElementById('hits').dataset.query || '').startsWith('refine:')", "the refined search")
    refined = hit_ids(web)
    assert refined and set(refined).isdisjoint(first[:3]) and refined != first  # the layer changed
    assert web.js("return document.querySelectorAll('path.mark-no').length") == 2  # marks kept across searches

    # find all: one layer of merged areas; the slider's count follows the threshold
    web.click("#find-all")
    web.wait("return document.getElementById('found').dataset.count !== undefined", "find all")
    count = int(web.js("return document.getElementById('found').dataset.count"))
    assert web.js("return document.querySelectorAll('path.found-area').length") == int(
        web.js("return document.getElementById('found').dataset.areas")) >= (1 if count else 0)
    web.js("const t = document.getElementById('threshold'); t.value = '0'; t.dispatchEvent(new Event('input'));")
    assert "at threshold 0" in web.js("return document.getElementById('found-count').textContent")
    web.js("document.getElementById('threshold').dispatchEvent(new Event('change'));")
    web.wait(f"return +document.getElementById('found').dataset.count > {count}", "a looser threshold finds more")
    href = web.js("return document.getElementById('found-download').getAttribute('href')")
    doc = httpx.get(url + href).json()
    assert doc["type"] == "FeatureCollection" and sum(f["properties"]["chips"] for f in doc["features"]) > count
    web.screenshot(Path("/tmp/rshash_map_marks.png"))
