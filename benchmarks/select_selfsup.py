"""Choose the self-supervised recipe's head input (pooled levels, a grid pooling, both), whitening floor (``eps``) and
augmentation weight (``aug_weight``) on the same-place folds (the protocol of ``benchmarks/archive_learning.py``: NAIP quadrants, Landsat strips, Landsat with
the held-out date; models trained on each fold's training chips only).

For every (input, eps, aug_weight) of the grid and every seed: tie-aware recall@10 pooled over the folds, of the Hamming
order and of the model's float descriptors (cosine). The criterion is the mean Hamming recall@10 over the three
places and the seeds (the Hamming order is what users get at archive scale); the recipe's default is kept unless
another setting beats it by more than the seed-to-seed spread (``rule`` in the output).

    python benchmarks/select_selfsup.py [--seeds 0,1] [--cache-dir DIR]

Writes ``benchmarks/results/select_selfsup.json``. The same folds are then reported by archive_learning.py: they are
the only same-place validation there is (the product is re-measured on other acquisitions), so the chosen values
are cross-validated on these folds, not tested.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from rshash.io_utils import atomic_write_text

sys.path.insert(0, str(Path(__file__).parent))
import archive_learning as al  # noqa: E402  (the places, the scoring and the distance helpers)

RESULTS = al.ROOT / "benchmarks" / "results" / "select_selfsup.json"
EPS = (3e-3, 1e-2, 3e-2)
AUG_WEIGHTS = (0.0, 0.1, 0.3)
#: The head's input: the globally pooled levels (what is in the chip; the recipe until this choice), the grid
#: pooling of the stage-5 map over 4 x 4 cells (where things are in it), or both (the grid block, of unit norm,
#: weighted 2 or 4 beside the five unit-norm levels).
INPUTS = {"levels": {"grid": 0}, "grid4": {"grid": 4, "grid_levels": False, "grid_weight": 1.0},
          "levels+grid4x2": {"grid": 4, "grid_levels": True, "grid_weight": 2.0},
          "levels+grid4x4": {"grid": 4, "grid_levels": True, "grid_weight": 4.0}}
#: The setting that landed before the input was chosen here: the incumbent the rule compares with.
INCUMBENT = "levels eps=0.01 aug_weight=0.1"


def setting_name(inputs: str, eps: float, aug: float) -> str:
    return f"{inputs} eps={eps:g} aug_weight={aug:g}"


def place_scores(name: str, rasters: Path, seeds: list[int], cache_dir: Path) -> dict:
    """``{setting: {"hamming": [per seed], "float": [per seed]}}`` for one place."""
    from rshash.backbone import create_backbone
    from rshash.evaluation import same_place as sp
    from rshash.training.selfsup import SelfSupConfig, fit_head, place_features

    files, layout, train_dates = al.PLACES[name]
    place = sp.read_place([rasters / f for f in files], al.INPUT_SIZE, layout=layout)
    folds = al.place_folds(place, train_dates)
    backbone = create_backbone()
    out: dict = {}
    for seed in seeds:
        for inputs, change in INPUTS.items():
            base = replace(SelfSupConfig(seed=seed), **change)
            features = place_features(place, base, backbone, cache_dir)
            x0 = features.levels()[:, 0]
            for eps in EPS:
                for aug in AUG_WEIGHTS:
                    config = replace(base, eps=eps, aug_weight=aug)
                    hamming, cosine = [], []
                    for fold in folds:
                        fit = fit_head(features, config, fold.train)
                        embedded = fit.embed(x0)
                        hamming.append(al._hamming(embedded @ fit.rotation >= 0))
                        cosine.append(al._cosine(embedded))
                    row = out.setdefault(setting_name(inputs, eps, aug), {"hamming": [], "float": []})
                    row["hamming"].append(round(float(np.nanmean(al._score(place, folds, hamming)[0])), 4))
                    row["float"].append(round(float(np.nanmean(al._score(place, folds, cosine)[0])), 4))
        print(f"{name} seed {seed} done", flush=True)
    return out


def recipe_setting(recipe) -> str:
    """The name of the recipe's setting in the table."""
    change = {"grid": recipe.grid} | ({"grid_levels": recipe.grid_levels, "grid_weight": recipe.grid_weight}
                                      if recipe.grid else {})
    inputs = next((k for k, v in INPUTS.items() if v == change), f"grid={recipe.grid} levels={recipe.grid_levels}")
    return setting_name(inputs, recipe.eps, recipe.aug_weight)


def summarise(places: dict, seeds: list[int]) -> dict:
    """The table over places and seeds, the rule's choice and whether ``SelfSupConfig()`` is it."""
    from rshash.training.selfsup import SelfSupConfig

    table = {}
    for key in next(iter(places.values())):
        per_seed = np.mean([places[p][key]["hamming"] for p in places], axis=0)  # mean over places, per seed
        table[key] = {"criterion_mean_hamming": round(float(per_seed.mean()), 4),
                      "criterion_seed_std": round(float(np.std(per_seed, ddof=1)) if len(seeds) > 1 else 0.0, 4),
                      "mean_float": round(float(np.mean([places[p][key]["float"] for p in places])), 4)}
    best = max(table, key=lambda k: table[k]["criterion_mean_hamming"])
    recipe = SelfSupConfig()
    default = recipe_setting(recipe)
    margin = table[best]["criterion_mean_hamming"] - table[INCUMBENT]["criterion_mean_hamming"]
    spread = max(table[best]["criterion_seed_std"], table[INCUMBENT]["criterion_seed_std"])
    chosen = best if margin > spread else INCUMBENT
    if chosen == best:  # the same-place folds cannot see content: keep the levels where they cost nothing measurable
        close = [k for k in table if k.startswith("levels") and table[k]["criterion_mean_hamming"]
                 >= table[best]["criterion_mean_hamming"] - table[best]["criterion_seed_std"]]
        chosen = max(close, key=lambda k: table[k]["criterion_mean_hamming"]) if close else best
    return {
        "recipe": asdict(recipe),
        "rule": f"keep the incumbent ({INCUMBENT}, the setting that landed before the head's input was chosen "
                "here) unless the best setting beats it by more than the seed std of the criterion; then, of the "
                "settings within the best's seed std of it, the best whose input keeps the pooled levels (what is in "
                "a chip wherever it is: these folds measure finding the same place only), else the best",
        "best": best, "incumbent": INCUMBENT, "best_minus_incumbent": round(margin, 4), "seed_std": spread,
        "chosen": chosen, "recipe_default": default, "default_is_chosen": default == chosen, "table": table,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rasters", type=Path, default=Path(os.environ.get("RSHASH_RASTERS", al.SHARED_RASTERS)))
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--cache-dir", type=Path, help="feature cache (default: a temporary folder)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--summarise", action="store_true", help="recompute the table, the choice and the recipe's "
                        "default from the per-place scores the results file holds (no fitting)")
    args = parser.parse_args(argv)
    command = "python benchmarks/select_selfsup.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.summarise:
        out = json.loads(args.out.read_text())
        out |= summarise(out["places"], out["seeds"])
        out["command"] = f"{out['command']}; then {command}"
    else:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="select-selfsup-") as tmp:
            cache = args.cache_dir or Path(tmp)
            places = {name: place_scores(name, args.rasters, seeds, cache) for name in al.PLACES}
        out = {
            "benchmark": "select_selfsup", "command": command,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                        "python": platform.python_version()},
            "protocol": "archive_learning.py's same-place folds (4 per place, training chips only); tie-aware "
                        "recall@10 pooled over folds; criterion = mean over naip, landsat, landsat_heldout_date of "
                        "the Hamming recall@10, then over seeds", "seeds": seeds,
            **summarise(places, seeds), "places": places, "seconds": round(time.perf_counter() - started, 1),
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: out[k] for k in ("best", "chosen", "recipe_default", "best_minus_incumbent", "seed_std",
                                          "default_is_chosen")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
