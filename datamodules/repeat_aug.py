"""Repeated augmentation (Hoffer et al., 2020; DeiT's and timm's ``RASampler``): each training
image is drawn ``repeats`` times per epoch, each copy augmented on its own and, under DDP, read
by a different process.

:class:`RepeatAugmentSampler` is timm's ``RepeatAugSampler`` with two changes a Lightning run
needs: the order of an epoch depends on ``(seed, epoch)``, not on the epoch alone (timm's seeds
its shuffle with the epoch number, so every run of a grid would read the same order), and it
is a ``DistributedSampler``, which Lightning leaves in place under DDP instead of wrapping it in
a second one that would split the already split indices again.

An epoch has the length of one pass over the data (timm's ``selected_round``: the number of
images rounded down to a multiple of 256, over the processes), made of about ``1 / repeats`` of
the images, each ``repeats`` times: DeiT's ImageNet recipe with ``repeats=3``.
"""

from __future__ import annotations

from collections.abc import Iterator

from timm.data.distributed_sampler import RepeatAugSampler
from torch.utils.data import Dataset, DistributedSampler

__all__ = ["RepeatAugmentSampler"]


class RepeatAugmentSampler(RepeatAugSampler, DistributedSampler):
    """Indices of one process's share of an epoch with repeated augmentation.

    Args:
        dataset: the training split (only its length is read).
        num_replicas, rank: the number of processes and this one's rank.
        repeats: copies of each drawn image per epoch (>= 2; DeiT: 3).
        seed: the run's seed; epoch ``e`` is shuffled by ``torch.Generator`` seeded with
            ``seed + e`` (``set_epoch``, which Lightning calls before every epoch).
    """

    def __init__(
        self, dataset: Dataset, num_replicas: int, rank: int, repeats: int, seed: int
    ) -> None:
        RepeatAugSampler.__init__(
            self, dataset, num_replicas=num_replicas, rank=rank, shuffle=True,
            num_repeats=repeats,
        )  # fmt: skip
        self.seed = seed
        self.drop_last = False  # DistributedSampler's attribute, for code that reads it

    def __iter__(self) -> Iterator[int]:
        epoch = self.epoch
        self.epoch = self.seed + epoch  # timm's draws the order from a generator seeded by it
        try:
            return RepeatAugSampler.__iter__(self)  # an iterator over a finished list
        finally:
            self.epoch = epoch
