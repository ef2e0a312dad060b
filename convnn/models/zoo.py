"""The model zoo: the paper's variants (docs/method.md §4) and the other ``convnn_*`` models, as
``(title, model name, input size, {row label: model kwargs})`` with the baseline first.

``python -m convnn.models.zoo [--all] [--markdown]`` prints their parameters and
GFLOPs with :func:`convnn.tools.profile.profile`; ``docs/models.md`` lists the results.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import timm

from ..tools.profile import markdown_table, print_profiles, profile

__all__ = ["OTHER_MODELS", "PAPER_MODELS", "main"]

PAPER_MODELS = [
    (
        "ResNet-50",
        "convnn_resnet50",
        224,
        {
            "conv": dict(layer="conv"),
            "ConvNN all k=9": dict(layer="convnn"),
            "branching all k=9": dict(layer="branching"),
            "branching random k=9 r=32": dict(
                layer="branching", candidates="random", num_samples=32
            ),
            "branching spatial k=9 r=25": dict(
                layer="branching", candidates="spatial", num_samples=25
            ),
        },
    ),
    (
        "ViT-B/16",
        "convnn_vit_base_patch16_224",
        224,
        {
            "attention": dict(layer="attention"),
            "ConvNN-attention all k=9": dict(layer="convnn"),
            "ConvNN-attention random k=9 r=32": dict(candidates="random", num_samples=32),
            "ConvNN-attention spatial k=9 r=128": dict(candidates="spatial", num_samples=128),
            "ConvNN-attention all k=16": dict(k=16),
            "branching (6 of 12 heads) k=9": dict(layer="branching"),
        },
    ),
]


def _variants(base: str) -> dict[str, dict]:
    return {base: dict(layer=base), "convnn": {}, "branching 0.5": dict(layer="branching")}


OTHER_MODELS = [
    ("ResNet-18", "convnn_resnet18", 224, _variants("conv")),
    ("ViT-S/16", "convnn_vit_small_patch16_224", 224, _variants("attention")),
    ("ViT-Ti/16", "convnn_vit_tiny_patch16_224", 224, _variants("attention")),
    ("ResNet-18 CIFAR", "convnn_resnet18_cifar", 32, _variants("conv")),
    ("ViT-Ti/4 CIFAR", "convnn_vit_tiny_patch4_32", 32, _variants("attention")),
    *[(f"VGG-{d} CIFAR", f"convnn_vgg{d}", 32, _variants("conv")) for d in (11, 13, 16, 19)],
]


def main(argv: Sequence[str] | None = None) -> None:
    """Print the profile tables of the paper's models (``--all``: every model)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--all", action="store_true", help="also the other convnn_* models")
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    args = parser.parse_args(argv)
    for title, name, size, rows in PAPER_MODELS + (OTHER_MODELS if args.all else []):
        profiles = {
            label: profile(timm.create_model(name, **kwargs), size)
            for label, kwargs in rows.items()
        }
        heading = f"{title} ({name}) at {size}x{size}"
        if args.markdown:
            print(f"### {heading}\n\n{markdown_table(profiles)}\n")
        else:
            print_profiles(profiles, title=heading)


if __name__ == "__main__":
    main()
