"""PKSampler: P×K structure, determinism, oversampling, DDP slicing."""
from itertools import islice

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from reid_train.data.sampler import PKSampler, round_batches


def _labels(counts, seed=0):
    """Shuffled labels with ``counts[i]`` images of identity ``10 + 3*i``."""
    lab = np.repeat(10 + 3 * np.arange(len(counts)), counts)
    return np.random.default_rng(seed).permutation(lab)


def test_pk_structure_and_positions():
    labels = _labels([7, 5, 9, 4, 6, 8, 12, 4])
    s = PKSampler(labels, P=3, K=4, seed=1)
    for b in islice(s, 50):
        assert b.dtype == np.int64 and b.shape == (12,)
        blocks = labels[b].reshape(3, 4)
        assert (blocks == blocks[:, :1]).all()          # K images of one identity per block
        assert len(set(blocks[:, 0])) == 3              # P distinct identities
        for blk in b.reshape(3, 4):                     # no oversampling: K distinct positions
            assert len(set(blk)) == 4


def test_deterministic_and_seed_dependent():
    labels = _labels([6] * 10)
    a = np.stack(list(islice(PKSampler(labels, 4, 3, seed=5), 20)))
    b = np.stack(list(islice(PKSampler(labels, 4, 3, seed=5), 20)))
    c = np.stack(list(islice(PKSampler(labels, 4, 3, seed=6), 20)))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_identities_with_fewer_than_k_images_are_oversampled():
    labels = _labels([1, 2, 8, 8])
    s = PKSampler(labels, P=4, K=4, seed=0)
    # with P = number of identities every batch holds every identity
    for b in islice(s, 5):
        blocks = b.reshape(4, 4)
        by_id = {int(labels[blk[0]]): blk for blk in blocks}
        single = by_id[10]                               # the identity with one image
        assert (single == np.flatnonzero(labels == 10)[0]).all()
        two = by_id[13]                                  # both of its images appear
        assert set(two) == set(np.flatnonzero(labels == 13).tolist())


def test_round_sees_each_image_at_most_once_when_no_oversampling():
    labels = _labels([8, 8, 8, 8, 8, 8])
    groups = [np.flatnonzero(labels == v) for v in np.unique(labels)]
    batches = round_batches(groups, 3, 4, np.random.default_rng(0))
    allpos = np.concatenate(batches)
    assert len(allpos) == len(set(allpos.tolist())) == 48   # 12 chunks -> 4 batches, all images
    assert len(batches) == PKSampler(labels, 3, 4).batches_per_epoch == 4


def test_epoch_length_definition():
    # chunks: 7//4=1, 5//4=1, 9//4=2, 2->1 (oversampled), 13//4=3  -> 8 chunks // P=2 -> 4
    s = PKSampler(_labels([7, 5, 9, 2, 13]), P=2, K=4)
    assert len(s) == 4


@settings(max_examples=25, deadline=None)
@given(world=st.sampled_from([2, 3, 4]), seed=st.integers(0, 1000),
       counts=st.lists(st.integers(1, 9), min_size=4, max_size=12))
def test_ddp_slices_concatenate_to_single_process_batch(world, seed, counts):
    P, K = 4, 3                                          # P*K = 12 divisible by 2, 3, 4
    labels = _labels(counts, seed)
    single = list(islice(PKSampler(labels, P, K, seed=seed), 12))
    per_rank = [list(islice(PKSampler(labels, P, K, seed=seed, rank=r, world_size=world), 12))
                for r in range(world)]
    for j in range(12):
        assert np.array_equal(np.concatenate([pr[j] for pr in per_rank]), single[j])


def test_resume_matches_stream():
    labels = _labels([5, 6, 7, 3, 9, 4])
    s = PKSampler(labels, 2, 4, seed=3)
    full = list(islice(s.batches(0), 30))
    resumed = list(islice(s.batches(13), 17))
    assert all(np.array_equal(a, b) for a, b in zip(full[13:], resumed))


def test_bad_arguments():
    labels = _labels([4, 4, 4])
    with pytest.raises(ValueError, match="only 3 identities"):
        PKSampler(labels, P=4, K=2)
    with pytest.raises(ValueError, match="divisible"):
        PKSampler(labels, P=3, K=3, world_size=2)
    with pytest.raises(ValueError, match="rank"):
        PKSampler(labels, P=2, K=2, rank=2, world_size=2)
