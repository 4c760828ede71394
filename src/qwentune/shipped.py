"""Files qwentune ships beside its code: the config templates (config/) and the demo data (data/demo/).

In a wheel they are package data under qwentune/shipped/ (pyproject.toml maps the repository's
config/ and data/demo/ there, so each file exists once in the repository); in a source checkout
(`pip install -e .`) they are read where they live, in the repository.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGED = Path(__file__).resolve().parent / "shipped"
_CHECKOUT = Path(__file__).resolve().parents[2]
_FOLDERS = {"config": "config", "demo": "data/demo"}  # in the package -> in the repository


def shipped_file(folder: str, name: str) -> Path:
    """The shipped file `name` of `folder` ("config" or "demo"), e.g. shipped_file("config", "demo.yaml")."""
    if _PACKAGED.is_dir():
        return _PACKAGED / folder / name
    return _CHECKOUT / _FOLDERS[folder] / name
