"""``convnn export --ckpt PATH --out DIR``: a checkpoint's network as timm shares models
(``model.safetensors``, ``config.json``, a model card ``README.md``;
:func:`lightning_modules.export.export_checkpoint`)."""

from __future__ import annotations

from typing import Any

from ..files import check_checkpoint_file, check_new_directory
from .parser import CommandParser

__all__ = ["main"]


def _parser() -> CommandParser:
    parser = CommandParser(
        prog="convnn export",
        description="Export a checkpoint's network for timm.create_model('local-dir:DIR', "
        "pretrained=True): model.safetensors (EMA weights when kept), config.json, README.md.",
    )
    parser.add_argument("--ckpt", type=str, required=True, help="Lightning checkpoint (.ckpt).")
    parser.add_argument("--out", type=str, required=True, help="a new or empty directory")
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """``convnn export``: write the directory, print what it holds; returns the summary."""
    args = _parser().parse_args(argv)
    check_new_directory(args.out, "--out")  # before the seconds of Lightning imports
    check_checkpoint_file(args.ckpt, "--ckpt")
    from ..model_export import FILES, export_checkpoint

    done = export_checkpoint(args.ckpt, args.out)
    ema = " (EMA weights)" if done["ema"] else ""
    print(f"convnn export: {done['model']}{ema} -> {done['out']}: {', '.join(FILES)}")
    print(f"load it with timm.create_model('local-dir:{done['out']}', pretrained=True)")
    return done
