"""PK identity sampler: P identities × K images per batch, seeded, DDP-sliced.

Triplet-style losses (batch-hard TriHard in AlignedReID Sec. 3, the S × A
batches of MPN Sec. 4.1, the P × Q batches of the Support Neighbor loss
Sec. 3) need every batch to hold several images of each identity. This is the
``NaiveIdentitySampler`` scheme of fast-reid / ``RandomIdentitySampler`` of
torchreid, made deterministic and independent of the number of processes:

* One *round* (``round_batches``): every identity's positions are shuffled;
  an identity with fewer than K images is oversampled with replacement up to
  K; the positions are cut into chunks of K (a trailing partial chunk is
  dropped, as in fast-reid). Batches are then drawn greedily: P distinct
  identities picked at random among those with chunks left, one chunk popped
  from each. The round ends when fewer than P identities have chunks left.
* The stream is an infinite concatenation of rounds; round ``r`` uses
  ``numpy.random.default_rng([seed, r])`` so the stream depends only on
  ``(labels, P, K, seed)``.
* DDP: every process builds the same *global* batch of ``P*K`` positions and
  keeps the contiguous slice ``[rank*B/W, (rank+1)*B/W)``, so for a given
  seed 1 or N processes see the same global batches. With ``P % world_size
  == 0`` each slice holds whole identities (K images each).

Epoch length (``batches_per_epoch``): ``sum_id max(1, n_id // K) // P``, the
number of full batches one round can make if no chunk were left over, i.e.
"every image about once" (identities with fewer than K images count once).
The stream is infinite, so an epoch is simply the next ``batches_per_epoch``
batches of it; epochs do not have to coincide with rounds.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

__all__ = ["PKSampler", "round_batches"]


def round_batches(groups: list[np.ndarray], P: int, K: int,
                  rng: np.random.Generator) -> list[np.ndarray]:
    """One round of P×K batches over ``groups`` (positions of each identity).

    Returns a list of (P*K,) int64 arrays; batch ``j`` is P blocks of K
    positions, block ``i`` all from the same identity.
    """
    chunks: list[list[np.ndarray]] = []
    for pos in groups:
        pos = rng.permutation(pos)
        if len(pos) < K:
            pos = np.concatenate([pos, rng.choice(pos, K - len(pos), replace=True)])
        n = len(pos) // K
        chunks.append([pos[i * K:(i + 1) * K] for i in range(n)])
    left = np.array([len(c) for c in chunks])
    batches = []
    while np.count_nonzero(left) >= P:
        available = np.flatnonzero(left)
        picked = rng.choice(available, P, replace=False)
        batches.append(np.concatenate([chunks[g][len(chunks[g]) - left[g]] for g in picked]))
        left[picked] -= 1
    return batches


class PKSampler:
    """Infinite, seeded stream of P×K batches of positions into ``labels``.

    ``labels``: (N,) identity label of each position (any integers). Iterating
    yields (P*K // world_size,) int64 arrays of positions (this rank's slice
    of the global batch). ``len(sampler)`` is ``batches_per_epoch``.
    ``batches(start)`` resumes the stream at global batch ``start``.
    """

    def __init__(self, labels, P: int, K: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        labels = np.asarray(labels)
        if labels.ndim != 1 or len(labels) == 0:
            raise ValueError("labels must be a non-empty 1-D array")
        if P < 1 or K < 1:
            raise ValueError(f"P and K must be >= 1, got P={P}, K={K}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"bad rank {rank} for world_size {world_size}")
        if (P * K) % world_size:
            raise ValueError(f"batch P*K={P * K} is not divisible by world_size={world_size}")
        order = np.argsort(labels, kind="stable")
        ids, starts = np.unique(labels[order], return_index=True)
        if len(ids) < P:
            raise ValueError(f"P={P} identities per batch but only {len(ids)} identities")
        self.groups = np.split(order.astype(np.int64), starts[1:])
        self.P, self.K, self.seed = P, K, seed
        self.rank, self.world_size = rank, world_size
        self.batch_size = P * K // world_size
        chunks = sum(max(1, len(g) // K) for g in self.groups)
        self.batches_per_epoch = max(1, chunks // P)

    def __len__(self) -> int:
        return self.batches_per_epoch

    def global_batches(self, start: int = 0) -> Iterator[np.ndarray]:
        """The global (P*K,) batches from global batch index ``start`` on."""
        r, skipped = 0, 0
        while True:
            batches = round_batches(self.groups, self.P, self.K,
                                    np.random.default_rng([self.seed, r]))
            if not batches:
                raise RuntimeError("a round produced no batch (fewer than P identities?)")
            for b in batches[max(0, start - skipped):]:
                yield b
            skipped += len(batches)
            r += 1

    def batches(self, start: int = 0) -> Iterator[np.ndarray]:
        """This rank's slice of each global batch, from ``start`` on."""
        lo = self.rank * self.batch_size
        for b in self.global_batches(start):
            yield b[lo:lo + self.batch_size]

    def __iter__(self) -> Iterator[np.ndarray]:
        return self.batches(0)

    def __repr__(self) -> str:
        return (f"PKSampler(P={self.P}, K={self.K}, seed={self.seed}, identities={len(self.groups)}, "
                f"images={sum(len(g) for g in self.groups)}, batches_per_epoch={self.batches_per_epoch}, "
                f"rank={self.rank}/{self.world_size})")
