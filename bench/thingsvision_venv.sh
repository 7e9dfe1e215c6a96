#!/usr/bin/env bash
# Creates .bench/thingsvision-venv: a virtualenv of its own for thingsvision, the baseline of
# issue 3's throughput figure (bench/thingsvision_worker.py runs in it). thingsvision must not
# go into the project's .venv: its declared dependencies pin torchvision==0.15.2 (hence
# torch 2.0.1), transformers==4.40.1 and tensorflow<2.16, so a plain `pip install thingsvision`
# would replace this project's torch 2.14.1 / torchvision 0.29.1.
#
# So thingsvision goes in with --no-deps, followed by what `import thingsvision` and the timm
# path actually need, at thingsvision's own declared ranges (tensorflow is imported
# unconditionally by its extractors and data loader, even for torch models). pip then reports
# thingsvision's other requirements as "dependency conflicts": expected, and harmless here.
#
# Idempotent: a stamp in the venv records what was installed; rerunning with the same
# requirements does nothing. Prints the venv's python at the end.
#
#     bash bench/thingsvision_venv.sh
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.bench/thingsvision-venv
TORCH=(torch==2.14.1 torchvision==0.29.1)  # the pair on this project's disks (see pyproject)
THINGSVISION=thingsvision==2.7.3
NEEDED=("numpy<2" "tensorflow<2.16" "safetensors<0.6" timm torchtyping tqdm h5py)
STAMP="$VENV/.likeness-installed"
WANT="${TORCH[*]} $THINGSVISION ${NEEDED[*]}"

[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
    "$VENV/bin/pip" install -q "${TORCH[@]}"
    "$VENV/bin/pip" install -q --no-deps "$THINGSVISION"
    "$VENV/bin/pip" install -q "${TORCH[@]}" "${NEEDED[@]}"  # torch named again: keep it in place
    TF_CPP_MIN_LOG_LEVEL=3 "$VENV/bin/python" -c "import thingsvision.utils.data" >/dev/null
    echo "$WANT" >"$STAMP"
fi
echo "$(pwd)/$VENV/bin/python"
