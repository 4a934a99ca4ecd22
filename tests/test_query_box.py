"""Queries as a box of the key grid (``query_offset``, what natten.distributed runs per rank) on the CPU:
through natten.functional (the CPU kernels have no query box, so the query is zero-padded to the grid),
through a backend that declares the "query_box" feature (the offset reaches its kernels, forward and
backward), the checks of the offset, and the FLOP count of a box. The Triton kernels' own box path
runs in test_triton_interpret.py and the GPU suite."""

from __future__ import annotations

import pytest
import torch
from natten_kernels.backends import BACKENDS, Backend
from natten_kernels.ops.flops import neighborhood_pairs
from natten_kernels.ops.spec import bind, macs
from natten_kernels.window import window

from cases import Case
from natten.functional.fused import _na
from query_box import BOX_CASES, BoxCase, api_runner, check_box


@pytest.mark.parametrize("bc", BOX_CASES, ids=lambda bc: bc.id)
def test_query_box_through_the_api_matches_reference(bc):
    check_box(bc, "cpu", api_runner)


# A CPU backend with the "query_box" feature whose kernels pad the query to the grid themselves: it shows
# that natten passes query_offset to a backend's forward and backward ops when the backend declares it.
BOX_CALLS = []


def _pad(x, offset, grid, trailing: int):
    pad = []
    for o, n, m in reversed(list(zip(offset, x.shape[1 : 1 + len(grid)], grid))):
        pad += [o, m - o - n]
    return torch.nn.functional.pad(x, [0, 0] * trailing + pad)


def _cut(x, offset, extent):
    return x[(slice(None), *(slice(o, o + n) for o, n in zip(offset, extent)))]


def box_forward(*args):
    a = bind("na_fused_forward", args)
    BOX_CALLS.append(("forward", tuple(a.query_offset)))
    grid, extent, offset = a.k.shape[1:-2], a.q.shape[1:-2], a.query_offset
    rest = (a.rpb, a.additional_keys, a.additional_values, a.kernel_size, a.dilation, a.stride, a.is_causal)
    out, lse = torch.ops.natten.na_fused_forward(_pad(a.q, offset, grid, 2), a.k, a.v, *rest, a.scale, a.config)
    return _cut(out, offset, extent).contiguous(), _cut(lse, offset, extent).contiguous()


def box_backward(*args):
    a = bind("na_fused_backward", args)
    BOX_CALLS.append(("backward", tuple(a.query_offset)))
    grid, extent, offset = a.k.shape[1:-2], a.q.shape[1:-2], a.query_offset
    grad_out, q, out = (_pad(x, offset, grid, 2) for x in (a.grad_out, a.q, a.out))
    lse = _pad(a.lse, offset, grid, 1)
    grad_lse = None if a.grad_lse is None else _pad(a.grad_lse, offset, grid, 1)
    rest = (a.rpb, a.additional_keys, a.additional_values, a.kernel_size, a.dilation, a.stride, a.is_causal)
    dq, *grads = torch.ops.natten.na_fused_backward(grad_out, q, a.k, a.v, out, lse, grad_lse, *rest, a.scale, a.config)
    return (_cut(dq, offset, extent).contiguous(), *grads)


BOX = Backend(
    name="boxed",
    families=frozenset({"fused"}),
    devices=frozenset({"cpu"}),
    dtypes=frozenset({torch.float32, torch.float64}),
    features=frozenset({"backward", "dilation", "causal", "stride", "rpb", "query_box"}),
    op_prefix="boxed_",
    kernels={"na_fused_forward": f"{__name__}:box_forward", "na_fused_backward": f"{__name__}:box_backward"},
)


@pytest.fixture
def boxed_backend():
    from natten_kernels.ops import register

    import natten

    register.install([BOX])
    BACKENDS.insert(0, BOX)
    BOX_CALLS.clear()
    yield BOX
    BACKENDS.remove(BOX)
    natten.use_backend(None)


def test_a_query_box_backend_gets_the_offset(boxed_backend):
    bc = BoxCase(Case((9, 14), (3, 5), (2, 1), (1, 2), (True, False), rpb=False, batch=1), (2, 3), (5, 7))
    check_box(bc, "cpu", api_runner)
    assert BOX_CALLS == [("forward", (2, 3)), ("backward", (2, 3))]
    BOX_CALLS.clear()
    q = torch.randn(1, 9, 14, 2, 8, dtype=torch.float64)
    out = _na(2, q, q, q, (3, 5), 1, False, None, 0.3, None, None, 1, False)  # no box: the op's default []
    assert BOX_CALLS == [("forward", ())]
    ref = torch.ops.natten.na_fused_forward(q, q, q, None, None, None, [3, 5], [1, 1], [1, 1], [False] * 2, 0.3)[0]
    torch.testing.assert_close(out, ref, rtol=0, atol=0)


def test_query_offset_is_checked():
    k = torch.randn(1, 12, 10, 2, 8)
    q = torch.randn(1, 5, 6, 2, 8)
    run = lambda q, offset, ks=(3, 3): _na(2, q, k, k, ks, 1, False, None, None, None, None, 1, False, offset)
    with pytest.raises(ValueError, match=r"query_offset \(8, 2\) must place the query's spatial box \(5, 6\) inside"):
        run(q, (8, 2))
    with pytest.raises(ValueError, match=r"query_offset \(-1, 0\)"):
        run(q, (-1, 0))
    with pytest.raises(ValueError, match=r"query_offset \(1,\)"):
        run(q, (1,))
    with pytest.raises(ValueError, match=r"kernel_size=13 .* in key of shape \(1, 12, 10, 2, 8\)"):
        run(q, (0, 0), (13, 3))
    with pytest.raises(ValueError, match="q and k must share their spatial axes without a query_offset"):
        from natten_kernels.triton.launch_forward import na_fused_forward

        na_fused_forward(q, k, k, None, None, None, [3, 3], [1, 1], [1, 1], [False, False], 1.0)
    with pytest.raises(RuntimeError, match="the CPU kernels take no query_offset"):
        torch.ops.natten.na_fused_forward(
            q, k, k, None, None, None, [3, 3], [1, 1], [1, 1], [False] * 2, 1.0, [], [0, 0]
        )


@pytest.mark.parametrize("causal", [False, True])
def test_box_flops_count_the_box_queries(causal):
    """A box's attended pairs: the sum of its queries' window lengths, counted one by one."""
    grid, ks, dl, st, offset, extent = (23, 11), (5, 3), (2, 1), (2, 1), (4, 3), (9, 6)

    def axis(n, k, d, s, o, e):
        return sum((lambda w: w[1] - w[0])(window(i // d, -(-(n - i % d) // d), k, s, causal)) for i in range(o, o + e))

    brute = 1
    for n, k, d, s, o, e in zip(grid, ks, dl, st, offset, extent):
        brute *= axis(n, k, d, s, o, e)
    got = neighborhood_pairs(grid, ks, dl, st, (causal,) * 2, (offset, extent))
    assert got == brute
    q = torch.empty(2, *extent, 4, 16, device="meta")
    k = torch.empty(2, *grid, 4, 16, device="meta")
    args = (q, k, k, None, None, None, list(ks), list(dl), list(st), [causal] * 2, 1.0)
    assert macs("na_fused_forward", *args, [], list(offset)) == 2 * 4 * brute * 32


def test_query_pieces_cut_only_partial_stride_blocks():
    """The Triton forward runs a box in pieces where its edges cut a stride block (each piece's tiles
    then meet one block's window at a time); a box on block edges, or at the grid's end, stays whole."""
    from natten_kernels.triton.layout import query_pieces

    def offsets(extent, offset, grid, dilation, stride):
        return [o for _, o in query_pieces(extent, offset, grid, dilation, stride)]

    assert offsets((15,), [15], (30,), [1], [16]) == [[15], [16]]  # frame 15 ends block [0, 16)
    assert offsets((15,), [0], (30,), [1], [16]) == [[0]]  # one partial block at the grid's start
    assert offsets((14,), [16], (30,), [1], [16]) == [[16]]  # ends at the grid's end
    assert offsets((10,), [5], (20,), [1], [8]) == [[5], [8]]
    assert offsets((9,), [7], (20,), [3], [2]) == [[7]]  # dilation: blocks interleave, no cut
    assert offsets((4, 20), [2, 20], (9, 44), [1, 1], [1, 8]) == [[2, 20], [2, 24]]
    pieces = query_pieces((30, 24, 20), [0, 0, 20], (30, 48, 60), [1, 1, 1], [16, 8, 8])  # S6-s, 4 shards of 20
    assert [o for _, o in pieces] == [[0, 0, 20], [0, 0, 24]]
    assert [p[3] for p, _ in pieces] == [slice(0, 4), slice(4, 20)]


def test_remainder_cuts_split_a_box_where_its_tiles_run_short():
    """With the default tiles, a piece is cut where whole tiles end when the model (pairs computed /
    measured rate) saves 2%: S6-s's 7-frame shard takes 1-frame tiles across two stride blocks (0.90
    of its pairs useful), cut 6 + 1 the six take 2-frame tiles that fit (1.00). An 8-frame shard, whose
    tiles fit, stays whole; the pieces tile the box exactly."""
    from functools import partial

    from natten_kernels.triton.layout import query_pieces
    from natten_kernels.triton.tiling import remainder_cuts

    s6s = ((30, 48, 80), (18, 24, 24), (1, 1, 1), (16, 8, 8), (False, False, False))
    assert remainder_cuts(128, *s6s, ((16, 0, 0), (7, 48, 80))) == [
        ((16, 0, 0), (6, 48, 80)),
        ((22, 0, 0), (1, 48, 80)),
    ]
    assert remainder_cuts(128, *s6s, ((0, 0, 0), (8, 48, 80))) == [((0, 0, 0), (8, 48, 80))]
    refine = partial(remainder_cuts, 128, *s6s)
    extent, at = (11, 48, 20), [12, 0, 20]  # cut at blocks 16 and 24, then frames 16-22 again
    pieces = query_pieces(extent, at, s6s[0], [1, 1, 1], [16, 8, 8], refine)
    assert [o for _, o in pieces] == [[12, 0, 20], [12, 0, 24], [16, 0, 20], [20, 0, 20], [16, 0, 24], [22, 0, 24]]
    covered = torch.zeros(extent, dtype=torch.int)
    for index, offset in pieces:
        covered[index[1:]] += 1
        assert [s.start + a for s, a in zip(index[1:], at)] == offset
    assert bool((covered == 1).all())
