"""Resumable epoch batches: the order of the batches a trainer sees, as a function of the seed.

:class:`EpochBatches` yields batches of item indices ``epoch * N + i`` (``drop_last``): epoch ``e``'s
order is a permutation of ``N`` seeded by ``(seed, *stream, e)``, so a run resumed at
``(start_epoch, start_batch)`` sees exactly the batches an uninterrupted run would, and a dataset
can seed each item's own random choices from ``(seed, epoch, i)``.  With ``world_size > 1`` (DDP)
rank ``r`` takes every ``world_size``-th batch of that order, starting at the ``r``-th.

``stream`` keeps two trainers with the same seed on different orders: the first stage uses none
(``sepnms train``), CLIP-dagger's fine-tuning ``(1 << 20,)``.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


class EpochBatches(Sampler[list[int]]):
    """Batches of item indices ``epoch * n + i`` from ``(start_epoch, start_batch)`` on; drop_last."""

    def __init__(self, n: int, batch_size: int, epochs: int, seed: int, start_epoch: int = 0,
                 start_batch: int = 0, rank: int = 0, world_size: int = 1, stream: Sequence[int] = ()):
        self.n, self.bs, self.epochs, self.seed = n, batch_size, epochs, seed
        self.start_epoch, self.start_batch = start_epoch, start_batch
        self.rank, self.world = rank, world_size
        self.stream = tuple(int(s) for s in stream)

    def batches_per_epoch(self) -> int:
        """Batches each rank takes per epoch."""
        return (self.n // self.bs) // self.world

    def __iter__(self) -> Iterator[list[int]]:
        nb = self.batches_per_epoch()
        for epoch in range(self.start_epoch, self.epochs):
            perm = np.random.default_rng([self.seed, *self.stream, epoch]).permutation(self.n)
            first = self.start_batch if epoch == self.start_epoch else 0
            for b in range(first, nb):
                g = b * self.world + self.rank
                yield [epoch * self.n + int(i) for i in perm[g * self.bs:(g + 1) * self.bs]]

    def __len__(self) -> int:
        return max(self.batches_per_epoch() * (self.epochs - self.start_epoch) - self.start_batch, 0)
