"""A model's inspected layers as the run form offers them: the common choices first (its
final embedding, its input embedding, each stage's and each block's output, in network depth
order), then every module grouped by the block it sits in. Dropout and activation modules are
left out of the common choices: dropout is the identity at inference, and an activation
repeats the output of the layer before it.

Blocks are found from the module names alone (``PretrainedModel.layers`` keeps names and
output shapes): a block is a numbered module with submodules whose parent holds two or more
such (``layer1.0``, ``blocks.11``, ``encoder.layer.5``); a stage is a named module holding
blocks, among two or more such stages (``layer1`` ... ``layer4`` of a ResNet).
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
    stages = [h for h in holders if not _last(h).isdigit()]
    per_parent = Counter(_parent(s) for s in stages)
    return [s for s in stages if per_parent[_parent(s)] >= 2]


def layer_options(names: list[str], default_layer: str) -> LayerOptions:
    blocks = find_blocks(names)
    stages = set(find_stages(names, blocks))
    block_set = set(blocks)
    common: list[LayerGroup] = []
    final = [default_layer] if default_layer in names else []
    inputs = [n for n in names if INPUT_EMBEDDING.match(_last(n)) and n != default_layer]
    if final or inputs:
        common.append(LayerGroup("Final and input embeddings", final + inputs[:1]))
    current: LayerGroup | None = None
    for name in names:
        if name in stages:
            current = LayerGroup(f"Stage {name}", [name])
            common.append(current)
        elif name in block_set and not is_dropout_or_activation(name):
            holder = _parent(name)
            if current is None or (holder not in stages and current.label != f"Blocks of {holder}"):
                current = LayerGroup(f"Blocks of {holder or 'the model'}", [])
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
