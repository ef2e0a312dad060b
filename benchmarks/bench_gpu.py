"""GPU benchmark of ConvNN against PyTorch's own layers, and the quickstart on the GPU.

    python benchmarks/bench_gpu.py cases [--json OUT] [--repeats 10] [--only TEXT]
    python benchmarks/bench_gpu.py cases --dry-run            # list the cases, run nothing
    python benchmarks/bench_gpu.py cases --device cpu --tiny  # every case once, tiny, CPU
    python benchmarks/bench_gpu.py compile [--backend inductor] [--json OUT]
    python benchmarks/bench_gpu.py memory [--json OUT]
    python benchmarks/bench_gpu.py quickstart [--steps 460] [--seeds 0 1] [--json OUT]

``cases`` times forward+backward (median of ``--repeats`` after warm-up, synchronized)
and the peak memory allocated during one run, for ConvNN and its baseline, in bf16 on the
GPU: ConvNN-attention of ViT-B/16 (197 tokens, k = 9 and 16) against flash attention
(timm ``Attention``, SDPA restricted to the flash kernel); ConvNN2d at the four ResNet-50
stage sizes against ``nn.Conv2d`` 3x3 (cuDNN); one AdamW training step (bf16 autocast) of
``convnn_vit_base_patch16_224`` and ``convnn_resnet50`` at batch 64 against timm's
``vit_base_patch16_224`` and ``resnet50``. Prints a Markdown table; ``--json`` writes it.

``compile`` compiles one block of ``convnn_vit_base_patch16_224`` with ``torch.compile``
(``fullgraph=True``), checks that its output and input gradient agree with eager mode, and
times both (bf16 autocast, batch 64). ``memory`` measures the peak memory of ConvNN2d over
all candidates (``convnn_resnet50``'s layer) on the 56x56 map of ResNet-50's first stage
at batch 64, training (forward+backward) and inference, against its 3x3 convolution.

``quickstart`` trains ``configs/quickstart.yaml`` for ``--steps`` steps on ``--device`` in
``--precision`` from each of ``--seeds``, and once on the CPU in float32 from the first
seed, all at once in separate processes; the CPU's validation top-1 must lie within the
seeds' spread (their lowest to highest top-1, widened by two binomial standard deviations)
(exit status 1 if not). Every subcommand takes ``--device cpu`` (``cases``, ``compile``
and ``memory`` also ``--tiny``), so the tests run the GPU code on the CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
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

VAL_IMAGES = 360
"""The quickstart's validation images (20% of scikit-learn's 1,797 digits)."""
QUICKSTART_STEPS = 460
"""Steps of the GPU quickstart: 20 of its 30 epochs, the cosine schedule spanning them. On
the 2-core CPU machine, float32, seed 0 reached 0.8917 and seed 1 0.7500 (docs/gpu.md)."""


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
    from lightning_modules.cli.lightning import ConvNNCLI

    args = ["fit", "-c", str(ROOT / "configs" / "quickstart.yaml"), "--seed_everything", str(seed),
            "--trainer.max_steps", str(steps), "--trainer.accelerator", accelerator,
            "--trainer.precision", precision, "--trainer.logger.init_args.save_dir", out,
            "--trainer.enable_progress_bar", "false"]  # fmt: skip
    cli = ConvNNCLI(args=args)
    metrics = cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)
    return float(metrics[0]["val/acc1"])


def run_train(args: argparse.Namespace) -> None:
    """One quickstart run (a process of ``quickstart``): its top-1 to ``--json``."""
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        acc = train_quickstart(args.accelerator, args.precision, args.steps, args.seed, tmp)
    seconds = round(time.monotonic() - start, 1)
    result = dict(accelerator=args.accelerator, precision=args.precision, seed=args.seed,
                  steps=args.steps, acc1=acc, seconds=seconds)  # fmt: skip
    Path(args.json).write_text(json.dumps(result))


def binomial_margin(acc: float, n: int = VAL_IMAGES) -> float:
    """Two binomial standard deviations of a top-1 ``acc`` measured on ``n`` images."""
    return 2 * math.sqrt(max(acc * (1 - acc), 0.25 / n) / n)


def agreement(cpu_acc: float, device_accs: list[float]) -> dict:
    """Whether ``cpu_acc`` lies within the seeds' spread of ``device_accs`` (lowest to
    highest, widened by :func:`binomial_margin`: two seeds may land close together)."""
    lo, hi, margin = min(device_accs), max(device_accs), binomial_margin(cpu_acc)
    ok = lo - margin <= cpu_acc <= hi + margin
    return dict(spread=[lo, hi], margin=margin, allowed=[lo - margin, hi + margin], ok=ok)


def run_quickstart(args: argparse.Namespace) -> None:
    check_device(args.device)
    accelerator = "gpu" if args.device == "cuda" else "cpu"
    runs = [("cpu", "32-true", args.seeds[0])]
    runs += [(accelerator, args.precision, seed) for seed in args.seeds]
    threads = max(1, min(8, (os.cpu_count() or 2) - len(args.seeds)))  # the CPU run's
    with tempfile.TemporaryDirectory() as tmp:
        procs = []
        for i, (acc, precision, seed) in enumerate(runs):
            cpu_threads = threads if acc == "cpu" else 1
            cmd = [sys.executable, __file__, "train", "--accelerator", acc,
                   "--precision", precision, "--seed", str(seed), "--steps", str(args.steps),
                   "--json", f"{tmp}/{i}.json", "--threads", str(cpu_threads)]  # fmt: skip
            log = open(f"{tmp}/{i}.log", "w")  # closed below
            procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log))
        results, failed = [], []
        for i, (proc, log) in enumerate(procs):
            rc = proc.wait()
            log.close()
            if rc:
                tail = Path(f"{tmp}/{i}.log").read_text().strip().splitlines()[-25:]
                failed.append(f"run {runs[i]} failed (exit {rc}):\n" + "\n".join(tail))
            else:
                results.append(json.loads(Path(f"{tmp}/{i}.json").read_text()))
    if failed:
        raise SystemExit("bench_gpu: error: " + "\n".join(failed))
    cpu, device = results[0], results[1:]
    check = agreement(cpu["acc1"], [r["acc1"] for r in device])
    for r in results:
        print(f"| quickstart {r['steps']} steps | {r['accelerator']} {r['precision']} | seed "
              f"{r['seed']} | top-1 {r['acc1']:.4f} | {r['seconds']:.0f} s |")  # fmt: skip
    lo, hi = check["allowed"]
    print(f"CPU float32 top-1 {cpu['acc1']:.4f}; {args.device} {args.precision} seeds "
          f"{check['spread'][0]:.4f}..{check['spread'][1]:.4f}, allowed {lo:.4f}..{hi:.4f} "
          f"(+-{check['margin']:.4f}, two binomial standard deviations): "
          f"{'ok' if check['ok'] else 'MISMATCH'}")  # fmt: skip
    result = dict(steps=args.steps, device=args.device, precision=args.precision,
                  cpu_float32_acc1=cpu["acc1"], runs=results, **check)  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    if not check["ok"]:
        raise SystemExit(
            f"bench_gpu: error: the CPU float32 top-1 {cpu['acc1']:.4f} is outside the seeds' "
            f"spread {lo:.4f}..{hi:.4f}"
        )


# -- torch.compile of the ConvNN ViT-B block; peak memory of ConvNN2d at 56x56 -----------------


def vit_block(s: Sizes, device: str) -> tuple[nn.Module, int, int]:
    """Block 0 of ``convnn_vit_base_patch16_224`` at sizes ``s``, its tokens and width."""
    import timm

    import convnn  # noqa: F401  (registers the convnn_* models)

    torch.manual_seed(0)
    model = timm.create_model("convnn_vit_base_patch16_224", num_classes=10, **s.vit)
    tokens = model.patch_embed.num_patches + model.num_prefix_tokens
    return model.blocks[0].to(device), tokens, model.embed_dim


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """``|got - want| / |want|`` (Frobenius norms, in float64): robust to the few tokens
    whose neighbor sets differ in the last bits of a near tie."""
    got, want = got.double(), want.double()
    return ((got - want).norm() / want.norm().clamp(min=1e-30)).item()


def synced_result(fn: Callable[[], Any], device: str) -> Any:
    out = fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return out


def run_compile(args: argparse.Namespace) -> None:
    check_device(args.device)
    sizes = TINY if args.tiny else FULL
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    block, tokens, dim = vit_block(sizes, args.device)
    x = torch.randn(sizes.batch, tokens, dim, device=args.device)

    def step(module: nn.Module) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
        def run() -> tuple[torch.Tensor, torch.Tensor]:
            inp = x.detach().requires_grad_(True)
            with torch.autocast(args.device, dtype=dtype, enabled=dtype != torch.float32):
                out = module(inp)
            out.float().square().mean().backward()
            return out.detach().float(), inp.grad

        return run

    torch._dynamo.reset()
    eager = step(block)
    y_e, g_e = eager()  # first: the Triton self-check runs here, outside the trace
    compiled = step(torch.compile(block, fullgraph=True, backend=args.backend))
    start = time.perf_counter()
    y_c, g_c = synced_result(compiled, args.device)
    compile_s = time.perf_counter() - start
    errors = dict(output=relative_error(y_c, y_e), input_grad=relative_error(g_c, g_e))
    repeats, warmup = (1, 0) if args.tiny else (args.repeats, 2)
    t_e = median_time(synced(eager, args.device), repeats, warmup)
    t_c = median_time(synced(compiled, args.device), repeats, warmup)
    tol = 2e-2 if dtype == torch.bfloat16 else 1e-4
    ok = all(e <= tol for e in errors.values())
    result = dict(case=f"ConvNN ViT-B block ({tokens} tokens, dim {dim}), B={sizes.batch}",
                  backend=args.backend, dtype=str(dtype), compile_seconds=compile_s,
                  eager_ms=t_e * 1e3, compiled_ms=t_c * 1e3, speedup=t_e / t_c,
                  relative_error=errors, tolerance=tol, ok=ok)  # fmt: skip
    print(f"| {result['case']} | torch.compile({args.backend}, fullgraph) {compile_s:.1f} s | "
          f"eager {t_e * 1e3:.2f} ms | compiled {t_c * 1e3:.2f} ms | {t_e / t_c:.2f}x | "
          f"relative error output {errors['output']:.1e}, input grad {errors['input_grad']:.1e} "
          f"(allowed {tol:.0e}) | {'ok' if ok else 'MISMATCH'} |")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    if not ok:
        raise SystemExit("bench_gpu: error: the compiled block differs from eager mode")


def run_memory(args: argparse.Namespace) -> None:
    import convnn

    check_device(args.device)
    B, C, H = (2, 8, 8) if args.tiny else (64, 64, 56)
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    torch.manual_seed(0)
    x = torch.randn(B, C, H, H, device=args.device, dtype=dtype)
    layers = {
        "ConvNN2d all cosine k=9": convnn.ConvNN2d(C, C, 3, padding=1, candidates="all"),
        "nn.Conv2d 3x3": nn.Conv2d(C, C, 3, padding=1),
    }
    rows = []
    for name, layer in layers.items():
        layer = layer.to(args.device, dtype)

        def infer(layer: nn.Module = layer) -> None:
            with torch.no_grad():
                layer(x)

        train = peak_memory(synced(layer_step(layer, x), args.device)) / 2**20
        rows.append(dict(layer=name, train_mib=train, inference_mib=peak_memory(infer) / 2**20))
    N = H * H
    scores_mib = B * N * N * 4 / 2**20  # float32 scores of every query against every token
    ratio = {k: rows[0][k] / max(rows[1][k], 1e-9) for k in ("train_mib", "inference_mib")}
    print(f"ConvNN2d over all {N} candidates, C={C} {H}x{H}, B={B}, {dtype}; the dense score "
          f"matrix alone would be {scores_mib:.0f} MiB")  # fmt: skip
    print("| layer | peak fwd+bwd | peak inference |\n|---|---|---|")
    for r in rows:
        print(f"| {r['layer']} | {r['train_mib']:.1f} MiB | {r['inference_mib']:.1f} MiB |")
    print(f"| ratio | {ratio['train_mib']:.2f}x | {ratio['inference_mib']:.2f}x |")
    if args.json:
        result = dict(batch=B, channels=C, size=H, dtype=str(dtype), rows=rows, ratio=ratio,
                      dense_scores_mib=scores_mib)  # fmt: skip
        Path(args.json).write_text(json.dumps(result, indent=2))


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
    for name, text in (
        ("compile", "torch.compile of the ConvNN ViT-B block vs eager"),
        ("memory", "peak memory of ConvNN2d at 56x56, batch 64, vs its conv"),
    ):
        m = sub.add_parser(name, help=text)
        m.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
        m.add_argument("--tiny", action="store_true", help="tiny sizes (smoke test)")
        m.add_argument("--json", help="write the result to this file")
        if name == "compile":
            m.add_argument("--backend", default="inductor", help="torch.compile's backend")
            m.add_argument("--repeats", type=int, default=10)
    q = sub.add_parser("quickstart", help="the quickstart on --device (2 seeds) vs the CPU")
    q.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    q.add_argument("--precision", default="bf16-mixed")
    q.add_argument("--steps", type=int, default=QUICKSTART_STEPS)
    q.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    q.add_argument("--json", help="write the result to this file")
    t = sub.add_parser("train", help="one quickstart run (used by quickstart)")
    t.add_argument("--accelerator", default="cpu")
    t.add_argument("--precision", default="32-true")
    t.add_argument("--steps", type=int, default=QUICKSTART_STEPS)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    t.add_argument("--json", required=True, help="write the top-1 here")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    torch.manual_seed(0)
    modes = dict(cases=run_cases, compile=run_compile, memory=run_memory,
                 quickstart=run_quickstart, train=run_train)  # fmt: skip
    modes[args.mode](args)


if __name__ == "__main__":
    main()
