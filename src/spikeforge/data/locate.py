"""Find dataset folders on disk.

Datasets live in folders named after the dataset (``mnist/``, ``fashion-mnist/``, ...) below a
*data root*. Candidate roots, in search order:

1. an explicit ``root`` argument (when given, it is the only root searched);
2. the environment variable ``SPIKEFORGE_DATA``;
3. ``../shared/data`` relative to the current working directory;
4. ``<repo>/../shared/data``, where ``<repo>`` is the source checkout holding this file (found by
   walking up to the first folder with a ``pyproject.toml`` or ``.git``);
5. ``shared/data`` inside the current working directory and inside ``<repo>``;
6. the download cache ``~/.cache/spikeforge/data``.

The first root that holds the requested dataset folder (and, if asked, the required files) wins.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from spikeforge.core.checks import SpikeforgeError, describe

__all__ = [
    "DATA_ENV_VAR",
    "candidate_roots",
    "data_root",
    "default_cache_root",
    "find_dataset_dir",
]

DATA_ENV_VAR = "SPIKEFORGE_DATA"
"""Environment variable that names a data root."""


def default_cache_root() -> Path:
    """The download cache ``~/.cache/spikeforge/data`` (not created here)."""
    return Path.home() / ".cache" / "spikeforge" / "data"


def _repo_root() -> Path | None:
    """The source checkout holding this file, or None when installed outside one."""
    for parent in Path(__file__).resolve().parents:
        if (parent / "pyproject.toml").is_file() or (parent / ".git").exists():
            return parent
    return None


def _as_path(name: str, value: str | os.PathLike[str]) -> Path:
    if not isinstance(value, (str, os.PathLike)) or str(value) == "":
        raise SpikeforgeError(
            f"{name} must be a non-empty path (str or Path), got {describe(value)}."
        )
    return Path(value).expanduser()


def candidate_roots(explicit: str | os.PathLike[str] | None = None) -> list[Path]:
    """Data roots to search, in order, whether or not they exist.

    Args:
        explicit: A root given by the caller. When set, it is the only candidate.

    Returns:
        Absolute paths without duplicates.
    """
    if explicit is not None:
        return [_as_path("root", explicit).absolute()]
    roots: list[Path] = []
    env = os.environ.get(DATA_ENV_VAR)
    if env:
        roots.append(Path(env).expanduser())
    cwd = Path.cwd()
    repo = _repo_root()
    roots.append(cwd.parent / "shared" / "data")
    if repo is not None:
        roots.append(repo.parent / "shared" / "data")
    roots.append(cwd / "shared" / "data")
    if repo is not None:
        roots.append(repo / "shared" / "data")
    roots.append(default_cache_root())
    unique: list[Path] = []
    seen: set[Path] = set()
    for root in roots:
        root = root.absolute()
        key = root.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(root)
    return unique


def _holds(folder: Path, files: Sequence[str]) -> bool:
    return folder.is_dir() and all((folder / f).is_file() for f in files)


def data_root(
    explicit: str | os.PathLike[str] | None = None,
    *,
    dataset: str | None = None,
    files: Sequence[str] = (),
) -> Path:
    """Return the first existing data root (holding ``dataset`` when given).

    Args:
        explicit: A root given by the caller; when set, only it is considered.
        dataset: Name of a dataset folder the root must contain (e.g. ``"mnist"``).
        files: File names that must exist inside the dataset folder (needs ``dataset``).

    Returns:
        The data root (the parent of the dataset folder).

    Raises:
        SpikeforgeError: if no candidate qualifies; the message lists the folders searched.
    """
    if dataset is None:
        if files:
            raise SpikeforgeError(
                f"files needs a dataset name, got dataset=None and files={files!r}."
            )
        searched = candidate_roots(explicit)
        for root in searched:
            if root.is_dir():
                return root
        raise SpikeforgeError(
            "No data root found; searched: " + ", ".join(str(r) for r in searched)
            + f". Create one of them, pass a root explicitly or set {DATA_ENV_VAR}."
        )
    return find_dataset_dir(dataset, explicit, files=files).parent


def find_dataset_dir(
    name: str,
    root: str | os.PathLike[str] | None = None,
    *,
    must_exist: bool = True,
    files: Sequence[str] = (),
) -> Path:
    """Locate the folder of dataset ``name``.

    Args:
        name: Dataset folder name, e.g. ``"mnist"``, ``"fashion-mnist"`` or ``"yin-yang"``.
        root: Explicit data root; when given, only ``<root>/<name>`` is considered.
        must_exist: If True, raise when no candidate folder qualifies. If False, return the place
            where the dataset *should* go instead: ``<root>/<name>`` for an explicit root, else
            ``$SPIKEFORGE_DATA/<name>`` when that variable is set, else
            ``~/.cache/spikeforge/data/<name>`` (the folder is not created).
        files: File names that must all exist inside the folder for it to qualify.

    Returns:
        Path of the dataset folder.

    Raises:
        SpikeforgeError: if ``must_exist`` and nothing qualifies; the message lists every folder
            searched and the files that were needed.
    """
    if not isinstance(name, str) or not name or "/" in name or "\\" in name:
        raise SpikeforgeError(
            f"name must be a dataset folder name such as 'mnist', got {describe(name)}."
        )
    searched = [r / name for r in candidate_roots(root)]
    for folder in searched:
        if _holds(folder, files):
            return folder
    if not must_exist:
        if root is not None:
            return searched[0]
        env = os.environ.get(DATA_ENV_VAR)
        base = Path(env).expanduser().absolute() if env else default_cache_root()
        return base / name
    need = f" holding {', '.join(files)}" if files else ""
    raise SpikeforgeError(
        f"Dataset folder '{name}'{need} not found; searched: "
        + ", ".join(str(f) for f in searched)
        + f". Pass root=..., or set the {DATA_ENV_VAR} environment variable to a folder that "
        f"contains '{name}/'."
    )
