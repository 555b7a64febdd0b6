"""``rshash evaluate`` end to end on synthetic scenes, and the evaluation protocols' index sets."""

import json
import re

import numpy as np
import pytest

from rshash.cli import main
from rshash.commands.evaluate import cross_task, evaluate_model
from rshash.data.datasets import ImageRecord
from rshash.data.synthetic import make_synthetic_dataset
from rshash.evaluation.protocols import protocol_b, unseen_assignment, unseen_classes, unseen_task

METRIC_KEYS = {"map_all", "map_at_10", "map_at_20", "map_at_20_min_norm", "p_at_10", "r_at_20"}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    make_synthetic_dataset(root / "data", classes=4, per_class=12, size=64)
    code = main(["train", "--data", str(root / "data"), "--out", str(root / "model"), "--bits", "16", "--views", "2",
                 "--finetune-epochs", "1", "--hash-epochs", "5", "--cache-dir", str(root / "cache")])
    assert code == 0
    return root


def _check_report(out, result):
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(result))
    assert METRIC_KEYS <= set(saved["metrics"])
    assert all(0.0 <= v <= 1.0 for v in saved["metrics"].values())
    assert len(saved["pr_curve"]["precision"]) == saved["bits"] + 1 == 17
    assert all(0.0 <= v <= 1.0 for v in saved["per_class_ap"].values())
    page = (out / "index.html").read_text()
    images = re.findall(r'src="([^"]+)"', page)
    assert {"pr_curve.png", "per_class_ap.png", "code_map.png"} <= set(images)
    assert sum(i.startswith("thumbs/") for i in images) >= 11  # at least one query row of 1 + 10
    for rel in images:
        assert not rel.startswith("/") and (out / rel).is_file(), rel
    return saved


def test_evaluate_on_training_data_uses_the_split(model, tmp_path):
    out = tmp_path / "report"
    result = evaluate_model(model / "model", model / "data", out, progress=False)
    saved = _check_report(out, result)
    assert saved["protocol"] == "split"
    assert saved["task"]["queries"] + saved["task"]["database"] == 48
    assert saved["task"]["queries"] == 4 * 2  # 20 % of 12 images per class rounds to 2
    assert saved["metrics"]["map_all"] > 0.25  # chance with 4 balanced classes ~0.25; trained codes do better


def test_cross_dataset_every_image_queries_the_others(model, tmp_path, capsys):
    other = tmp_path / "other"
    make_synthetic_dataset(other, classes=3, per_class=8, size=64, seed=7)
    out = tmp_path / "cross"
    code = main(["evaluate", "--model", str(model / "model"), "--data", str(other), "--out", str(out)])
    assert code == 0
    assert "protocol cross" in capsys.readouterr().out
    saved = _check_report(out, json.loads((out / "metrics.json").read_text()))
    assert saved["protocol"] == "cross" and saved["task"]["exclude_self"]
    assert saved["task"]["queries"] == saved["task"]["database"] == 24


def test_split_protocol_on_foreign_data_and_bad_out_dir_are_clear_errors(model, tmp_path, capsys):
    other = tmp_path / "other"
    make_synthetic_dataset(other, classes=2, per_class=3, size=64, seed=9)
    code = main(["evaluate", "--model", str(model / "model"), "--data", str(other), "--protocol", "split",
                 "--out", str(tmp_path / "r")])
    assert code == 2 and "needs the model's training data" in capsys.readouterr().err
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "precious.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not an rshash report"):
        evaluate_model(model / "model", other, busy, progress=False)
    assert (busy / "precious.txt").read_text() == "keep me"


# ---------------------------------------------------------------------------- protocols


def test_protocol_b_is_a_stratified_60_40_split_querying_itself():
    labels = np.repeat(np.arange(21), 100)
    task = protocol_b(labels, seed=0)
    assert len(task.queries) == 840 and len(task.train) == 1260
    assert np.array_equal(task.queries, task.database) and task.exclude_self
    assert not set(task.train) & set(task.queries)
    assert np.all(np.bincount(labels[task.queries]) == 40)


def test_unseen_classes_protocol_never_trains_on_unseen_images():
    names = [f"c{i:02d}" for i in range(21)]
    records = [ImageRecord(f"/x/{n}/{j}.png", n) for n in names for j in range(100)]
    unseen = unseen_classes(names, 5, seed=0)
    assert len(unseen) == 5 and unseen == unseen_classes(names, 5, seed=0)
    assignment = unseen_assignment(records, unseen, seed=1)
    for r in records:
        assert (assignment[r.path] == "test") == (r.label in unseen)
    labels = np.array([names.index(r.label) for r in records])
    ids = [names.index(u) for u in unseen]
    task = unseen_task(labels, ids, seed=2)
    assert np.all(np.bincount(labels[task.queries])[ids] == 20)
    assert np.all(np.bincount(labels[task.database])[ids] == 80)
    assert set(labels[task.queries]) == set(ids) and not set(task.queries) & set(task.database)
    other = unseen_task(labels, ids, seed=3)
    assert not np.array_equal(task.queries, other.queries)


def test_cross_task_samples_queries_when_large():
    task = cross_task(50, max_queries=10)
    assert len(task.queries) == 10 and len(task.database) == 50 and task.exclude_self
    assert set(task.queries) <= set(task.database)


def test_multilabel_manifest_reports_shared_label_relevance(model, tmp_path, capsys):
    """A ``labels`` column (';'-separated): relevant = at least one shared label, beside the single-label numbers."""
    from rshash.data.datasets import scan_folder

    records = scan_folder(model / "data")
    classes = sorted({r.label for r in records})
    manifest = tmp_path / "multi.csv"
    rows = ["path,labels"]
    for r in records:  # the first two classes also share a group label
        rows.append(f"{r.path},{r.label};group" if r.label in classes[:2] else f"{r.path},{r.label}")
    manifest.write_text("\n".join(rows) + "\n")
    out = tmp_path / "multi"
    assert main(["evaluate", "--model", str(model / "model"), "--data", str(manifest), "--out", str(out)]) == 0
    assert "multi-label relevance" in capsys.readouterr().out
    saved = json.loads((out / "metrics.json").read_text())
    single, multi = saved["metrics"], saved["metrics_multilabel"]
    assert saved["multilabel_labels"] == sorted(classes + ["group"])
    # relevance is a superset of same-class relevance: the top 10 can only hold more relevant items
    assert multi["p_at_10"] >= single["p_at_10"]
    assert saved["metrics_multilabel_hamming_only"]["p_at_10"] >= saved["metrics_hamming_only"]["p_at_10"]
