"""A model's inspected layers as the run form offers them: the common choices first (its
final embedding, its input embedding, each stage's and each block's output, in network depth
order), then every module grouped by the block it sits in. Dropout and activation modules are
left out of the common choices: dropout is the identity at inference, and an activation
repeats the output of the layer before it.

Blocks are found from the module names alone (``PretrainedModel.layers`` keeps names and
output shapes): a block is a numbered module with submodules whose parent holds two or more
such (``layer1.0``, ``blocks.11``, ``encoder.layer.5``); a stage is a named module holding
blocks, among two or more such stages (``layer1`` ... ``layer4`` of a ResNet), or a numbered
one holding blocks (``stages.0`` of a ConvNeXt, ``blocks.1`` of an EfficientNet: then its
numbered siblings are stages too). A flat numbered Sequential (``features.0`` ...
``features.30`` of a VGG or an AlexNet: three or more numbered modules without submodules)
offers each numbered module's output: names alone do not tell a convolution from its ReLU.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

# The last part of a module name that says it is dropout or an activation.
NOT_A_CHOICE = re.compile(
    r"(^|_)(drop(out|_path|_block)?\d*|act\d*|activation|relu\d*|gelu|silu|swish|sigmoid|tanh"
    r"|softmax|identity|intermediate_act_fn|attn_drop|proj_drop|pos_drop|patch_drop)$",
    re.IGNORECASE,
)
INPUT_EMBEDDING = re.compile(r"^(embeddings|patch_embed|stem|embed_tokens|conv_stem)$")
# The outputs the adapters compute themselves (their ``native_layers``; the inspection lists
# them before the modules). tests/evaluation/test_layer_groups.py checks that every adapter's
# are here.
NATIVE_OUTPUTS = frozenset(
    {
        "pre_logits",
        "last_hidden_state",
        "output",
        "sentence_embedding",
        "image_embedding",
        "text_embedding",
        "video_embedding",
        "language",  # the baselines' and the language models' single output
        "pixels",
        "tfidf",
        "chargrams",
    }
)
MIN_FLAT_LAYERS = 3  # numbered modules a flat Sequential needs (a two-part stem is not one)


@dataclass(frozen=True)
class LayerGroup:
    label: str
    layers: list[str]


@dataclass(frozen=True)
class LayerOptions:
    common: list[LayerGroup]  # the final embedding, then stages and blocks in depth order
    every: list[LayerGroup]  # every module, grouped by its block, in depth order
    total: int


def _parent(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else ""


def _last(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def is_dropout_or_activation(name: str) -> bool:
    return bool(NOT_A_CHOICE.search(_last(name)))


def find_blocks(names: list[str]) -> list[str]:
    """The block outputs among ``names`` (see the module docstring), in their order."""
    has_children = {_parent(name) for name in names}
    numbered = [n for n in names if _last(n).isdigit() and n in has_children]
    per_parent = Counter(_parent(n) for n in numbered)
    return [n for n in numbered if per_parent[_parent(n)] >= 2]


def find_stages(names: list[str], blocks: list[str]) -> list[str]:
    holders = list(dict.fromkeys(_parent(b) for b in blocks if _parent(b)))
    named = [h for h in holders if not _last(h).isdigit()]
    per_parent = Counter(_parent(s) for s in named)
    stages = {s for s in named if per_parent[_parent(s)] >= 2}
    # A numbered block holding blocks (directly or in a named container) is a stage, and so
    # are its numbered siblings: one stage with a single block is still a stage.
    block_set = set(blocks)
    holding = {b for b in blocks if any(o != b and o.startswith(b + ".") for o in block_set)}
    stage_parents = {_parent(b) for b in holding}
    stages |= {b for b in blocks if _parent(b) in stage_parents}
    return [n for n in names if n in stages]


def find_flat_layers(names: list[str]) -> list[str]:
    """The numbered modules without submodules of a parent holding MIN_FLAT_LAYERS or more of
    them and nothing else (VGG's ``features.N``), in their order."""
    has_children = {_parent(name) for name in names}
    children = Counter(_parent(n) for n in names)
    leaves = [n for n in names if _last(n).isdigit() and n not in has_children]
    per_parent = Counter(_parent(n) for n in leaves)
    return [
        n
        for n in leaves
        if per_parent[_parent(n)] >= MIN_FLAT_LAYERS
        and per_parent[_parent(n)] == children[_parent(n)]
    ]


def native_outputs(names: list[str]) -> list[str]:
    """The adapter's own outputs: the leading names that are native outputs."""
    leading = []
    for name in names:
        if name not in NATIVE_OUTPUTS:
            break
        leading.append(name)
    return leading


def layer_options(names: list[str], default_layer: str) -> LayerOptions:
    blocks = find_blocks(names)
    stages = set(find_stages(names, blocks))
    block_set = set(blocks)
    flat = set(find_flat_layers(names))
    common: list[LayerGroup] = []
    outputs = [default_layer] if default_layer in names else []
    outputs += [n for n in native_outputs(names) if n != default_layer]
    inputs = [n for n in names if INPUT_EMBEDDING.match(_last(n)) and n not in outputs]
    if outputs or inputs:
        common.append(LayerGroup("Final and input embeddings", outputs + inputs[:1]))
    current: LayerGroup | None = None
    stage = ""  # the stage whose blocks join its group
    for name in names:
        if name in stages:
            current, stage = LayerGroup(f"Stage {name}", [name]), name
            common.append(current)
        elif name in block_set and not is_dropout_or_activation(name):
            if current is not None and stage and name.startswith(stage + "."):
                current.layers.append(name)
                continue
            label = f"Blocks of {_parent(name) or 'the model'}"
            if current is None or current.label != label:
                current, stage = LayerGroup(label, []), ""
                common.append(current)
            current.layers.append(name)
        elif name in flat:
            label = f"Layers of {_parent(name)}"
            if current is None or current.label != label:
                current, stage = LayerGroup(label, []), ""
                common.append(current)
            current.layers.append(name)
    return LayerOptions(common, _every(names, blocks), len(names))


def _every(names: list[str], blocks: list[str]) -> list[LayerGroup]:
    """Every name, in order, grouped by the deepest block it belongs to; the others by where
    they sit: before the first block, between blocks (in their stage), after the last."""
    inside = [
        i for i, n in enumerate(names) if any(n == b or n.startswith(b + ".") for b in blocks)
    ]
    groups: list[LayerGroup] = []
    for index, name in enumerate(names):
        owner = next((b for b in reversed(blocks) if name == b or name.startswith(b + ".")), "")
        if owner:
            label = f"in {owner}"
        elif not inside or index < inside[0]:
            label = "before the blocks" if inside else "modules"
        elif index > inside[-1]:
            label = "after the blocks"
        else:
            label = f"in {name}" if "." not in name else f"in {name.split('.')[0]}"
        if not groups or groups[-1].label != label:
            groups.append(LayerGroup(label, []))
        groups[-1].layers.append(name)
    return groups
