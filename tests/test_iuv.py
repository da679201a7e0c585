"""IUV storage encoding: uint16 codes keep the DSAP cell exactly (priors/iuv.py)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from priors.iuv import decode_uv, encode_uv, pack_iuv, unpack_iuv, uv_cell

POW2_S = [1 << k for k in range(17)]
unit_f32 = st.floats(0.0, 1.0, width=32)


def test_encode_known_values():
    u = np.array([0.0, 0.5, 1.0, 1 / 3, 2**-16, 2**-17, 1 - 2**-17, -0.25, 1.5, np.nan])
    expected = [0, 32768, 65535, 21845, 1, 0, 65535, 0, 65535, 0]
    q = encode_uv(u)
    assert q.dtype == np.uint16
    assert q.tolist() == expected


def test_decode_is_lower_bin_edge():
    q = np.array([0, 1, 32768, 65535], np.uint16)
    d = decode_uv(q)
    assert d.dtype == np.float32
    assert d.tolist() == [0.0, 2**-16, 0.5, 65535 / 65536]
    with pytest.raises(TypeError):
        decode_uv(q.astype(np.int32))


@given(unit_f32)
def test_decode_encode_brackets_value(u):
    d = float(decode_uv(encode_uv(np.float32(u))))
    if u < 1:
        assert d <= u < d + 2**-16
    else:
        assert d == 65535 / 65536


@given(unit_f32, st.sampled_from(POW2_S))
def test_uint16_cell_equals_float_cell_for_power_of_two_S(u, S):
    exact = min(math.floor(u * S), S - 1)  # Python float64 product of a float32 is exact
    q = encode_uv(np.array([u], np.float32))
    assert int(uv_cell(q, S)[0]) == exact
    assert int(uv_cell(np.array([u], np.float32), S)[0]) == exact


@pytest.mark.parametrize("S", [2, 4, 32, 64, 1024])
def test_cells_exact_at_every_cell_boundary(S):
    k = np.arange(S + 1) / S
    u = np.concatenate([k, np.nextafter(k, -1), np.nextafter(k, 2)]).clip(0, 1).astype(np.float32)
    expected = np.minimum(np.floor(u.astype(np.float64) * S), S - 1).astype(int)
    assert np.array_equal(uv_cell(encode_uv(u), S), expected)
    assert np.array_equal(uv_cell(u, S), expected)


def test_uint16_cell_formula_exhaustive_for_S32():
    q = np.arange(65536, dtype=np.uint16)
    cells = uv_cell(q, 32)
    assert np.array_equal(cells, q.astype(np.int64) // 2048)
    assert cells[-1] == 31 and cells.min() == 0


@given(unit_f32, st.integers(1, 1000))
def test_non_power_of_two_S_is_floor_of_decoded_value(u, S):
    q = encode_uv(np.array([u], np.float32))
    cell = int(uv_cell(q, S)[0])
    assert cell == min((int(q[0]) * S) // 65536, S - 1)
    float_cell = int(uv_cell(np.array([u], np.float32), S)[0])
    assert float_cell - 1 <= cell <= float_cell


def test_float_cell_clamps_and_handles_nan():
    u = np.array([-0.5, 0.0, 0.999, 1.0, 1.7, np.nan], np.float32)
    assert uv_cell(u, 4).tolist() == [0, 0, 3, 3, 3, 0]
    assert uv_cell(u.astype(np.float64), 3).tolist() == [0, 0, 2, 2, 2, 0]
    with pytest.raises(ValueError):
        uv_cell(u, 0)
    with pytest.raises(TypeError):
        uv_cell(np.array([1, 2], np.int32), 4)


def test_pack_unpack_round_trip():
    rng = np.random.default_rng(0)
    i = rng.integers(0, 25, size=(3, 5, 4))
    u = rng.random((3, 5, 4)).astype(np.float32)
    v = rng.random((3, 5, 4)).astype(np.float32)
    pi, puv = pack_iuv(i, u, v)
    assert pi.dtype == np.uint8 and puv.dtype == np.uint16 and puv.shape == (3, 2, 5, 4)
    assert np.array_equal(puv[:, 0], encode_uv(u)) and np.array_equal(puv[:, 1], encode_uv(v))
    ri, ru, rv = unpack_iuv(pi, puv)
    assert np.array_equal(ri, i)
    assert np.all((ru <= u) & (u < ru + 2**-16)) and np.all((rv <= v) & (v < rv + 2**-16))
    for S in (8, 32):
        assert np.array_equal(uv_cell(ru, S), uv_cell(u, S))
        assert np.array_equal(uv_cell(puv[:, 1], S), uv_cell(v, S))


def test_pack_rejects_bad_input():
    z = np.zeros((2, 2))
    with pytest.raises(ValueError):
        pack_iuv(np.full((2, 2), 25), z, z)
    with pytest.raises(ValueError):
        pack_iuv(np.zeros((2, 3), int), z, z)
    with pytest.raises(ValueError):
        unpack_iuv(np.zeros((2, 2), np.uint8), np.zeros((3, 2, 2), np.uint16))


@settings(max_examples=50)
@given(st.lists(unit_f32, min_size=1, max_size=20), st.sampled_from([4, 32, 256]))
def test_mirrored_code_mirrors_cell(us, S):
    """65535 - q (used by flip_iuv on uint16 V) lands exactly in cell S - 1 - cell(q)."""
    q = encode_uv(np.array(us, np.float32))
    assert np.array_equal(uv_cell((65535 - q).astype(np.uint16), S), S - 1 - uv_cell(q, S))
