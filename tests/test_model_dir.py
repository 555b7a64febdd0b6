"""Model directories: replaced with no moment without one (crash at every step), leftovers recovered;
one config schema (``rshash.model_config``) read with clear errors; no import cycle; no torch to search."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rshash import io_utils
from rshash.io_utils import atomic_directory, recover_directory, versioned_directory
from rshash.model_config import (
    _LATER_DEFAULTS,
    FORMAT_VERSION,
    ModelConfig,
    ModelDirError,
    ModelNotFoundError,
    has_model,
    read_config,
)

SRC = Path(__file__).resolve().parent.parent / "src"


class Crash(BaseException):
    """A simulated kill: raised instead of one filesystem step (BaseException, like KeyboardInterrupt)."""


def _shown(path: Path) -> str | None:
    """What a reader opening ``path/content.txt`` sees now (``None``: nothing there)."""
    try:
        return (path / "content.txt").read_text()
    except (FileNotFoundError, NotADirectoryError):
        return None


class _Steps:
    """Stands in for ``os`` and the removal/exchange helpers in ``io_utils``: before each step that changes the
    file system it records what a reader would see, and it raises :class:`Crash` instead of step ``crash_at``."""

    def __init__(self, path: Path, crash_at: int | None):
        self.path = path
        self.crash_at = crash_at
        self.count = 0
        self.seen: list[str | None] = []

    def step(self, fn):
        def run(*args, **kwargs):
            self.seen.append(_shown(self.path))
            if self.count == self.crash_at:
                raise Crash(f"killed before step {self.count}: {fn.__name__}{args}")
            self.count += 1
            return fn(*args, **kwargs)

        return run

    def install(self, monkeypatch) -> None:
        steps = self

        class _OS:
            def __getattr__(self, name):
                real = getattr(os, name)
                return steps.step(real) if name in ("replace", "rename", "symlink") else real

        monkeypatch.setattr(io_utils, "os", _OS())
        monkeypatch.setattr(io_utils, "_remove", self.step(io_utils._remove))
        monkeypatch.setattr(io_utils, "exchange_paths", self.step(io_utils.exchange_paths))


def _write(path: Path, content: str, replace=versioned_directory) -> None:
    with replace(path) as tmp:
        (tmp / "content.txt").write_text(content)


def _plain(path: Path, content: str) -> None:
    """A model directory as written before versioning: a plain directory."""
    path.mkdir(parents=True)
    (path / "content.txt").write_text(content)


def _leftovers(parent: Path, name: str) -> set[str]:
    return {p.name for p in parent.iterdir()} - {name, f".{name}.lock"}


@pytest.mark.parametrize("start", ["versioned", "plain", "plain-no-exchange"])
def test_a_crash_at_any_step_leaves_the_old_or_the_new_directory(tmp_path, monkeypatch, start):
    """Kill the replacement before each of its steps in turn: a reader always finds the old content or the new
    one (the one-off move of a plain directory on a file system without an atomic exchange is finished by the
    next read), and the next save leaves one version and no leftovers."""
    crash_at, crashed = 0, True
    while crashed:
        root = tmp_path / f"try{crash_at}"
        path = root / "model"
        if start == "versioned":
            _write(path, "old")
        else:
            _plain(path, "old")
        with monkeypatch.context() as m:
            if start == "plain-no-exchange":
                m.setattr(io_utils, "_renameat2", None)
            steps = _Steps(path, crash_at)
            steps.install(m)
            try:
                _write(path, "new")
                crashed = False
            except Crash:
                pass
        gaps = [i for i, seen in enumerate(steps.seen) if seen not in ("old", "new")]
        if start == "plain-no-exchange":  # the path is missing for one step; a journal lets a read finish it
            assert len(gaps) <= 1, (crash_at, steps.seen)
        else:
            assert not gaps, (crash_at, steps.seen)
        assert recover_directory(path) == path
        after = _shown(path)
        assert after in ("old", "new"), (crash_at, after)
        if not crashed:
            assert after == "new" and path.is_symlink() and _leftovers(root, "model") == {os.readlink(path)}
        _write(path, "next")  # the next save recovers and tidies whatever the crash left
        assert _shown(path) == "next"
        assert _leftovers(root, "model") == {os.readlink(path)}, (crash_at, _leftovers(root, "model"))
        crash_at += 1
    assert crash_at >= 4  # the steps were really exercised


def test_a_missing_directory_after_an_interrupted_move_is_recovered_on_read(tmp_path, monkeypatch):
    """The one window a plain directory's first replacement has without an atomic exchange, found by a reader."""
    path = tmp_path / "model"
    _plain(path, "old")
    (path / "config.json").write_text(json.dumps(_config_dict()))
    with monkeypatch.context() as m:
        m.setattr(io_utils, "_renameat2", None)
        real_replace = os.replace

        class _OS:
            def __getattr__(self, name):
                return getattr(os, name)

            @staticmethod
            def replace(src, dst):  # the kill: the old directory moved away, the link not yet in place
                if Path(dst) == path:
                    raise Crash("killed")
                return real_replace(src, dst)

        m.setattr(io_utils, "os", _OS())
        with pytest.raises(Crash):
            with versioned_directory(path) as tmp:
                (tmp / "content.txt").write_text("new")
                (tmp / "config.json").write_text(json.dumps(_config_dict()))
    assert not path.exists()
    assert read_config(path).bits == 16  # the read finished the replacement
    assert path.is_symlink() and _shown(path) == "new"


def test_a_failed_build_changes_nothing(tmp_path):
    path = tmp_path / "model"
    _write(path, "old")
    with pytest.raises(RuntimeError):
        with versioned_directory(path) as tmp:
            (tmp / "content.txt").write_text("half")
            raise RuntimeError("export failed")
    assert _shown(path) == "old" and _leftovers(tmp_path, "model") == {os.readlink(path)}


def test_a_deleted_link_is_not_resurrected(tmp_path):
    """Deleting the model (its link) means no model: nothing brings an old version back."""
    path = tmp_path / "model"
    _write(path, "old")
    path.unlink()
    assert recover_directory(path) is None and not has_model(path)
    _write(path, "new")
    assert _shown(path) == "new" and _leftovers(tmp_path, "model") == {os.readlink(path)}


def test_plain_directories_are_swapped_whole(tmp_path):
    """The other users of atomic_directory (reports, caches, datasets) keep a plain directory."""
    path = tmp_path / "report"
    _write(path, "one", replace=atomic_directory)
    _write(path, "two", replace=atomic_directory)
    assert not path.is_symlink() and _shown(path) == "two"
    assert {p.name for p in tmp_path.iterdir()} == {"report"}


# ---------------------------------------------------------------------------- one config schema


def _config_dict(**changes) -> dict:
    return ModelConfig(bits=16, input_size=224, fingerprint="0123456789abcdef").to_dict() | changes


def _model(tmp_path: Path, text: str) -> Path:
    (tmp_path / "m").mkdir(exist_ok=True)
    (tmp_path / "m" / "config.json").write_text(text)
    return tmp_path / "m"


def test_read_config_returns_the_dataclass(tmp_path):
    config = read_config(_model(tmp_path, json.dumps(_config_dict(class_names=["a", "b"]))))
    assert isinstance(config, ModelConfig)
    assert (config.bits, config.input_size, config.fingerprint, config.format_version) == (
        16, 224, "0123456789abcdef", FORMAT_VERSION)
    assert config.descriptor_dims == 128 and config.class_names == ["a", "b"] and isinstance(config.taps, tuple)
    assert ModelConfig.from_dict(config.to_dict()) == config
    assert "fingerprint" not in config.to_dict(fingerprint=False)
    assert "input_size" not in ModelConfig().to_dict()  # unset until saved


@pytest.mark.parametrize(
    ("text", "error", "match"),
    [
        (None, ModelNotFoundError, "no config.json"),
        ("{not json", ModelDirError, "unreadable"),
        ("[1, 2]", ModelDirError, "not a JSON object"),
        (json.dumps(_config_dict(format_version=999)), ModelDirError, "format version 999"),
        (json.dumps({k: v for k, v in _config_dict().items() if k != "fingerprint"}), ModelDirError, "'fingerprint'"),
        (json.dumps(_config_dict(bits="16")), ModelDirError, "'bits' is missing or not a int"),
    ],
)
def test_read_config_errors_are_clear(tmp_path, text, error, match):
    path = tmp_path / "m" if text is None else _model(tmp_path, text)
    with pytest.raises(error, match=match):
        read_config(path)


def test_a_missing_model_is_also_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_config(tmp_path / "nothing")


def test_saved_model_directory_end_to_end(tmp_path):
    """save_model_dir writes a versioned directory; a second save replaces it whole; the fingerprint is the
    hash of the encoder and every config field but itself (as model directories already on disk have it)."""
    from rshash.encoder import Encoder
    from rshash.index import Index
    from rshash.model import HashingModel
    from rshash.model_dir import load_model, save_model_dir

    path = tmp_path / "model"
    model = HashingModel(ModelConfig(bits=16, class_names=["x", "y"]))
    first = save_model_dir(path, model)
    raw = json.loads((path / "config.json").read_text())
    h = hashlib.sha256((path / "encoder.onnx").read_bytes())
    h.update(json.dumps({k: v for k, v in raw.items() if k != "fingerprint"}, sort_keys=True).encode())
    assert raw["fingerprint"] == first == h.hexdigest()[:16]
    # every field is saved, except fields added later while at their default (older fingerprints stay valid)
    assert set(raw) == set(ModelConfig.__dataclass_fields__) - set(_LATER_DEFAULTS)
    assert read_config(path).input_size == 224 and Encoder(path).fingerprint == first
    index = Index.create(tmp_path / "index", path)  # records the public path, not the version behind it
    assert index.model_dir == path.absolute()
    index.close()

    assert save_model_dir(path, model, metrics={"again": 1}) == first  # same encoder, same fingerprint
    assert path.is_symlink() and os.readlink(path) == ".model.v2"
    assert _leftovers(tmp_path, "model") == {".model.v2", "index"}
    assert json.loads((path / "metrics.json").read_text()) == {"again": 1}
    assert load_model(path).config.fingerprint == first
    with Index.open(tmp_path / "index") as reopened:
        assert reopened.model_dir == path.absolute()


# ---------------------------------------------------------------------------- structure


def _imports(package: Path) -> dict[str, set[str]]:
    """Module -> rshash modules it imports (at top level, inside functions or for type checking only)."""
    names = {}
    for f in package.rglob("*.py"):
        parts = list(f.relative_to(package.parent).with_suffix("").parts)
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    graph: dict[str, set[str]] = {}
    for mod, f in names.items():
        pkg = mod.split(".") if f.name == "__init__.py" else mod.split(".")[:-1]
        deps = set()
        tree = ast.parse(f.read_text())
        for node in ast.walk(tree):  # top level, inside functions and under TYPE_CHECKING alike
            if isinstance(node, ast.ImportFrom):
                base = ".".join(pkg[: len(pkg) - node.level + 1] + [node.module or ""]) if node.level else node.module
                base = (base or "").rstrip(".")
                deps.update(f"{base}.{a.name}" if f"{base}.{a.name}" in names else base for a in node.names)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
        graph[mod] = {d for d in deps if d in names and d != mod}
    return graph


def test_no_import_cycle():
    graph = _imports(SRC / "rshash")
    assert "rshash.model_dir" not in graph["rshash.model"] and "rshash.model" in graph["rshash.model_dir"]
    state: dict[str, int] = {}

    def visit(mod: str, trail: list[str]) -> None:
        state[mod] = 1
        for dep in sorted(graph[mod]):
            assert state.get(dep) != 1, f"import cycle: {' -> '.join(trail + [mod, dep])}"
            if dep not in state:
                visit(dep, trail + [mod])
        state[mod] = 2

    for mod in sorted(graph):
        if mod not in state:
            visit(mod, [])


def test_searching_and_serving_do_not_import_torch():
    code = ("import sys, rshash.index, rshash.service.app, rshash.encoder, rshash.model_dir, rshash.model_config; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=SRC.parent)
