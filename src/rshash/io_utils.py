"""Crash-safe writes: a crash leaves either the old file or directory or the new one, never half of one.

Files (:func:`atomic_write_bytes`) are written to a temp name and renamed over the target.

Directories are built in a sibling temp directory first. :func:`versioned_directory`
(model directories) never leaves a moment without a directory at the path: the
content is published as a versioned sibling and the path is a symlink to it,
swapped atomically::

    PARENT/
      model -> .model.v3       what users open: MODEL_DIR/config.json
      .model.v3/               the current version
      .model.lock              serialises replacements

:func:`atomic_directory` (reports, caches, datasets) keeps a plain directory and
swaps it in with one atomic exchange where the OS has one (Linux ``renameat2``),
else with two renames.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

try:
    import fcntl
except ImportError:  # not POSIX: replacements are not serialised between processes
    fcntl = None  # type: ignore[assignment]


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """Flush every file and directory under ``root`` to disk (before publishing it)."""
    for folder, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(folder))


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


# ---------------------------------------------------------------------- an atomic exchange of two paths

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV}


def _load_renameat2() -> Callable[..., int] | None:
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_renameat2 = _load_renameat2()


def exchange_paths(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``).

    ``False`` (nothing changed) where the OS or file system has no such call.
    """
    if _renameat2 is None:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in _UNSUPPORTED:
        return False
    raise OSError(err, os.strerror(err), str(b))


def _remove(path: Path) -> None:
    """Delete a file, a symlink or a directory tree (missing is fine)."""
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------------- plain directories


@contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Build a directory in a sibling temp dir, then swap it into place.

    On error the temp dir is removed and any existing ``path`` is untouched. Replacing
    an existing directory is one atomic exchange where the OS supports it; elsewhere
    it takes two renames (use :func:`versioned_directory` where that gap matters).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    tmp.chmod(0o755)  # mkdtemp makes it private; a model or index directory is meant to be shared
    try:
        yield tmp
        if not (path.exists() or path.is_symlink()):
            os.replace(tmp, path)
        elif exchange_paths(tmp, path):
            _remove(tmp)  # now the old content
        else:
            old = path.with_name(f".{path.name}.old")
            _remove(old)
            os.replace(path, old)
            os.replace(tmp, path)
            _remove(old)
        _fsync_dir(path.parent)
    except BaseException:
        _remove(tmp)
        raise


# ---------------------------------------------------------------------- versioned directories


class _Siblings:
    """The names a versioned directory ``PARENT/NAME`` uses next to itself."""

    def __init__(self, path: Path):
        self.path = path
        self.parent = path.parent
        name = path.name
        self.lock = self.parent / f".{name}.lock"
        self.link = self.parent / f".{name}.link"  # a new symlink, before it replaces the path
        self.journal = self.parent / f".{name}.replacing"  # names the version being published (see _publish)
        self.legacy = self.parent / f".{name}.legacy"  # a plain directory being replaced by the first version
        self._version = re.compile(re.escape(f".{name}.v") + r"(\d+)")
        self._tmp = re.compile(re.escape(f".{name}.tmp-") + r"[A-Za-z0-9_]+")
        self.tmp_prefix = f".{name}.tmp-"

    def version(self, n: int) -> Path:
        return self.parent / f".{self.path.name}.v{n}"

    def versions(self) -> dict[int, Path]:
        out = {}
        for p in self.parent.iterdir():
            m = self._version.fullmatch(p.name)
            if m and p.is_dir() and not p.is_symlink():
                out[int(m.group(1))] = p
        return out

    def temps(self) -> list[Path]:
        return [p for p in self.parent.iterdir() if self._tmp.fullmatch(p.name)]

    def current(self) -> Path | None:
        """The version the path links to (``None``: no link, or not to one of ours)."""
        if not self.path.is_symlink():
            return None
        target = os.readlink(self.path)
        return self.parent / target if self._version.fullmatch(target) else None


@contextmanager
def _locked(s: _Siblings) -> Iterator[None]:
    """Hold the replacement lock of a versioned directory (between processes too)."""
    if fcntl is None:
        yield
        return
    fd = os.open(s.lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _recover(s: _Siblings, tidy: bool) -> None:
    """Finish an interrupted replacement (call with the lock held); ``tidy``: also delete its leftovers.

    A journal names a complete version that was being published while the path was
    briefly missing (only when a plain directory is first replaced where the OS has no
    atomic exchange): link it. Leftovers are temp directories, unpublished or replaced
    versions and the replaced plain directory; the published version is never touched.
    """
    if s.journal.is_file():
        version = s.parent / s.journal.read_text().strip()
        if not (s.path.exists() or s.path.is_symlink()):
            if version.is_dir():
                _link(s, version)
            elif s.legacy.is_dir():  # the new version is gone: put the old directory back
                os.rename(s.legacy, s.path)
        s.journal.unlink()
        _fsync_dir(s.parent)
    if not tidy:
        return
    current = s.current()
    for p in [*s.versions().values(), *s.temps(), s.link, s.legacy]:
        if p != current and (p.exists() or p.is_symlink()):
            _remove(p)


def _link(s: _Siblings, version: Path) -> None:
    """Point the path at ``version`` by an atomic rename of a new symlink (the path is a link or missing)."""
    _remove(s.link)
    os.symlink(version.name, s.link)
    os.replace(s.link, s.path)


def _publish(s: _Siblings, version: Path) -> None:
    """Make the path show ``version``; at no moment is there no directory at the path (see below)."""
    previous = s.current()
    if s.path.is_symlink() or not s.path.exists():
        _link(s, version)
        replaced = previous
    elif s.path.is_dir():  # a plain directory from before versioning (or from atomic_directory)
        _remove(s.link)
        os.symlink(version.name, s.link)
        if exchange_paths(s.link, s.path):  # the link at the path, the old directory at the link's name
            replaced = s.link
        else:  # two renames: the journal lets the next save or read finish them after a crash
            _remove(s.legacy)
            _write_durably(s.journal, version.name)  # before the move: a torn journal means nothing was moved
            os.rename(s.path, s.legacy)
            os.replace(s.link, s.path)
            s.journal.unlink()
            replaced = s.legacy
    else:
        raise FileExistsError(f"{s.path} exists and is not a directory")
    _fsync_dir(s.parent)
    if replaced is not None and replaced != version:
        _remove(replaced)


def _write_durably(path: Path, text: str) -> None:
    with open(path, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    _fsync_dir(path.parent)


@contextmanager
def versioned_directory(path: str | Path) -> Iterator[Path]:
    """Build a directory in a temp sibling, then publish it at ``path`` with no moment without one.

    The content becomes ``.NAME.vN`` next to ``path`` and ``path`` a symlink to it,
    replaced by one atomic rename; the previous version is deleted afterwards. A crash
    at any point leaves ``path`` showing the old content or the new one, and the next
    replacement deletes what the crash left behind. On error nothing changes.
    """
    s = _Siblings(Path(path).absolute())
    s.parent.mkdir(parents=True, exist_ok=True)
    with _locked(s):
        _recover(s, tidy=True)
        tmp = Path(tempfile.mkdtemp(dir=s.parent, prefix=s.tmp_prefix))
        tmp.chmod(0o755)  # mkdtemp makes it private; a model directory is meant to be shared
        try:
            yield tmp
            _fsync_tree(tmp)
            version = s.version(1 + max([*s.versions(), 0]))
            os.rename(tmp, version)
        except BaseException:
            _remove(tmp)
            raise
        _publish(s, version)


def recover_directory(path: str | Path) -> Path | None:
    """``path`` if a directory is there, after finishing an interrupted replacement if one left it missing.

    ``None`` when there is no directory at ``path`` (and nothing to recover). Never raises
    for an unwritable parent: then it only reports what is there.
    """
    path = Path(path)
    if path.exists():
        return path
    s = _Siblings(path.absolute())
    if s.parent.is_dir() and s.journal.is_file():
        try:
            with _locked(s):
                _recover(s, tidy=False)
        except OSError:
            pass
    return path if path.exists() else None
