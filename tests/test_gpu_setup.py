"""``benchmarks/gpu_check.sh`` on the CPU: its set-up on a bare Python (torch and the GPU
machine's packages, not jsonargparse, submitit, ...; no network), its stages, limits and
output files, and the GPU benchmarks' code at tiny sizes (``benchmarks/bench_gpu.py``).

The bare Python is a fresh virtual environment whose only packages are symbolic links to
those of the test's own environment minus the ones a GPU machine lacks (one ``.pth``
line): no gigabytes of torch are installed. Its wheels come from the committed
``benchmarks/wheels`` (``make gpu-wheels``), the project's from the checkout.
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
WHEELS = ROOT / "benchmarks" / "wheels"
MISSING = ("jsonargparse", "docstring-parser", "typeshed-client", "submitit", "cloudpickle")
"""What a bare GPU machine's python3 lacks of the project's needs (cloudpickle it has, seen
2026-11; left out here so that a dependency of a wheel is resolved from the folder too)."""
STAGES = ["setup", "preflight", "doctor", "selfcheck", "cuda-tests", "deterministic", "bench",
          "compile", "memory", "quickstart"]  # fmt: skip


def load(name: str):
    """``benchmarks/<name>.py`` as the module ``name``."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


def gpu_check(*args: str, timeout: int = 120, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], env=dict(os.environ, **env),
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)  # fmt: skip


def bare_python(dest: Path, missing: tuple[str, ...] = MISSING) -> Path:
    """A fresh virtual environment that sees this environment's distributions except
    ``missing`` and the project (symbolic links, one ``.pth`` line); its python."""
    site = Path(md.distribution("torch").locate_file(""))
    drop = {"__pycache__"}
    names = {canonicalize_name(n) for n in (*missing, "convnn")}
    for dist in md.distributions():
        if canonicalize_name(dist.metadata["Name"]) in names:
            drop |= {f.parts[0] for f in dist.files or [] if f.parts[0] != ".."}
    exposed = dest / "site"
    exposed.mkdir(parents=True)
    for entry in site.iterdir():
        if entry.name not in drop and entry.suffix != ".pth" and "__editable__" not in entry.name:
            (exposed / entry.name).symlink_to(entry)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(dest / "venv")], check=True)
    (next((dest / "venv" / "lib").glob("python*/site-packages")) / "gpu.pth").write_text(
        f"{exposed}\n"
    )
    return dest / "venv" / "bin" / "python"


# -- set-up -------------------------------------------------------------------------------------


def test_the_wheel_folder_holds_one_pure_wheel_per_pinned_requirement():
    pins = [line.split("==") for line in (WHEELS / "requirements.txt").read_text().splitlines()
            if line and not line.startswith("#")]  # fmt: skip
    wheels = sorted(WHEELS.glob("*.whl"))
    assert all(w.name.endswith("-py3-none-any.whl") for w in wheels), wheels
    found = {canonicalize_name(w.name.split("-")[0]): w.name.split("-")[1] for w in wheels}
    assert found == {canonicalize_name(n): v for n, v in pins}
    assert {canonicalize_name(n) for n in MISSING} <= set(found)
    assert sum(w.stat().st_size for w in wheels) < 4 * 2**20  # it travels with the checkout


def test_setup_resolves_what_is_missing_from_the_wheels(monkeypatch):
    """What a Python lacks is taken from the folder, with the wheels' own needs (submitit's
    cloudpickle, jsonargparse[signatures]'s typeshed-client); what it has is left alone."""
    setup = load("gpu_setup")
    deps = ["torch>=2.4", "jsonargparse[signatures]>=4.32", "submitit", "pyyaml"]
    assert setup.resolve(deps, WHEELS) == ({}, [])  # this environment has everything
    have = setup.installed_version
    monkeypatch.setattr(setup, "installed_version",
                        lambda n: None if canonicalize_name(n) in MISSING else have(n))  # fmt: skip
    chosen, warnings = setup.resolve(deps, WHEELS)
    assert sorted(chosen) == sorted(canonicalize_name(n) for n in MISSING) and warnings == []
    with pytest.raises(setup.SetupError, match=r"^torchvision is missing \(convnn wants "):
        monkeypatch.setattr(setup, "installed_version", lambda n: None)
        setup.resolve(["torchvision"], WHEELS)


def test_setup_warns_of_an_unsuitable_installed_version():
    setup = load("gpu_setup")
    chosen, warnings = setup.resolve(["torch>=99"], WHEELS)
    assert chosen == {} and len(warnings) == 1
    assert re.match(
        r"torch \S+ is installed, convnn wants torch>=99; no wheel of it in ", warnings[0]
    )


def test_gpu_check_fails_at_once_without_a_gpu(tmp_path):
    """With this environment's Python: nothing to install, then one line."""
    start = time.monotonic()
    proc = gpu_check(str(tmp_path), CUDA_VISIBLE_DEVICES="", GPU_SITE=str(tmp_path / "site"))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "gpu_setup: nothing to install" in proc.stdout
    assert proc.stderr.strip().splitlines()[-1].startswith("gpu_check: error: no CUDA device")
    assert "== cuda-tests" not in proc.stdout and time.monotonic() - start < 60


def test_setup_on_a_bare_python_without_network(tmp_path):
    """A Python with torch and the GPU machine's packages only: the set-up installs the
    missing wheels and the project (pip --no-index), the project and its CLI import, and
    the script stops at its "no CUDA device" line."""
    python = bare_python(tmp_path / "bare")
    probe = "import importlib.util as u; print([u.find_spec(m) is None for m in " \
            "('jsonargparse', 'submitit', 'cloudpickle', 'convnn')])"  # fmt: skip
    out = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, cwd=tmp_path)
    assert out.stdout.strip() == "[True, True, True, True]", out.stderr  # really bare
    site, results = tmp_path / "gpu_site", tmp_path / "out"
    had_build = (ROOT / "build").exists()
    start = time.monotonic()
    proc = gpu_check(
        str(results),
        PY=str(python),
        GPU_SITE=str(site),
        CUDA_VISIBLE_DEVICES="",
        PIP_CONFIG_FILE=os.devnull,
    )  # fmt: skip  (no find-links of a config)
    seconds = time.monotonic() - start
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("gpu_check: error: no CUDA device")
    assert (
        f"gpu_setup: installing into {site}: cloudpickle 3.1.3, docstring-parser 0.18.0, "
        "jsonargparse 4.53.0, submitit 1.5.4, typeshed-client 2.15.0, convnn (the checkout)"
    ) in proc.stdout
    assert re.search(r"^preflight: convnn 0\.1\.0, torch \S+, lightning \S+, timm \S+, "
                     r"jsonargparse 4\.53\.0, submitit 1\.5\.4$", proc.stdout, re.M)  # fmt: skip
    installed = {p.name for p in site.iterdir()}
    assert {"convnn", "lightning_modules", "jsonargparse", "convnn-0.1.0.dist-info"} <= installed
    assert "torch" not in installed and "lightning" not in installed  # never touched
    assert (ROOT / "build").exists() == had_build  # built from a copy, not in the checkout
    assert [p.name for p in results.iterdir()] == ["gpu_check.log"]
    print(f"set-up test: {seconds:.1f} s")


def test_setup_without_the_wheels_fails_at_once(tmp_path):
    python = bare_python(tmp_path / "bare")
    (tmp_path / "empty").mkdir()
    proc = gpu_check(str(tmp_path / "out"), PY=str(python), GPU_SITE=str(tmp_path / "site"),
                     GPU_WHEELS=str(tmp_path / "empty"))  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        "gpu_check: error: set-up failed (FAILED (exit 1)): jsonargparse is missing (convnn "
        f"wants jsonargparse[signatures]>=4.32) and there is no wheel of it in {tmp_path}/empty "
        "(make gpu-wheels)"
    )
    assert not (tmp_path / "site").exists()


# -- stages, limits, output files ----------------------------------------------------------------


def test_the_stage_limits_add_up_to_at_most_8_minutes():
    proc = gpu_check(GPU_CHECK_LIMITS="print")
    words = proc.stdout.split()
    budget, kill, total = int(words[1]), int(words[3]), int(words[5])
    limits = dict(w.split(":") for w in words[6:])
    assert budget == 480 and total == sum(int(v) + kill for v in limits.values()) <= budget
    used = re.findall(r"^\s*(?:&& )?run (\S+) ", SCRIPT.read_text(), re.M)
    assert set(used) | {"report"} == set(limits) and set(STAGES) <= set(used)


FAKE_PYTHON = """#!/usr/bin/env bash
# stands in for Python: a GPU is present, pytest fails, the rest succeeds
case "$*" in
    *"gpu_setup.py --preflight") echo "preflight: ok" ;;
    "-m pytest"*) echo "1 failed"; exit 3 ;;
    *"cli doctor --json") echo '{}' ;;
    "- "*) exit 0 ;;
    *) echo "ran: $*" ;;
esac
"""


def test_gpu_check_runs_every_stage_and_reports_each(tmp_path):
    """With a (fake) GPU: every stage runs although one fails; the table comes last, the
    output is two files, and the exit status is 1 naming the failure."""
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    out = tmp_path / "out"
    proc = gpu_check(str(out), PY=str(fake), PATH="/usr/bin:/bin")  # no nvidia-smi
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr.strip() == (
        f"gpu_check: error: 1 stage(s) failed: cuda-tests (see {out}/gpu_check.log)"
    )
    lines = proc.stdout.strip().splitlines()
    table = lines[lines.index("| stage | result | seconds | limit |") + 2 :]
    assert [row.split(" | ")[:2] for row in table] == [
        [f"| {s}", "FAILED (exit 3)" if s == "cuda-tests" else "ok"] for s in STAGES
    ] + [["| total", "1 failed"]]  # the table is the last thing printed
    stages = json.loads((out / "gpu_check.json").read_text())["stages"]
    assert [s["stage"] for s in stages] == STAGES
    assert sorted(p.name for p in out.iterdir()) == [
        "doctor.json",
        "gpu_check.json",
        "gpu_check.log",
    ]
    log = (out / "gpu_check.log").read_text()
    assert "ran: benchmarks/bench_gpu.py quickstart --json" in log and "1 failed" in log


FAKE_JSON_STAGE = """    *" --json "*)  # {"x": 1} into the --json file (under OUT only), 3 MB out
        args=("$@"); f=${args[-1]}
        case $f in */out/*.json) echo '{"x": 1}' > "$f" ;; *) exit 9 ;; esac
        head -c 3000000 /dev/zero | tr '\\0' x ;;
    *) echo "ran: $*" ;;"""


def test_output_files_fit_what_comes_back(tmp_path):
    """At most 8 files of at most 16 MiB, two folders deep at most: the stages' JSON is
    merged into gpu_check.json, each stage's output is capped in gpu_check.log."""
    fake = tmp_path / "python"
    real = sys.executable
    fake.write_text(FAKE_PYTHON.replace('    "- "*) exit 0 ;;', f'    "- "*) exec {real} "$@" ;;')
                    .replace('    *) echo "ran: $*" ;;', FAKE_JSON_STAGE))  # fmt: skip
    fake.chmod(0o755)
    out = tmp_path / "out"
    gpu_check(str(out), PY=str(fake), PATH="/usr/bin:/bin")
    files = [p for p in out.rglob("*") if p.is_file()]
    assert sorted(p.name for p in files) == ["gpu_check.json", "gpu_check.log"]
    assert all(p.stat().st_size <= 16 * 2**20 for p in files)
    report = json.loads((out / "gpu_check.json").read_text())
    assert sorted(report["results"]) == ["bench", "compile", "deterministic", "doctor",
                                         "memory", "quickstart"]  # fmt: skip
    assert report["results"]["memory"] == {"x": 1}
    assert (out / "gpu_check.log").stat().st_size < 6 * 2**20  # 1 MiB of each stage at most


# -- the stages' code on the CPU -----------------------------------------------------------------


def test_bench_gpu_lists_the_issue_cases(capsys):
    bench = load("bench_gpu")
    bench.main(["cases", "--dry-run"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 8
    assert [line.split(" (")[0] for line in lines[:2]] == [
        "ConvNNAttention all k=9, ViT-B/16 layout",
        "ConvNNAttention all k=16, ViT-B/16 layout",
    ]
    assert "197 tokens, dim 768), B=64 | vs flash attention" in lines[0]
    assert [line.split(", B=")[0].rsplit("C=")[-1] for line in lines[2:6]] == [
        "64 56x56", "128 28x28", "256 14x14", "512 7x7"]  # fmt: skip
    assert "convnn_vit_base_patch16_224 (224x224), B=64" in lines[6]
    assert "convnn_resnet50 (224x224), B=64" in lines[7] and "timm resnet50" in lines[7]
    if not torch.cuda.is_available():
        for mode in ("cases", "compile", "memory", "quickstart"):
            with pytest.raises(SystemExit, match="^bench_gpu: error: no CUDA device"):
                bench.main([mode])


def test_bench_gpu_runs_every_case_tiny_on_the_cpu(tmp_path):
    """Each case builds and runs once at tiny sizes (the GPU run uses the same code)."""
    bench = load("bench_gpu")
    bench.main(["cases", "--device", "cpu", "--tiny", "--json", str(tmp_path / "b.json")])
    rows = json.loads((tmp_path / "b.json").read_text())["rows"]
    assert len(rows) == 8
    for r in rows:
        assert r["time_ms"] > 0 and r["baseline_time_ms"] > 0 and r["memory_mib"] >= 0


def test_bench_gpu_compiles_the_vit_block_on_the_cpu(tmp_path):
    bench = load("bench_gpu")
    out = tmp_path / "c.json"
    bench.main(["compile", "--device", "cpu", "--tiny", "--backend", "aot_eager", "--json",
                str(out)])  # fmt: skip
    r = json.loads(out.read_text())
    assert r["ok"] and r["case"] == "ConvNN ViT-B block (10 tokens, dim 768), B=2"
    assert r["relative_error"]["output"] <= 1e-4 and r["compiled_ms"] > 0


def test_bench_gpu_memory_on_the_cpu(tmp_path):
    bench = load("bench_gpu")
    out = tmp_path / "m.json"
    bench.main(["memory", "--device", "cpu", "--tiny", "--json", str(out)])
    r = json.loads(out.read_text())
    assert [row["layer"] for row in r["rows"]] == ["ConvNN2d all cosine k=9", "nn.Conv2d 3x3"]
    assert all(row["train_mib"] > 0 for row in r["rows"]) and r["ratio"]["train_mib"] > 1
    assert r["dense_scores_mib"] == 2 * 64 * 64 * 4 / 2**20


def test_quickstart_agreement_is_the_seeds_spread():
    bench = load("bench_gpu")
    margin = bench.binomial_margin(0.9)
    assert margin == pytest.approx(2 * (0.9 * 0.1 / 360) ** 0.5)
    assert bench.agreement(0.80, [0.75, 0.89])["ok"]  # inside the spread
    assert bench.agreement(0.89 + margin * 0.9, [0.75, 0.89])["ok"]  # within the margin
    assert not bench.agreement(0.95, [0.75, 0.89])["ok"]
    assert not bench.agreement(0.60, [0.75, 0.89])["ok"]


@pytest.mark.extra
def test_bench_gpu_quickstart_plumbing_on_the_cpu(tmp_path):
    """The quickstart comparison end to end on the CPU (3 steps, 3 processes)."""
    bench = load("bench_gpu")
    out = tmp_path / "q.json"
    bench.main(["quickstart", "--device", "cpu", "--precision", "bf16-mixed", "--steps", "3",
                "--json", str(out)])  # fmt: skip
    result = json.loads(out.read_text())
    assert result["steps"] == 3 and 0 <= result["cpu_float32_acc1"] <= 1
    assert [(r["accelerator"], r["precision"], r["seed"]) for r in result["runs"]] == [
        ("cpu", "32-true", 0), ("cpu", "bf16-mixed", 0), ("cpu", "bf16-mixed", 1)]  # fmt: skip


def test_bench_deterministic_on_the_cpu(tmp_path):
    bench = load("bench_deterministic")
    rows = bench.main(["--device", "cpu", "--batch", "1", "--repeats", "1"])
    assert [r["case"].split(",")[0] for r in rows] == ["ConvNNAttention fwd+bwd", "scatter-add"]
    assert all(r["ratio"] > 0 for r in rows)


CPU_PYTHON = """#!/usr/bin/env bash
# this environment's Python pretending a GPU: each stage's own command, on the CPU, tiny
real={python}
case "$*" in
    "benchmarks/gpu_setup.py --preflight") exec "$real" -c 'print("preflight: no GPU")' ;;
    "benchmarks/bench_gpu.py cases"*) exec "$real" "$@" --device cpu --tiny ;;
    "benchmarks/bench_gpu.py compile"*) exec "$real" "$@" --device cpu --tiny --backend aot_eager ;;
    "benchmarks/bench_gpu.py memory"*) exec "$real" "$@" --device cpu --tiny ;;
    "benchmarks/bench_gpu.py quickstart"*) exec "$real" "$@" --device cpu --steps 3 ;;
    "benchmarks/bench_deterministic.py"*) exec "$real" "$@" --device cpu --batch 2 --repeats 2 ;;
    *) exec "$real" "$@" ;;
esac
"""


@pytest.mark.extra
def test_every_stage_runs_its_real_code_on_the_cpu(tmp_path):
    """The whole check with each stage's real command at CPU sizes (about 2 minutes on 2
    cores): only the self-check fails (no GPU was checked); every stage's numbers land in
    gpu_check.json."""
    fake = tmp_path / "python"
    fake.write_text(CPU_PYTHON.format(python=sys.executable))
    fake.chmod(0o755)
    out = tmp_path / "out"
    proc = gpu_check(str(out), timeout=480, PY=str(fake), PATH="/usr/bin:/bin")
    assert proc.stderr.strip().splitlines()[-1] == (
        f"gpu_check: error: 1 stage(s) failed: selfcheck (see {out}/gpu_check.log)"
    ), proc.stdout[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert sorted(report["results"]) == ["bench", "compile", "deterministic", "doctor",
                                         "memory", "quickstart"]  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.json", "gpu_check.log"]
