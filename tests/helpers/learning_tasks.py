"""Synthetic known-answer tasks and tiny networks for ``tests/convnn/test_learning.py``.

Two map tasks (``(B, C, H, W)`` inputs, two balanced classes, chance = 0.5) and one
token task (``(B, N, C)``), each generated from a ``torch.Generator`` so the data are
fixed by a seed, plus the small networks and the training loop the tests share.

* :func:`texture_data` -- *local texture*: a 3-pixel bar, horizontal (class 0) or
  vertical (class 1), at a random place in Gaussian noise. Both classes have the same
  pixel-value distribution, so only the local arrangement of pixels tells them apart:
  a 3x3 convolution sees it, a 1x1 (pointwise) layer cannot.
* :func:`marker_data` -- *long range*: two 2x2 marker blocks (flag in channel 0) far
  apart on a zero background, each holding one of 8 levels (channel 1); label = "both
  levels equal". A network whose receptive fields never hold both blocks, followed by a
  global mean, sees a sum of one term per block, ``h(a) + h(b)``, which cannot tell
  equal from unequal levels (the best rule of that form we know reaches 64%).
* :func:`token_marker_data` -- the long-range task on a token sequence (one token per
  marker, noise on the other tokens), for attention layers.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# ---------------------------------------------------------------- data


def texture_data(
    n: int, gen: torch.Generator, size: int = 12, noise: float = 0.3
) -> tuple[Tensor, Tensor]:
    """``x (n, 1, size, size)``, ``y (n,)``: a bar of three 1s (horizontal for ``y=0``,
    vertical for ``y=1``) at a random place, in ``N(0, noise^2)`` noise."""
    x = noise * torch.randn(n, 1, size, size, generator=gen)  # (n, 1, S, S)
    y = torch.randint(0, 2, (n,), generator=gen)
    r = torch.randint(0, size - 2, (n,), generator=gen)  # top-left of the 3x3 motif box
    c = torch.randint(0, size - 2, (n,), generator=gen)
    for i in range(n):
        if y[i] == 0:
            x[i, 0, r[i] + 1, c[i] : c[i] + 3] = 1.0  # horizontal bar, middle row of the box
        else:
            x[i, 0, r[i] : r[i] + 3, c[i] + 1] = 1.0  # vertical bar, middle column
    return x, y


def _far_pairs(n: int, size: int, block: int, gap: int, gen: torch.Generator) -> Tensor:
    """``(n, 2, 2)`` top-left corners of two ``block x block`` squares whose nearest
    cells are at Chebyshev distance ``>= gap``."""
    out = torch.empty(n, 2, 2, dtype=torch.long)
    todo = torch.arange(n)
    while len(todo):
        corners = torch.randint(0, size - block + 1, (len(todo), 2, 2), generator=gen)
        delta = (corners[:, 0] - corners[:, 1]).abs() - (block - 1)  # (m, 2) per axis
        ok = delta.amax(dim=1) >= gap
        out[todo[ok]] = corners[ok]
        todo = todo[~ok]
    return out


FLAG = 4.0  # channel 0 on a marker; FLAG**2 > AMPLITUDE**2 (see marker_data)
LEVELS = 8  # marker values: LEVELS evenly spaced levels in [-AMPLITUDE, AMPLITUDE]
AMPLITUDE = 3.0


def _marker_values(
    n: int, gen: torch.Generator, levels: int = LEVELS, amplitude: float = AMPLITUDE
) -> tuple[Tensor, Tensor]:
    """``(n, 2)`` marker values and labels ``(n,)``: each value is one of ``levels``
    evenly spaced levels in ``[-amplitude, amplitude]``; label 1 (half the samples): both
    equal. Each value alone is uniform over the levels, whatever the label."""
    a = torch.randint(0, levels, (n,), generator=gen)
    y = torch.randint(0, 2, (n,), generator=gen)
    shift = torch.randint(1, levels, (n,), generator=gen)  # a different level when y = 0
    b = torch.where(y == 1, a, (a + shift) % levels)
    values = torch.stack((a, b), dim=1).float() * (2 / (levels - 1)) - 1  # in [-1, 1]
    return amplitude * values, y


def marker_data(
    n: int,
    gen: torch.Generator,
    size: int = 12,
    block: int = 2,
    gap: int = 5,
) -> tuple[Tensor, Tensor]:
    """``x (n, 2, size, size)``, ``y (n,)``: channel 0 = ``FLAG`` on the two marker
    blocks, channel 1 = the block's value, 0 elsewhere.

    ``gap=5`` keeps both blocks out of every 5x5 window (two stacked 3x3 convolutions);
    ``FLAG**2 > AMPLITUDE**2``, so under ``dot`` similarity a marker ranks every marker
    token above the background. The background is exactly 0 (no noise), so a background
    token scores 0 against every token and never selects a marker: the blocks meet only
    through the markers' own selections, which a selection returning wrong neighbours
    (e.g. the least similar) does not make. With noise, background queries select
    markers too and the task stays learnable with an inverted selection."""
    x = torch.zeros(n, 2, size, size)
    corners = _far_pairs(n, size, block, gap, gen)  # (n, 2 markers, (row, col))
    values, y = _marker_values(n, gen)
    for i in range(n):
        for m in range(2):
            r, c = corners[i, m].tolist()
            x[i, 0, r : r + block, c : c + block] = FLAG
            x[i, 1, r : r + block, c : c + block] = values[i, m]
    return x, y


def token_marker_data(
    n: int,
    gen: torch.Generator,
    tokens: int = 16,
    noise: float = 0.3,
) -> tuple[Tensor, Tensor]:
    """``x (n, tokens, 2)``, ``y (n,)``: :func:`marker_data` on a sequence, one token per
    marker at two random distinct places, ``N(0, noise^2)`` values on the other tokens."""
    x = torch.zeros(n, tokens, 2)
    x[:, :, 1] = noise * torch.randn(n, tokens, generator=gen)
    where = torch.rand(n, tokens, generator=gen).argsort(dim=1)[:, :2]  # (n, 2) distinct
    values, y = _marker_values(n, gen)
    rows = torch.arange(n)[:, None]
    x[rows, where, 0] = FLAG
    x[rows, where, 1] = values
    return x, y


@dataclass
class Task:
    """Fixed train and test sets of one task."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor


@functools.cache
def make_task(
    data: Callable[..., tuple[Tensor, Tensor]], seed: int, n_train: int = 1024, n_test: int = 512
) -> Task:
    """Train and test sets drawn from one generator seeded with ``seed`` (cached: the
    tensors are shared, never written)."""
    gen = torch.Generator().manual_seed(seed)
    x_train, y_train = data(n_train, gen)
    x_test, y_test = data(n_test, gen)
    return Task(x_train, y_train, x_test, y_test)


# ---------------------------------------------------------------- networks


class MapNet(nn.Module):
    """``(B, C, H, W) -> layers (each followed by ReLU) -> pool over H, W -> Linear``.

    ``pool``: ``"max"`` (detection: is the pattern anywhere?) or ``"mean"`` (the pooled
    features are a sum over positions, which the long-range task relies on)."""

    def __init__(self, *layers: nn.Module, width: int, pool: str, classes: int = 2) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.pool = pool
        self.head = nn.Linear(width, classes)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = F.relu(layer(x))  # (B, width, H, W)
        x = x.amax(dim=(2, 3)) if self.pool == "max" else x.mean(dim=(2, 3))  # (B, width)
        return self.head(x)  # (B, classes)


class TokenNet(nn.Module):
    """``(B, N, C) -> Linear embed -> x + attention(x) -> ReLU(Linear) -> mean over N ->
    Linear``: one attention layer and a token-wise MLP (the nonlinearity after mixing)."""

    def __init__(self, attention: nn.Module, in_dim: int, dim: int, classes: int = 2) -> None:
        super().__init__()
        self.embed = nn.Linear(in_dim, dim)
        self.attention = attention
        self.mlp = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: Tensor) -> Tensor:
        h = self.embed(x)  # (B, N, dim)
        h = h + self.attention(h)
        h = F.relu(self.mlp(h))
        return self.head(h.mean(dim=1))  # (B, classes)

    def with_attention(self, attention: nn.Module) -> TokenNet:
        """A copy with the same weights and another attention layer."""
        net = copy.deepcopy(self)
        net.attention = attention
        return net


# ---------------------------------------------------------------- training


def train(
    model: nn.Module,
    task: Task,
    seed: int,
    steps: int = 150,
    batch: int = 32,
    lr: float = 1e-2,
) -> list[float]:
    """Adam on mini-batches drawn by a generator seeded with ``seed``; the losses."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        idx = torch.randint(0, len(task.y_train), (batch,), generator=gen)
        loss = F.cross_entropy(model(task.x_train[idx]), task.y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@torch.no_grad()
def accuracy(model: nn.Module, task: Task) -> float:
    """Test accuracy in eval mode (fixed ``random`` candidates)."""
    model.eval()
    return (model(task.x_test).argmax(dim=1) == task.y_test).float().mean().item()
