"""``random`` candidates: who shares a draw (``sample_scope``), fresh draws in training,
fixed draws in eval, and every scope equal on both backends."""

from __future__ import annotations

import pytest
import torch

import convnn
from convnn import ConvNNOptions, Grid
from convnn.functional import candidate_table

F64 = torch.float64
SCOPES = ["batch", "example", "head"]


def _table(scope: str, training: bool, batch=(3, 2)):
    opts = ConvNNOptions(k=3, candidates="random", num_samples=5, sample_scope=scope)
    return candidate_table(opts, 17, torch.arange(17), Grid(4, 4, 1), training=training,
                           batch=batch).index  # fmt: skip


def test_training_draws_per_scope() -> None:
    """batch: one sample; example: one per example, shared by its heads; head: one per
    example and head. Slot 0 is always the query itself."""
    torch.manual_seed(0)
    shared, per_example, per_head = (_table(s, True) for s in SCOPES)
    assert shared.shape == (17, 6)
    assert per_example.shape == (3, 1, 17, 6) and per_head.shape == (3, 2, 17, 6)
    samples = per_example[:, 0, 0, 1:]  # (B, r)
    assert len({tuple(s.tolist()) for s in samples}) > 1
    heads = per_head[:, :, 0, 1:].reshape(6, 5)
    assert len({tuple(s.tolist()) for s in heads}) > 1
    for index in (shared, per_example, per_head):
        assert torch.equal(index[..., 0], torch.arange(17).expand(index.shape[:-1]))


def test_batch_scope_draws_as_before() -> None:
    """The default scope keeps the earlier draw: ``randperm(N)[:r]``, sorted."""
    torch.manual_seed(5)
    expected = torch.randperm(17)[:5].sort().values
    torch.manual_seed(5)
    assert torch.equal(_table("batch", True)[0, 1:], expected)


@pytest.mark.parametrize("scope", SCOPES)
def test_eval_draws_are_fixed(scope: str) -> None:
    """Eval: the same sample on every call and for every example; per head for ``head``."""
    first, second = _table(scope, False), _table(scope, False, batch=(5, 2))
    assert torch.equal(first, second[:1] if first.dim() > 2 else second)
    if scope == "head":
        assert first.shape == (1, 2, 17, 6) and not torch.equal(first[0, 0], first[0, 1])
    else:
        assert first.shape == (17, 6)


@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("training", [True, False])
def test_scopes_equal_on_both_backends(scope: str, training: bool) -> None:
    """Attention (batch dims B, heads) and ConvNN2d (batch dim B), forward and backward."""
    attn = convnn.ConvNNAttention(16, 2, k=3, candidates="random", num_samples=6,
                                  similarity="cosine", sample_scope=scope).double()  # fmt: skip
    conv = convnn.ConvNN2d(4, 4, 3, padding=1, candidates="random", num_samples=7, k=4,
                           similarity="mixed", weighting="softmax",
                           sample_scope=scope).double()  # fmt: skip
    for layer, shape in ((attn, (3, 17, 16)), (conv, (2, 4, 6, 6))):
        layer.train(training)
        x = torch.randn(shape, dtype=F64)
        results = []
        for backend in ("fast", "reference"):
            layer.options = ConvNNOptions(**{**layer.options.__dict__, "backend": backend})
            torch.manual_seed(0)
            xb = x.clone().requires_grad_(True)
            y = layer(xb)
            grads = torch.autograd.grad(y.square().sum(), [xb, *layer.parameters()])
            results.append((y, *grads))
        for a, b in zip(*results, strict=True):
            torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


def test_per_head_draws_compile() -> None:
    torch._dynamo.reset()
    layer = convnn.ConvNNAttention(16, 2, k=3, candidates="random", num_samples=6,
                                   sample_scope="head")  # fmt: skip
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    compiled(torch.randn(2, 17, 16, requires_grad=True)).sum().backward()


def test_unknown_scope_names_the_allowed_values() -> None:
    with pytest.raises(ValueError, match=r"sample_scope='query'.*'batch', 'example', 'head'"):
        ConvNNOptions(sample_scope="query")
