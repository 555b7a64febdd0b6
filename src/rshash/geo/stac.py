"""STAC in and out. In: rasters from a local STAC catalogue (an ItemCollection, a Catalog or Collection read
recursively, or one Item). Out: indexed rasters, or search hits, as a STAC ItemCollection.

For each Item, one asset is indexed: the data asset whose bands (``eo:bands`` of STAC 1.0 or ``bands`` of 1.1)
hold the common names red, green and blue (read as R, G, B in that order), else the asset keyed ``visual``, else
the Item's only GeoTIFF data asset. Its href is resolved against the Item's own location; local paths and
``file://`` URLs are read, other schemes (http, s3, ...) are skipped with the reason (no network here). The
Item's ``datetime`` (or ``start_datetime``/``end_datetime``) is the acquisition time, and ``gsd`` (asset, else
Item) is recorded beside the raster's own. Items that give none of this are skipped with the reason, never a
crash: the indexing report lists them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from .dates import Acquired, iso_utc, parse_time

if TYPE_CHECKING:  # pystac loads only for catalogues
    import pystac

#: Media types taken as GeoTIFF assets.
TIFF_TYPES = ("image/tiff", "image/tiff; application=geotiff",
              "image/tiff; application=geotiff; profile=cloud-optimized", "image/vnd.stac.geotiff")
RGB = ("red", "green", "blue")


@dataclass(frozen=True)
class StacRaster:
    """One raster to index from a STAC Item (``path`` None: skipped, ``reason`` says why)."""

    item_id: str
    asset: str | None
    path: Path | None
    bands: tuple[int, ...] | None  # 1-based bands read as R, G, B (None: the reader's own choice)
    acquired: Acquired | None
    gsd: float | None
    reason: str | None = None


def _bands_of(asset: Any) -> list[dict]:
    fields = asset.extra_fields
    for key in ("bands", "eo:bands"):  # STAC 1.1, then the eo extension of STAC 1.0
        value = fields.get(key)
        if isinstance(value, list) and value:
            return [b if isinstance(b, dict) else {} for b in value]
    return []


def _common(band: dict) -> str | None:
    name = band.get("eo:common_name", band.get("common_name"))
    return name.lower() if isinstance(name, str) else None


def _rgb(asset: Any) -> tuple[int, ...] | None:
    names = [_common(b) for b in _bands_of(asset)]
    if all(c in names for c in RGB):
        return tuple(names.index(c) + 1 for c in RGB)
    return None


def _is_tiff(asset: Any) -> bool:
    media = (asset.media_type or "").lower().replace(" ", "")
    return media in {t.replace(" ", "") for t in TIFF_TYPES} or asset.href.lower().split("?")[0].endswith(
        (".tif", ".tiff"))


def _is_data(asset: Any) -> bool:
    roles = asset.roles or []
    return not roles or "data" in roles or "visual" in roles


def _choose(item: Any) -> tuple[str | None, Any, str | None]:
    """``(asset key, asset, reason if none)``."""
    assets = {k: a for k, a in item.assets.items() if _is_data(a) and _is_tiff(a)}
    with_rgb = [k for k, a in assets.items() if _rgb(a) is not None]
    if with_rgb:
        return with_rgb[0], assets[with_rgb[0]], None
    if "visual" in assets:
        return "visual", assets["visual"], None
    if len(assets) == 1:
        key = next(iter(assets))
        return key, assets[key], None
    if not assets:
        return None, None, "no GeoTIFF data asset"
    split = sum(any(_common(b) in RGB for b in _bands_of(a)) for a in assets.values())
    if split >= 2:
        return None, None, "red, green and blue are in separate assets (one multi-band asset is needed)"
    return None, None, f"several data assets ({', '.join(sorted(assets))}) and none holds red, green, blue"


def _local_path(href: str) -> tuple[Path | None, str | None]:
    parsed = urlparse(href)
    if parsed.scheme in ("", "file") or (len(parsed.scheme) == 1 and href[1:3] in (":\\", ":/")):
        return Path(unquote(parsed.path) if parsed.scheme == "file" else href), None
    return None, f"remote href {href!r} not read here (no network): download it and point the catalogue at it"


def _acquired(item: Any) -> Acquired | None:
    props = item.properties
    if item.datetime is not None:
        return Acquired(iso_utc(item.datetime), None, "stac")
    start, end = props.get("start_datetime"), props.get("end_datetime")
    if start:
        s, _ = parse_time(str(start))
        e = parse_time(str(end))[0] if end else None
        return Acquired(s, e, "stac")
    return None


def _gsd(item: Any, asset: Any) -> float | None:
    for value in (asset.extra_fields.get("gsd"), item.properties.get("gsd")):
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return float(value)
    return None


def _items(path: Path) -> list[Any]:
    import pystac

    try:
        kind = json.loads(path.read_text()).get("type")
    except (OSError, ValueError) as exc:
        raise ValueError(f"not a STAC JSON file: {path} ({exc})") from exc
    if kind == "FeatureCollection":
        return list(pystac.ItemCollection.from_file(str(path)))
    if kind == "Feature":
        return [pystac.Item.from_file(str(path))]
    if kind in ("Catalog", "Collection"):
        return list(pystac.Catalog.from_file(str(path)).get_items(recursive=True))
    raise ValueError(f"{path}: a STAC ItemCollection, Catalog, Collection or Item was expected, got type {kind!r}")


def read_stac(path: str | Path) -> list[StacRaster]:
    """Every Item of a local STAC file as a raster to index (or a skip with its reason)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such STAC file: {path}")
    out = []
    for item in _items(path.absolute()):
        key, asset, reason = _choose(item)
        if asset is None:
            out.append(StacRaster(item.id, None, None, None, None, None, reason))
            continue
        local, reason = _local_path(asset.get_absolute_href() or asset.href)
        if local is not None and not local.is_file():
            local, reason = None, f"asset file not found: {local}"
        try:
            acquired = _acquired(item)
        except ValueError:  # an unreadable start/end: indexed without a date (the file name may still give one)
            acquired = None
        out.append(StacRaster(item.id, key, local, _rgb(asset), acquired, _gsd(item, asset), reason))
    return out


# --------------------------------------------------------------------------- out

PROJECTION = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"


def _proj(crs: str | None) -> dict:
    if crs is None:
        return {}
    if crs.upper().startswith("EPSG:"):
        return {"proj:code": crs.upper()}
    return {"proj:wkt2": crs}


def _item(item_id: str, geometry: dict | None, crs: str | None, shape: tuple[int, int], transform: list[float],
          gsd: float | None, start: str | None, end: str | None) -> "pystac.Item":
    """A STAC Item with the projection extension; an unknown acquisition is the open 1900-2100 interval, flagged
    ``rshash:datetime_unknown`` (STAC requires a time)."""
    from datetime import datetime

    import pystac

    props: dict[str, Any] = _proj(crs) | {"proj:shape": list(shape), "proj:transform": list(transform)[:6]}
    if gsd is not None:
        props["gsd"] = gsd
    when = None
    if start is None:
        props |= {"start_datetime": "1900-01-01T00:00:00Z", "end_datetime": "2100-12-31T23:59:59Z",
                  "rshash:datetime_unknown": True}
    elif end is not None:
        props |= {"start_datetime": start, "end_datetime": end}
    else:
        when = datetime.fromisoformat(start.replace("Z", "+00:00"))
    bbox = list(pystac.utils.geometry_to_bbox(geometry)) if geometry else None
    return pystac.Item(item_id, geometry, bbox, when, props, stac_extensions=[PROJECTION])


def rasters_collection(rasters: list[dict]) -> dict:
    """Indexed rasters (:meth:`rshash.geo.catalog.ChipCatalog.rasters` rows) as a STAC ItemCollection (JSON): one
    Item each, with its footprint, acquisition, ``proj:`` fields and the file as its ``data`` asset."""
    import pystac

    items = []
    for r in rasters:
        item = _item(f"raster-{r['id']}", r.get("footprint"), r.get("crs"), (r["height"], r["width"]),
                     r["transform"], r.get("gsd"), r.get("datetime"), r.get("datetime_end"))
        item.add_asset("data", pystac.Asset(Path(r["path"]).as_uri(), media_type=pystac.MediaType.GEOTIFF,
                                            roles=["data"], extra_fields={"rshash:bands": r.get("bands")}))
        items.append(item)
    return pystac.ItemCollection(items).to_dict()


def hits_collection(hits: list[Any], rasters: dict[int, dict]) -> dict:
    """Search hits (:class:`rshash.geo.search.GeoHit`) as a STAC ItemCollection: one Item per chip, its footprint
    and its raster's acquisition and projection; its ``data`` asset is the raster file with the chip's pixel
    window (``rshash:window`` = col_off, row_off, width, height) and the hit's rank, distance and score."""
    import pystac

    items = []
    for h in hits:
        if h.footprint is None or h.raster_id not in rasters:
            continue
        r = rasters[h.raster_id]
        col, row, width, height = h.window
        a, b, c, d, e, f = r["transform"][:6]
        window_transform = [a, b, c + a * col + b * row, d, e, f + d * col + e * row]  # the chip's own grid
        item = _item(f"chip-{h.id}", h.footprint, r.get("crs"), (height, width), window_transform, r.get("gsd"),
                     h.datetime, h.datetime_end)
        item.properties |= {"rshash:rank": h.rank, "rshash:distance": h.distance, "rshash:score": h.score,
                            "rshash:raster_id": h.raster_id}
        item.add_asset("data", pystac.Asset(Path(r["path"]).as_uri(), media_type=pystac.MediaType.GEOTIFF,
                                            roles=["data"], extra_fields={"rshash:window": list(h.window)}))
        items.append(item)
    return pystac.ItemCollection(items).to_dict()
