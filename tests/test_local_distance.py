"""AlignedReID local distance (Eq. 1-2) against plain loops and hand-made cases."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from reid_train.evaluation import threads
from reid_train.evaluation.local_distance import (LocalDistanceRows, local_distance, local_distance_blocks,
                                                  local_distance_cpu, paired_local_distance,
                                                  shortest_path_distance)




def naive_shortest_path(d) -> float:
    """Eq. 2 as written: a double loop over the cells of one (H, H) matrix."""
    h = len(d)
    s = [[0.0] * h for _ in range(h)]
    for i in range(h):
        for j in range(h):
            if i == 0 and j == 0:
                s[i][j] = d[0][0]
            elif j == 0:
                s[i][j] = s[i - 1][j] + d[i][j]
            elif i == 0:
                s[i][j] = s[i][j - 1] + d[i][j]
            else:
                s[i][j] = min(s[i - 1][j], s[i][j - 1]) + d[i][j]
    return s[h - 1][h - 1]


def naive_local_distance(f: np.ndarray, g: np.ndarray) -> float:
    """Eq. 1 with the paper's (e^x - 1) / (e^x + 1), then Eq. 2, for one pair."""
    h = len(f)
    d = [[0.0] * h for _ in range(h)]
    for i in range(h):
        for j in range(h):
            x = math.sqrt(float(((f[i] - g[j]) ** 2).sum()))
            d[i][j] = (math.exp(x) - 1) / (math.exp(x) + 1)
    return naive_shortest_path(d)


@pytest.mark.parametrize("h", [1, 2, 3, 5, 8])
def test_shortest_path_matches_double_loop(h):
    g = torch.Generator().manual_seed(h)
    d = torch.rand(3, 4, h, h, generator=g, dtype=torch.float64)
    got = shortest_path_distance(d)
    assert got.shape == (3, 4)
    want = torch.tensor([[naive_shortest_path(d[a, b].tolist()) for b in range(4)] for a in range(3)],
                        dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_shortest_path_hand_made_matrix():
    # the cheap cells form a staircase through the right column then down
    d = torch.tensor([[1.0, 0.0, 0.0],
                      [9.0, 9.0, 0.0],
                      [9.0, 9.0, 2.0]])
    assert shortest_path_distance(d).item() == 3.0
    # gradient = indicator of the (unique) shortest path
    d.requires_grad_(True)
    shortest_path_distance(d).backward()
    assert d.grad.tolist() == [[1, 1, 1], [0, 0, 1], [0, 0, 1]]


def test_identical_sequences_give_the_minimal_distance():
    """One-hot parts a*e_i: d_ii = 0, d_ij = tanh(a / sqrt 2); a path must
    cross H - 1 off-diagonal cells, so S = (H - 1) tanh(a / sqrt 2)."""
    h, a = 6, 3.0
    x = a * torch.eye(h, 10, dtype=torch.float64)[None]
    t = math.tanh(a / math.sqrt(2))
    got = local_distance(x, x)[0, 0].item()
    assert got == pytest.approx((h - 1) * t, abs=1e-9)  # d_ii = 0 exactly without a gradient
    with_grad = local_distance(x.clone().requires_grad_(True), x)[0, 0].item()
    assert with_grad == pytest.approx((h - 1) * t + h * math.tanh(0.5e-6), abs=1e-9)  # sqrt(1e-12) floor
    others = torch.randn(20, h, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * a
    assert (local_distance(x, others) > got).all()


def test_shifted_sequence_is_aligned():
    """A ramp x_i = i a u and the same ramp shifted down by s rows,
    y_j = (j - s) a u: d(x_i, y_j) = tanh(a |i - j + s| / 2). The zero cells
    (i, i + s) lie on every shortest path (gradient 1 there), and the
    distance is 2 sum_{m<=s} tanh(a m / 2) + (H - 1 - s) tanh(a / 2), far
    below the unaligned sum of corresponding rows H tanh(a s / 2)."""
    h, s, a = 8, 2, 1.0
    u = torch.zeros(4, dtype=torch.float64)
    u[0] = 1.0
    x = (torch.arange(h, dtype=torch.float64)[:, None] * a * u)[None]
    y = ((torch.arange(h, dtype=torch.float64) - s)[:, None] * a * u)[None]
    want = 2 * sum(math.tanh(a * m / 2) for m in range(1, s + 1)) + (h - 1 - s) * math.tanh(a / 2)
    eps = (h - s) * math.tanh(0.5e-6)  # with a gradient, sqrt is taken of max(x^2, 1e-12)
    assert paired_local_distance(x, y).item() == pytest.approx(want, abs=1e-9)
    assert paired_local_distance(x.requires_grad_(True), y).item() == pytest.approx(want + eps, abs=1e-9)
    assert want < h * math.tanh(a * s / 2)
    i, j = torch.meshgrid(torch.arange(h), torch.arange(h), indexing="ij")
    d = torch.tanh(a * (i - j + s).abs().double() / 2).requires_grad_(True)
    shortest_path_distance(d).backward()
    assert all(d.grad[r, r + s].item() == 1.0 for r in range(h - s))
    assert d.grad[0, 0].item() == 1.0 and d.grad[h - 1, h - 1].item() == 1.0


def test_local_distance_matches_per_pair_loop():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 7, 5, generator=g, dtype=torch.float64) * 0.5
    y = torch.randn(6, 7, 5, generator=g, dtype=torch.float64) * 0.5
    want = np.array([[naive_local_distance(x[a].numpy(), y[b].numpy()) for b in range(6)] for a in range(4)])
    np.testing.assert_allclose(local_distance(x, y).numpy(), want, rtol=1e-10, atol=1e-6)
    # float32 path agrees too
    np.testing.assert_allclose(local_distance(x.float(), y.float()).numpy(), want, rtol=1e-5, atol=1e-5)
    # paired = the diagonal; symmetric in its arguments
    torch.testing.assert_close(paired_local_distance(x, y[:4]), local_distance(x, y[:4]).diagonal())
    torch.testing.assert_close(local_distance(y, x), local_distance(x, y).t())


def test_blocks_equal_one_shot():
    g = torch.Generator().manual_seed(4)
    q, gal = torch.randn(11, 4, 8, generator=g), torch.randn(23, 4, 8, generator=g)
    full = local_distance(q, gal).numpy()
    blocks = local_distance_blocks(q, gal, block=3, gallery_block=5)
    assert blocks.dtype == np.float32 and blocks.shape == (11, 23)
    np.testing.assert_allclose(blocks, full, rtol=1e-6, atol=1e-6)
    rows = LocalDistanceRows(q.numpy(), gal.numpy(), block=4, gallery_block=7)
    np.testing.assert_allclose(rows(5, 9), full[5:9], rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError):
        local_distance_blocks(q, gal[:, :3])


def test_large_distances_saturate_without_nan():
    """Eq. 1 as written overflows e^x in float32 for x > 88; tanh(x/2) gives 1."""
    x = torch.zeros(1, 5, 3)
    y = torch.full((1, 5, 3), 200.0)
    got = local_distance(x, y)
    assert torch.isfinite(got).all() and got.item() == pytest.approx(9.0)  # 2H - 1 cells of 1


def test_gradients_double_precision():
    g = torch.Generator().manual_seed(5)
    d = torch.rand(2, 3, 5, 5, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(shortest_path_distance, (d,))
    x = torch.randn(3, 4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(local_distance, (x, y))
    assert torch.autograd.gradcheck(paired_local_distance, (x[:2], y))


def test_coincident_features_have_finite_gradients():
    x = torch.randn(3, 4, 6, requires_grad=True)
    local_distance(x).sum().backward()  # the diagonal pairs compare identical rows
    assert torch.isfinite(x.grad).all()


def duplicates_and_near_duplicates(seed=7, n=6, h=8, c=128, scale=3.0):
    """ReLU-like local features of realistic magnitude (|f|^2 ~ 500), each query
    repeated exactly in the gallery and once more with 1e-3 noise."""
    rng = np.random.default_rng(seed)
    base = np.abs(rng.standard_normal((n, 1, c))) * scale       # rows of one image are alike
    q = np.abs(base + rng.standard_normal((n, h, c)) * 0.05).astype(np.float32)
    near = (q + rng.standard_normal(q.shape).astype(np.float32) * 1e-3).astype(np.float32)
    others = (np.abs(rng.standard_normal((3, h, c))) * scale).astype(np.float32)
    return q, np.concatenate([q, near, others])


def double_loop_float64(q, g):
    return np.array([[naive_local_distance(a.astype(np.float64), b.astype(np.float64)) for b in g] for a in q])


def test_duplicates_exact_against_float64_double_loop():
    """Issue 14, defect 2: |a|^2 + |b|^2 - 2 a.b in float32 cancels for (near-)identical
    parts; every full-matrix path must stay within 1e-5 of a float64 double loop."""
    q, g = duplicates_and_near_duplicates()
    want = double_loop_float64(q, g)
    assert 0.5 < np.diagonal(want[:, :len(q)]).max() < 0.95 * want[:, -3:].min()  # unsaturated cells
    # the cancellation is real: the float32 expanded form is off by far more than 1e-5 here
    xt, yt = torch.from_numpy(q), torch.from_numpy(g)
    sq32 = ((xt * xt).sum(-1)[:, :, None, None] + (yt * yt).sum(-1)[None, None]
            - 2 * torch.einsum("nac,mbc->namb", xt, yt)).clamp_min(0)
    cells32 = torch.tanh(sq32.sqrt() / 2).permute(0, 2, 1, 3)
    assert (shortest_path_distance(cells32).numpy() - want).__abs__().max() > 1e-4
    with torch.no_grad():
        got_nograd = local_distance(xt, yt).numpy()
    got_grad = local_distance(xt.clone().requires_grad_(True), yt).detach().numpy()
    for got in (local_distance_cpu(q, g), local_distance_blocks(xt, yt, block=4, gallery_block=5),
                LocalDistanceRows(q, g)(0, len(q)), got_nograd):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    # the training path keeps sqrt(max(sq, 1e-12)) for finite gradients: 15 cells of 5e-7 at most
    np.testing.assert_allclose(got_grad, want, rtol=0, atol=1e-5)


def test_cpu_kernel_matches_per_pair_loop_and_saturates():
    rng = np.random.default_rng(11)
    q = rng.standard_normal((9, 8, 16)).astype(np.float32)
    g = rng.standard_normal((13, 8, 16)).astype(np.float32) * np.linspace(0.1, 30, 13)[:, None, None]
    got = local_distance_cpu(q, g)
    assert got.dtype == np.float32 and got.shape == (9, 13)
    np.testing.assert_allclose(got, double_loop_float64(q, g), rtol=0, atol=2e-6)
    assert np.isfinite(got).all() and got[:, -1].max() <= 15.0  # 2H - 1 cells below 1
    with pytest.raises(ValueError):
        local_distance_cpu(q, g[:, :, :3])


@pytest.mark.parametrize("h, c, n, m", [(8, 128, 5, 17), (8, 33, 4, 16), (8, 9, 2, 150), (4, 20, 9, 31),
                                        (3, 7, 3, 2), (3, 9, 1, 1), (1, 4, 6, 19), (9, 16, 7, 18)])
def test_cpu_kernel_tile_edges_and_part_counts(h, c, n, m):
    """The kernel works on tiles of 1 query x 16 gallery images, runs of 8 tiles
    per job, and register blocks of 2 query parts x up to 8 gallery parts (one
    generated kernel per H): counts that are not multiples (a partial tile,
    more than one run, an odd H's last part row, H > 8 in two column chunks,
    H = 1, one query, one gallery image) must give the float64 double loop's
    values, on random inputs and on duplicates / near-duplicates of the queries."""
    rng = np.random.default_rng(h * 1000 + c)
    q = np.abs(rng.standard_normal((n, h, c)) * 2).astype(np.float32)
    g = np.abs(rng.standard_normal((m, h, c)) * 2).astype(np.float32)
    g[: min(n, m)] = q[: min(n, m)]                                                        # duplicates
    g[-1] = q[-1] + rng.standard_normal((h, c)).astype(np.float32) * 1e-3                # near-duplicate
    got = local_distance_cpu(q, g)
    want = double_loop_float64(q, g)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    torch.testing.assert_close(torch.from_numpy(local_distance_cpu(g, q)), torch.from_numpy(got.T))


def test_kernel_threads_follow_free_cores(monkeypatch):
    cores = threads.usable_cores()
    monkeypatch.delenv("REID_KERNEL_THREADS", raising=False)
    monkeypatch.setattr(threads, "_others_runnable_now", lambda: 0)   # only this process runs
    assert threads.free_cores() == min(cores, threads.numba.config.NUMBA_NUM_THREADS)
    monkeypatch.setattr(threads, "_others_runnable_now", lambda: 4)   # 4 busy processes
    assert threads.free_cores() == max(1, min(cores, threads.numba.config.NUMBA_NUM_THREADS) - 4)
    monkeypatch.setattr(threads, "_others_runnable_now", lambda: None)  # unknown: all cores
    assert threads.free_cores() == min(cores, threads.numba.config.NUMBA_NUM_THREADS)
    monkeypatch.setenv("REID_KERNEL_THREADS", "1")
    assert threads.free_cores() == 1
    for bad in ("two", "0", "-1"):
        monkeypatch.setenv("REID_KERNEL_THREADS", bad)
        with pytest.raises(ValueError, match="REID_KERNEL_THREADS"):
            threads.free_cores()
    monkeypatch.setenv("REID_KERNEL_THREADS", "1")
    with threads.kernel_threads(1):
        assert threads.numba.get_num_threads() == 1


def test_own_spinning_threads_are_not_counted_as_load():
    """A thread of this process that runs (as a finished kernel's OpenMP workers
    spin for a while) is this process's, not another's: it is in the process's
    running-thread count and left out of the load the policy sees."""
    import threading
    import time

    import numba

    @numba.njit(nogil=True)
    def spin(n):
        x = 0.0
        for i in range(n):
            x += np.sqrt(i + x)
        return x

    spin(10)
    counts, done = [], threading.Event()
    worker = threading.Thread(target=lambda: (spin(30_000_000), done.set()))
    worker.start()
    try:
        time.sleep(0.05)
        while not done.is_set() and len(counts) < 20:
            counts.append(threads._own_running_threads())
            time.sleep(0.005)
    finally:
        worker.join()
    assert max(counts) >= 2  # the spinning thread and this one


def test_load_is_the_machine_runnable_count_less_this_process(monkeypatch, tmp_path):
    loadavg = tmp_path / "loadavg"
    monkeypatch.setattr(threads, "_LOADAVG", str(loadavg))
    monkeypatch.setattr(threads, "_own_running_threads", lambda: 3)
    loadavg.write_text("0.50 0.40 0.30 5/120 999\n")
    assert threads._others_runnable_now() == 2
    loadavg.write_text("0.50 0.40 0.30 2/120 999\n")    # our threads ended between the two reads
    assert threads._others_runnable_now() == 0
    loadavg.write_text("garbled\n")
    assert threads._others_runnable_now() is None


def test_gallery_lanes_layout_and_padding():
    """``gallery_lanes`` puts image ``16 t + l``'s part ``b``, channel ``k`` at
    ``[t, k, b, l]``; lanes past G are zeros (their results are never written)."""
    from reid_train.evaluation.local_distance_kernel import LANES, gallery_lanes, local_distance_lanes
    rng = np.random.default_rng(5)
    g = rng.standard_normal((21, 3, 5)).astype(np.float32)
    yt = gallery_lanes(g)
    assert yt.shape == (2, 5, 3, LANES) and LANES == 16
    assert yt[1, 4, 2, 3] == g[19, 2, 4] and yt[0, 0, 1, 15] == g[15, 1, 0]
    np.testing.assert_array_equal(yt.transpose(0, 3, 2, 1).reshape(32, 3, 5)[:21], g)
    assert not yt[1, :, :, 5:].any()
    q = rng.standard_normal((2, 3, 5)).astype(np.float32)
    np.testing.assert_array_equal(local_distance_lanes(q, yt, 21), local_distance_cpu(q, g))
    assert local_distance_lanes(q, yt, 0).shape == (2, 0)
    with pytest.raises(ValueError):
        local_distance_lanes(q[:, :2], yt, 21)


def test_generated_kernel_source_covers_every_part_pair_once():
    """The generated tile writes each cell x lane exactly once per pass: the 2-row
    blocks (over the even part rows) cover rows a, a + 1 x all H gallery parts, an
    odd H's 1-row block (a = H - 1) its last row; at most 2 query parts and 8
    gallery parts per register block."""
    import re
    from reid_train.evaluation.local_distance_kernel import kernel_source
    store = r"cells\[\(a \+ (\d)\) \* {h} \+ (\d+), (\d+)\]"
    for h in (1, 3, 8, 9, 11):
        src = kernel_source(h).split("def local_distance_h")[0]
        compile(src, "<kernel>", "exec")
        pairs, _, last = src.partition(f"    a = {h - 1}\n")
        assert bool(last) == bool(h % 2) and (f"range(0, {h - h % 2}, 2)" in pairs) == (h > 1)
        for section, rows in ((pairs, 2 if h > 1 else 0), (last, 1 if h % 2 else 0)):
            cells = re.findall(store.format(h=h), section)
            assert len(cells) == len(set(cells)) == rows * h * 16
            assert {(int(r), int(b), int(lane)) for r, b, lane in cells} == {
                (r, b, lane) for r in range(rows) for b in range(h) for lane in range(16)}
            for block in section.split("for k in range(c):")[1:]:
                assert len(set(re.findall(r"= x\[i, a \+ (\d), k\]", block))) <= 2
                assert len(set(re.findall(r"= yt\[blk, k, (\d+), \d+\]", block))) <= 8


def test_kernel_compile_restores_numba_config(monkeypatch):
    """SLP vectorisation is on while the kernel compiles and numba's setting is back afterwards."""
    import numba
    from reid_train.evaluation import local_distance_kernel as kernel_module
    seen = []
    real_compile = numba.core.dispatcher.Dispatcher.compile

    def spying_compile(self, sig):
        seen.append(numba.config.SLP_VECTORIZE)
        return real_compile(self, sig)
    monkeypatch.setattr(numba.core.dispatcher.Dispatcher, "compile", spying_compile)
    before = numba.config.SLP_VECTORIZE
    kernel_module.build_kernel(2)  # not the per-process cache: the flip runs here
    assert seen and seen[0] == 1 and numba.config.SLP_VECTORIZE == before


def test_bench_local_distance_smoke(capsys):
    """The bench runs on a small case, --breakdown included, and checks ours against float64."""
    from conftest import bench_module
    with bench_module("bench_local_distance") as bench:
        assert bench.main(["--num-query", "6", "--num-gallery", "40", "--parts", "2", "--channels", "8",
                           "--repeats", "1", "--busy", "0", "--check", "3", "--breakdown"]) == 0
    out = capsys.readouterr().out
    assert "ours: squared part distances alone" in out and "float32 BLAS product alone" in out
    errors = [float(line.split("vs float64 ")[1].split()[0]) for line in out.splitlines() if "vs float64" in line]
    assert errors and max(errors) < 1e-5  # ours only: no peer without --alignedreid-src
