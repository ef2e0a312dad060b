"""GPU benchmark of ConvNN against PyTorch's own layers, and the quickstart on the GPU.

    python benchmarks/bench_gpu.py cases [--json OUT] [--repeats 10] [--only TEXT]
    python benchmarks/bench_gpu.py cases --dry-run            # list the cases, run nothing
    python benchmarks/bench_gpu.py cases --device cpu --tiny  # every case once, tiny, CPU
    python benchmarks/bench_gpu.py quickstart [--steps 200] [--json OUT]

``cases`` times forward+backward (median of ``--repeats`` after warm-up, synchronized)
and the peak memory allocated during one run, for ConvNN and its baseline, in bf16 on the
GPU: ConvNN-attention of ViT-B/16 (197 tokens, k = 9 and 16) against flash attention
(timm ``Attention``, SDPA restricted to the flash kernel); ConvNN2d at the four ResNet-50
stage sizes against ``nn.Conv2d`` 3x3 (cuDNN); one AdamW training step (bf16 autocast) of
``convnn_vit_base_patch16_224`` and ``convnn_resnet50`` at batch 64 against timm's
``vit_base_patch16_224`` and ``resnet50``. Prints a Markdown table; ``--json`` writes it.

``quickstart`` trains ``configs/quickstart.yaml`` for ``--steps`` steps twice from the
same seed: on the CPU in float32 (the reference) and on ``--device`` in ``--precision``;
the validation top-1 of the two must agree within ``--tolerance`` (exit status 1 if not).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # the CPU profiler of peak_memory: quiet

import torch  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from measure import median_time, peak_memory  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
Step = Callable[[], None]

TOLERANCE = 0.05
"""Largest |GPU - CPU| validation top-1 of the 200-step quickstart from one seed: two
binomial standard deviations of a top-1 near 0.69 on 360 images (0.024 each); on the CPU,
bf16-mixed and float32 from seed 0 differed by 0.008 (docs/gpu.md)."""


@dataclass(frozen=True)
class Sizes:
    """The benchmark's shapes: the real ones (``FULL``) or a CPU smoke test (``TINY``)."""

    batch: int
    dim: int
    heads: int
    tokens: int
    stages: tuple[tuple[int, int], ...]
    vit: dict[str, Any] = field(default_factory=dict)
    resnet: dict[str, Any] = field(default_factory=dict)
    image: int = 224


FULL = Sizes(64, 768, 12, 197, ((64, 56), (128, 28), (256, 14), (512, 7)))
TINY = Sizes(
    2, 32, 2, 17, ((8, 8), (8, 6), (16, 4), (16, 3)), {"depth": 1, "img_size": 48},
    {"layers": (1, 1, 1, 1)}, image=48,
)  # fmt: skip


@dataclass(frozen=True)
class Case:
    """A ConvNN step and its baseline step, built on demand by ``build(device, dtype)``."""

    name: str
    baseline: str
    build: Callable[[str, torch.dtype], tuple[Step, Step]]
    target: str = "report"


def synced(fn: Step, device: str) -> Step:
    """``fn`` followed by a CUDA synchronization (so that wall time is GPU time)."""
    if device != "cuda":
        return fn

    def run() -> None:
        fn()
        torch.cuda.synchronize()

    return run


def layer_step(module: nn.Module, x: torch.Tensor, flash: bool = False) -> Step:
    """One forward+backward of ``module`` on a fresh leaf copy of ``x`` (``flash``: SDPA
    may use the flash kernel only, so a missing flash kernel is an error, not a fallback)."""

    def run() -> None:
        inp = x.detach().requires_grad_(True)
        ctx = contextlib.nullcontext()
        if flash:
            from torch.nn.attention import SDPBackend, sdpa_kernel

            ctx = sdpa_kernel([SDPBackend.FLASH_ATTENTION])
        with ctx:
            module(inp).float().sum().backward()

    return run


def train_step(model: nn.Module, images: torch.Tensor, dtype: torch.dtype) -> Step:
    """One AdamW step under autocast to ``dtype`` (float32 weights)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    labels = torch.arange(images.shape[0], device=images.device) % 10
    device = images.device.type

    def run() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32):
            loss = nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        opt.step()

    return run


def attention_case(s: Sizes, k: int) -> Case:
    def build(device: str, dtype: torch.dtype) -> tuple[Step, Step]:
        from timm.layers import Attention

        import convnn

        attn = Attention(s.dim, s.heads, qkv_bias=True).to(device, dtype)
        cnn = convnn.ConvNNAttention.from_attention(attn, k=k).to(device, dtype)
        x = torch.randn(s.batch, s.tokens, s.dim, device=device, dtype=dtype)
        return layer_step(cnn, x), layer_step(attn, x, flash=device == "cuda")

    name = (
        f"ConvNNAttention all k={k}, ViT-B/16 layout ({s.tokens} tokens, dim {s.dim}), B={s.batch}"
    )
    return Case(name, "flash attention (timm Attention)", build, "time <= 1.3x")


def stage_case(s: Sizes, C: int, H: int) -> Case:
    def build(device: str, dtype: torch.dtype) -> tuple[Step, Step]:
        import convnn

        x = torch.randn(s.batch, C, H, H, device=device, dtype=dtype)
        conv = nn.Conv2d(C, C, 3, padding=1).to(device, dtype)
        cnn = convnn.ConvNN2d(C, C, 3, padding=1).to(device, dtype)  # the model's default
        return layer_step(cnn, x), layer_step(conv, x)

    name = f"ConvNN2d all cosine k=9 (convnn_resnet50's layer), C={C} {H}x{H}, B={s.batch}"
    return Case(name, "nn.Conv2d 3x3 (cuDNN)", build)


def model_case(s: Sizes, variant: str, baseline: str, kwargs: dict[str, Any]) -> Case:
    def build(device: str, dtype: torch.dtype) -> tuple[Step, Step]:
        import timm

        import convnn  # noqa: F401  (registers the convnn_* models)

        images = torch.randn(s.batch, 3, s.image, s.image, device=device)
        steps = []
        for name in (variant, baseline):
            torch.manual_seed(0)
            model = timm.create_model(name, num_classes=10, **kwargs).to(device)
            steps.append(train_step(model, images, dtype))
        return steps[0], steps[1]

    name = f"training step {variant} ({s.image}x{s.image}), B={s.batch}, AdamW"
    return Case(name, f"timm {baseline}", build)


def cases(s: Sizes) -> list[Case]:
    """Every case of the benchmark at sizes ``s``, in the order they run."""
    out = [attention_case(s, k) for k in (9, 16)]
    out += [stage_case(s, C, H) for C, H in s.stages]
    out.append(model_case(s, "convnn_vit_base_patch16_224", "vit_base_patch16_224", s.vit))
    out.append(model_case(s, "convnn_resnet50", "resnet50", s.resnet))
    return out


def run_case(case: Case, device: str, dtype: torch.dtype, repeats: int, warmup: int) -> dict:
    new, base = (synced(f, device) for f in case.build(device, dtype))
    t_new, t_base = median_time(new, repeats, warmup), median_time(base, repeats, warmup)
    m_new, m_base = peak_memory(new), peak_memory(base)
    return dict(name=case.name, baseline=case.baseline, target=case.target,
                time_ms=t_new * 1e3, baseline_time_ms=t_base * 1e3, time_ratio=t_new / t_base,
                memory_mib=m_new / 2**20, baseline_memory_mib=m_base / 2**20,
                memory_ratio=m_new / max(m_base, 1))  # fmt: skip


def markdown(rows: list[dict]) -> str:
    lines = ["| case | baseline | ConvNN | baseline | time ratio | ConvNN peak | baseline peak "
             "| memory ratio | target |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['baseline']} | {r['time_ms']:.2f} ms | "
            f"{r['baseline_time_ms']:.2f} ms | {r['time_ratio']:.2f}x | {r['memory_mib']:.0f} MiB"
            f" | {r['baseline_memory_mib']:.0f} MiB | {r['memory_ratio']:.2f}x | {r['target']} |"
        )
    return "\n".join(lines)


def check_device(device: str) -> None:
    """Exit with one line when ``device`` is ``cuda`` and there is none."""
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_gpu: error: no CUDA device (torch.cuda.is_available() is False)")


def run_cases(args: argparse.Namespace) -> None:
    sizes = TINY if args.tiny else FULL
    selected = [c for c in cases(sizes) if not args.only or args.only in c.name]
    if args.dry_run:
        print("\n".join(f"{c.name} | vs {c.baseline} | {c.target}" for c in selected))
        return
    check_device(args.device)
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    repeats, warmup = (1, 0) if args.tiny else (args.repeats, 3)
    rows = []
    for case in selected:
        rows.append(run_case(case, args.device, dtype, repeats, warmup))
        print(markdown(rows[-1:]).splitlines()[-1], flush=True)
    where = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(f"\ntorch {torch.__version__}, {where}, {dtype}, median of {repeats}\n")
    print(markdown(rows))
    if args.json:
        info = dict(torch=torch.__version__, device=where, dtype=str(dtype), repeats=repeats)
        Path(args.json).write_text(json.dumps(dict(info, rows=rows), indent=2))


def train_quickstart(accelerator: str, precision: str, steps: int, seed: int, out: str) -> float:
    """Validation top-1 after ``steps`` steps of the quickstart from ``seed``."""
    from lightning_modules.lightning_cli import ConvNNCLI

    args = ["fit", "-c", str(ROOT / "configs" / "quickstart.yaml"), "--seed_everything", str(seed),
            "--trainer.max_steps", str(steps), "--trainer.accelerator", accelerator,
            "--trainer.precision", precision, "--trainer.logger.init_args.save_dir", out,
            "--trainer.enable_progress_bar", "false"]  # fmt: skip
    cli = ConvNNCLI(args=args)
    metrics = cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)
    return float(metrics[0]["val/acc1"])


def run_quickstart(args: argparse.Namespace) -> None:
    check_device(args.device)
    accelerator = "gpu" if args.device == "cuda" else "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        runs = [("cpu", "32-true"), (accelerator, args.precision)]
        accs = [train_quickstart(a, p, args.steps, args.seed, tmp) for a, p in runs]
    diff = accs[1] - accs[0]
    ok = abs(diff) <= args.tolerance
    result = dict(steps=args.steps, seed=args.seed, cpu_float32_acc1=accs[0],
                  device=args.device, precision=args.precision, device_acc1=accs[1],
                  difference=diff, tolerance=args.tolerance, ok=ok)  # fmt: skip
    print(f"| quickstart {args.steps} steps, seed {args.seed} | CPU float32 {accs[0]:.4f} | "
          f"{args.device} {args.precision} {accs[1]:.4f} | difference {diff:+.4f} "
          f"(allowed {args.tolerance}) | {'ok' if ok else 'MISMATCH'} |")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    if not ok:
        raise SystemExit(f"bench_gpu: error: quickstart top-1 differs by {diff:+.4f}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="mode", required=True)
    c = sub.add_parser("cases", help="ConvNN layers and training steps vs their baselines")
    c.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    c.add_argument("--tiny", action="store_true", help="tiny sizes, one repeat (smoke test)")
    c.add_argument("--dry-run", action="store_true", help="list the cases, run nothing")
    c.add_argument("--repeats", type=int, default=10)
    c.add_argument("--only", help="run the cases whose name contains this text")
    c.add_argument("--json", help="write the rows to this file")
    q = sub.add_parser("quickstart", help="the quickstart on --device vs the CPU")
    q.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    q.add_argument("--precision", default="bf16-mixed")
    q.add_argument("--steps", type=int, default=200)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--tolerance", type=float, default=TOLERANCE)
    q.add_argument("--json", help="write the result to this file")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    torch.manual_seed(0)
    (run_cases if args.mode == "cases" else run_quickstart)(args)


if __name__ == "__main__":
    main()
