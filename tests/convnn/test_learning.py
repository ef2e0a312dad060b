"""Learning behaviour: every layer family learns a small known-answer task (issue 13 §3).

The exactness tests compare the operator with itself and with PyTorch; these check that
each variant *learns* what it should, on synthetic tasks of about a second each on one
CPU thread (data, networks, training loop: ``tests/helpers/learning_tasks.py``). Two balanced
classes everywhere, so chance is 0.5; accuracy on 512 held-out samples after Adam
(batch 32; lr 1e-2 on maps, 5e-3 on tokens; 150 steps unless said otherwise).

* **Local texture** (12x12, one channel, 100 steps): a horizontal or a vertical 3-pixel
  bar at a random place in Gaussian noise; ``layer -> ReLU -> global max -> Linear``.
  Both classes have the same pixel values, only their local arrangement differs: a 3x3
  convolution solves it, and so must ConvNN with ``window`` candidates or ``location``
  similarity. A 1x1 convolution stays at chance, and so does ConvNN over all tokens by
  feature similarity: without positional encoding it is permutation-equivariant, so
  after the global max it sees a bag of pixel values.
* **Long range** (12x12, channels flag/value): two 2x2 marker blocks at Chebyshev
  distance >= 5 on a zero background, each holding one of 8 levels in [-3, 3];
  label = "both levels equal"; ``layer -> ReLU -> global mean -> Linear``. Two stacked
  3x3 convolutions never see both blocks in one receptive field, so their mean-pooled
  features are a sum of one term per block: they stay at chance (the best rule of that
  form we know, "both levels in a fixed half", would reach 64%; training does not find
  it). ConvNN whose queries compare features with far tokens (``all``, ``random``,
  ``spatial`` candidates; ``dot`` similarity, ``softmax`` weights) brings both blocks
  into one output and must solve it.
* **Tokens** (16 tokens, the long-range task with one token per marker, in noise):
  ``embed -> x + attention(x) -> ReLU(Linear) -> mean -> Linear``. ConvNNAttention from
  ``from_attention`` (k = all tokens, dot, softmax, sum) starts from timm ``Attention``'s
  weights and must follow its loss curve; top-4 of 16 and branching attention must learn.

Branching convolution must solve both map tasks: the texture through its Conv2d half,
the long range through its ConvNN half. ``ConvNN2d.from_conv2d`` as the second of two
layers must train step for step like ``nn.Conv2d`` (its value gradient trains the first).

Test accuracy by seed (seed = data, initialization and batch order; the fast tests run
seed 0, ``make test-extra`` seeds 1-4), the threshold, and the best accuracy over the same
seeds with the layer frozen at its initialization (only the rest of the network trains):

| task | variant | 0 | 1 | 2 | 3 | 4 | threshold | frozen |
|---|---|---|---|---|---|---|---|---|
| texture | conv 3x3 | 1.000 | 1.000 | 1.000 | 1.000 | 1.000 | >= 0.95 | 0.902 |
| texture | convnn window | 1.000 | 1.000 | 1.000 | 1.000 | 1.000 | >= 0.95 | 0.902 |
| texture | convnn location | 1.000 | 1.000 | 1.000 | 1.000 | 1.000 | >= 0.95 | 0.902 |
| texture | convnn window, softmax(dot) | 1.000 | 0.998 | 1.000 | 1.000 | 0.998 | >= 0.95 | 0.875 |
| texture | branching 0.5 | 1.000 | 1.000 | 0.996 | 1.000 | 1.000 | >= 0.95 | 0.879 |
| texture | conv 1x1 | 0.514 | 0.473 | 0.535 | 0.488 | 0.498 | < 0.6 | |
| texture | convnn all, dot | 0.529 | 0.473 | 0.502 | 0.488 | 0.498 | < 0.6 | |
| long range | two convs 3x3 | 0.512 | 0.475 | 0.510 | 0.549 | 0.508 | < 0.6 | |
| long range | convnn all | 0.949 | 0.959 | 0.939 | 0.971 | 0.941 | >= 0.88 | 0.809 |
| long range | convnn random r=96 | 0.824 | 0.770 | 0.775 | 0.773 | 0.805 | >= 0.70 | 0.611 |
| long range | convnn spatial r=49 * | 0.939 | 0.951 | 0.928 | 0.941 | 0.961 | >= 0.86 | 0.791 |
| long range | branching 0.5 | 0.949 | 0.959 | 0.939 | 0.947 | 0.941 | >= 0.87 | 0.791 |
| tokens | timm attention | 1.000 | 0.992 | 1.000 | 1.000 | 0.994 | >= 0.90 | 0.826 |
| tokens | convnn k=N (fast, blocked) | 1.000 | 0.992 | 1.000 | 1.000 | 0.994 | >= 0.90 | 0.826 |
| tokens | convnn top-4 | 0.969 | 0.979 | 0.900 | 1.000 | 0.994 | >= 0.85 | 0.783 |
| tokens | branching 0.5, top-4 | 0.994 | 1.000 | 1.000 | 1.000 | 0.979 | >= 0.90 | 0.648 |

(*: 250 steps; at 150 it reaches 0.87-0.95 and, frozen, up to 0.81: too close.)

Breaking the code on purpose (patched in-process, seed 0) fails these tests: detached
ConvNN outputs or zeroed kernels (every ConvNN test), top-k returning the least similar
or random neighbours (every long-range ConvNN test and top-4 attention), values cut from
the gradient (the two loss-curve tests), q/k cut from the gradient (the attention
loss-curve test and top-4). Window selections with k = s*s cannot be told from a reordered
selection by learning; the exactness tests cover those.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from learning_tasks import (
    MapNet,
    TokenNet,
    accuracy,
    make_task,
    marker_data,
    texture_data,
    token_marker_data,
    train,
)
from timm.layers import Attention
from torch import nn

import convnn

SEED = 0  # the seed of the fast tests; ``-m extra`` runs the others
MEASURED_SEEDS = [1, 2, 3, 4]
FEATURES = dict(similarity="dot", weighting="softmax")  # select and weight by features
DIM, HEADS = 16, 4  # token network: 4 heads of 4 channels
WIDTH = 16  # channels of the long-range networks


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One thread: these networks are too small to gain from two, and on a busy 2-core
    machine two threads wait on each other (steps measured 20x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------- map variants


@dataclass(frozen=True)
class Variant:
    """A network for one task and what it must reach (``learns``) or stay below."""

    data: Callable
    build: Callable[[], nn.Module]
    threshold: float
    learns: bool = True
    steps: int = 150

    def run(self, seed: int) -> float:
        """Train a fresh network on the task's ``seed`` data; its test accuracy."""
        task = make_task(self.data, seed)
        torch.manual_seed(seed)
        model = self.build()
        train(model, task, seed, steps=self.steps)
        return accuracy(model, task)


Layers = Callable[[], "nn.Module | tuple[nn.Module, ...]"]


def texture(layer: Layers, threshold: float, learns: bool = True) -> Variant:
    """``(B, 1, 12, 12) -> layer (1 -> 8 channels) -> ReLU -> max -> (B, 2)``; 100 steps:
    every learning variant is at >= 0.996 by then (>= 0.86 after 60)."""

    def build() -> MapNet:
        return MapNet(layer(), width=8, pool="max")

    return Variant(texture_data, build, threshold, learns, steps=100)


def long_range(layers: Layers, threshold: float, learns: bool = True, steps: int = 150) -> Variant:
    """``(B, 2, 12, 12) -> layers (-> WIDTH channels, each + ReLU) -> mean -> (B, 2)``."""

    def build() -> MapNet:
        built = layers()
        return MapNet(*(built if isinstance(built, tuple) else (built,)), width=WIDTH, pool="mean")

    return Variant(marker_data, build, threshold, learns, steps)


def convnn2d(in_channels: int, out_channels: int, **options) -> convnn.ConvNN2d:
    """A drop-in for ``nn.Conv2d(in_channels, out_channels, 3, padding=1)`` (k = 9)."""
    return convnn.ConvNN2d(in_channels, out_channels, 3, padding=1, **options)


# Thresholds: below the worst of seeds 0-4 and, for the long-range task, above the best
# of the same network with the layer frozen at its initialization (random ConvNN features
# already mix both markers; a trained layer must do clearly better). Table: module doc.
TEXTURE = 0.95  # every learner >= 0.996; frozen at init <= 0.902 (conv, seed 2)
CHANCE = 0.6  # the ones that cannot see what the task needs: measured <= 0.549
MAP_VARIANTS = {
    # local texture
    "texture-conv": texture(lambda: nn.Conv2d(1, 8, 3, padding=1), TEXTURE),
    "texture-convnn-window": texture(lambda: convnn2d(1, 8, candidates="window"), TEXTURE),
    # location similarity, k = 9: its 3x3 window, selected and gathered on the tokens
    # path (the fast backend runs this configuration as F.conv2d)
    "texture-convnn-location": texture(
        lambda: convnn2d(1, 8, similarity="location", backend="blocked"), TEXTURE
    ),
    "texture-convnn-window-softmax-dot": texture(  # weights softmax(dot), not a convolution
        lambda: convnn2d(
            1, 8, candidates="window", weighting="softmax", weighting_similarity="dot"
        ),
        TEXTURE,
    ),
    "texture-branching": texture(
        lambda: convnn.BranchingConv2d(1, 8, 3, padding=1, ratio=0.5, **FEATURES), TEXTURE
    ),
    "texture-pointwise-conv": texture(lambda: nn.Conv2d(1, 8, 1), CHANCE, learns=False),
    "texture-convnn-all": texture(lambda: convnn2d(1, 8, **FEATURES), CHANCE, learns=False),
    # long range
    "long-range-conv": long_range(  # receptive field 5x5
        lambda: (nn.Conv2d(2, WIDTH, 3, padding=1), nn.Conv2d(WIDTH, WIDTH, 3, padding=1)),
        CHANCE,
        learns=False,
    ),
    "long-range-convnn-all": long_range(lambda: convnn2d(2, WIDTH, **FEATURES), 0.88),
    "long-range-convnn-random": long_range(
        lambda: convnn2d(2, WIDTH, candidates="random", num_samples=96, **FEATURES), 0.7
    ),
    "long-range-convnn-spatial": long_range(  # a 7x7 grid: every 2x2 block holds a grid token
        lambda: convnn2d(2, WIDTH, candidates="spatial", num_samples=49, **FEATURES),
        0.86,
        steps=250,
    ),
    "long-range-branching": long_range(
        lambda: convnn.BranchingConv2d(2, WIDTH, 3, padding=1, ratio=0.5, **FEATURES), 0.87
    ),
}


def check(name: str, variant: Variant, seed: int) -> None:
    acc = variant.run(seed)
    if variant.learns:
        assert acc >= variant.threshold, f"{name} (seed {seed}) did not learn: {acc:.3f}"
    else:
        assert acc < variant.threshold, f"{name} (seed {seed}) should stay near 0.5: {acc:.3f}"


@pytest.mark.parametrize("name", list(MAP_VARIANTS))
def test_map_variant(name: str) -> None:
    """Each map variant reaches its threshold (or, for the ones that cannot see what the
    task needs, stays below it)."""
    check(name, MAP_VARIANTS[name], SEED)


def conv_pair(seed: int) -> MapNet:
    """``(B, 1, 12, 12) -> Conv2d 3x3 (1 -> 8) -> Conv2d 3x3 (8 -> 8) -> max -> (B, 2)``,
    each conv + ReLU: the second layer reads learned features, so its value gradient
    is what trains the first."""
    torch.manual_seed(seed)
    first, second = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
    return MapNet(first, second, width=8, pool="max")


@functools.cache
def conv_pair_run(seed: int) -> tuple[list[float], float]:
    """Losses and accuracy of :func:`conv_pair` on the texture task (shared by two tests)."""
    net, task = conv_pair(seed), make_task(texture_data, seed)
    losses = train(net, task, seed, steps=100)
    return losses, accuracy(net, task)


@pytest.mark.parametrize("backend, tol", [("fast", 1e-6), ("blocked", 1e-5)])
def test_exact_conv_learns_like_conv2d(backend: str, tol: float) -> None:
    """The second layer replaced by ``ConvNN2d.from_conv2d`` (window, offset order, no
    weighting, standard kernel) trains step for step like ``nn.Conv2d``: the ``fast``
    backend runs it as F.conv2d, ``blocked`` selects and gathers (measured max loss
    difference over 100 steps <= 1.2e-7, seeds 0-4). Catches a gradient that does not
    reach the values, which the one-layer networks above cannot (their values are the
    input)."""
    losses, acc = conv_pair_run(SEED)
    twin = conv_pair(SEED)  # the same initial weights
    twin.layers[1] = convnn.ConvNN2d.from_conv2d(twin.layers[1], backend=backend)
    task = make_task(texture_data, SEED)
    twin_losses = train(twin, task, SEED, steps=100)
    diff = max(abs(a - b) for a, b in zip(losses, twin_losses, strict=True))
    assert diff <= tol, f"losses diverge by {diff:.2e}"
    assert min(acc, accuracy(twin, task)) >= TEXTURE


# ---------------------------------------------------------------- token variants

TOKEN_LR = 5e-3  # at 1e-2, seed 2 ends at 0.78-0.90 (attention, its copies, top-4)
TOKEN_LAYERS: dict[str, Callable[[Attention], nn.Module]] = {
    "attention": lambda attn: attn,
    # exactly attn (k = all tokens, dot, softmax, sum): SDPA, or the top-k + gather path
    "convnn-all-fast": lambda attn: convnn.ConvNNAttention.from_attention(attn),
    "convnn-all-blocked": lambda attn: convnn.ConvNNAttention.from_attention(
        attn, backend="blocked"
    ),
    "convnn-top4": lambda attn: convnn.ConvNNAttention.from_attention(attn, k=4),  # KVT
    # 2 ConvNN top-4 heads and 2 softmax attention heads, its own init
    "branching": lambda attn: convnn.BranchingAttention(DIM, HEADS, ratio=0.5, k=4),
}
TOKEN_THRESHOLDS = {
    "attention": 0.9,
    "convnn-all-fast": 0.9,
    "convnn-all-blocked": 0.9,
    "convnn-top4": 0.85,
    "branching": 0.9,
}


def token_net(kind: str, seed: int) -> TokenNet:
    """``(B, 16, 2) -> (B, 2)`` around timm ``Attention`` (16 channels, 4 heads), built
    from ``seed``; the other kinds replace that layer, keeping every other weight."""
    torch.manual_seed(seed)
    attn = Attention(DIM, num_heads=HEADS)
    net = TokenNet(attn, in_dim=2, dim=DIM)
    return net if kind == "attention" else net.with_attention(TOKEN_LAYERS[kind](attn))


def run_tokens(net: nn.Module, seed: int) -> tuple[list[float], float]:
    """Train on the token task of ``seed``: the losses and the test accuracy."""
    task = make_task(token_marker_data, seed)
    losses = train(net, task, seed, lr=TOKEN_LR)
    return losses, accuracy(net, task)


@functools.cache
def timm_run(seed: int) -> tuple[list[float], float]:
    """:func:`run_tokens` of the timm attention network (shared by two tests)."""
    return run_tokens(token_net("attention", seed), seed)


@pytest.mark.parametrize(
    "backend, steps_checked, tol",
    [("fast", 150, 1e-6), ("blocked", 50, 1e-5)],
    ids=["fast-sdpa", "blocked-gather"],
)
def test_exact_attention_learns_like_timm(backend: str, steps_checked: int, tol: float) -> None:
    """ConvNNAttention.from_attention (k = N, dot, softmax, sum) and timm Attention, from
    the same weights and batches, follow the same loss curve: the ``fast`` path (SDPA)
    step for step (measured: identical), the ``blocked`` gather path to float rounding,
    which training amplifies (measured for seeds 0-4: <= 2e-7 over the first 50 steps,
    past 1e-5 only after step 100); both reach the threshold."""
    losses, acc = timm_run(SEED)
    twin_losses, twin_acc = run_tokens(token_net(f"convnn-all-{backend}", SEED), SEED)
    diff = max(abs(a - b) for a, b in zip(losses[:steps_checked], twin_losses, strict=False))
    assert diff <= tol, f"losses diverge by {diff:.2e} within {steps_checked} steps"
    assert acc >= TOKEN_THRESHOLDS["attention"], f"timm attention: {acc:.3f}"
    threshold = TOKEN_THRESHOLDS[f"convnn-all-{backend}"]
    assert twin_acc >= threshold, f"ConvNN ({backend}): {twin_acc:.3f}"


@pytest.mark.parametrize("kind", ["convnn-top4", "branching"])
def test_attention_variant_learns(kind: str) -> None:
    """Top-4 of 16 tokens (q/k learn only through the softmax weights of the selected
    tokens, so the markers must learn to select each other) and branching attention."""
    _, acc = run_tokens(token_net(kind, SEED), SEED)
    assert acc >= TOKEN_THRESHOLDS[kind], f"{kind}: {acc:.3f}"


# ---------------------------------------------------------------- the other seeds


@pytest.mark.extra
@pytest.mark.parametrize("seed", MEASURED_SEEDS)
@pytest.mark.parametrize("name", list(MAP_VARIANTS))
def test_map_variant_other_seeds(name: str, seed: int) -> None:
    """The thresholds hold for every measured seed, not just the fast test's."""
    check(name, MAP_VARIANTS[name], seed)


@pytest.mark.extra
@pytest.mark.parametrize("seed", MEASURED_SEEDS)
@pytest.mark.parametrize("kind", list(TOKEN_LAYERS))
def test_attention_variant_other_seeds(kind: str, seed: int) -> None:
    _, acc = run_tokens(token_net(kind, seed), seed)
    assert acc >= TOKEN_THRESHOLDS[kind], f"{kind} (seed {seed}): {acc:.3f}"
