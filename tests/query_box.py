"""Queries as a box of the key grid (``query_offset``; natten.distributed's shard inside its halo), shared
by the CPU tests, the Triton interpreter tests and the GPU suite: the box's output, LSE and gradients
against the float64 reference on the whole grid, whose upstream gradients are zero outside the box
(so its key, value, bias and additional-KV gradients are the box's queries' share alone)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from natten_legacy.testing import assert_close_to_reference

from cases import Case
from gpu.naref import make_inputs, reference, upstreams
from helpers import NAMES

F32, F16 = torch.float32, torch.float16


@dataclass(frozen=True)
class BoxCase:
    case: Case  # the key grid (case.spatial) and everything else
    offset: tuple[int, ...]
    extent: tuple[int, ...]

    @property
    def id(self) -> str:
        return f"{self.case.id}-at{'x'.join(map(str, self.offset))}-box{'x'.join(map(str, self.extent))}"

    @property
    def box(self) -> tuple:
        return (slice(None), *(slice(o, o + n) for o, n in zip(self.offset, self.extent)))


# Boxes at borders and inside, thinner than a window, with dilation groups starting mid-box, strides
# whose blocks straddle the box's edges, causal axes, bias, additional KV and GQA.
BOX_CASES = [
    BoxCase(Case((20,), (5,), batch=1, dtype=F32), (6,), (7,)),
    BoxCase(Case((20,), (5,), (2,), batch=1, dtype=F32), (5,), (8,)),
    BoxCase(Case((21,), (4,), (1,), (2,), (True,), batch=1, heads=2, kv_heads=1, dtype=F32), (3,), (11,)),
    BoxCase(Case((23,), (3,), (3,), (2,), batch=1, rpb=True, dtype=F32), (7,), (2,)),
    BoxCase(Case((9, 14), (3, 5), (2, 1), batch=1, rpb=True, additional=2, dtype=F32), (2, 3), (5, 7)),
    BoxCase(
        Case((9, 12), (4, 3), (1, 2), (2, 3), (True, False), batch=1, heads=4, kv_heads=2, dtype=F16), (1, 5), (6, 4)
    ),
    BoxCase(
        Case((5, 7, 9), (3, 2, 3), (1, 2, 1), (1, 1, 3), (True, False, True), batch=1, dtype=F32), (1, 2, 3), (3, 4, 5)
    ),
    BoxCase(Case((8, 10), (3, 3), batch=1, dtype=F32), (0, 0), (8, 10)),  # the whole grid
]


def launcher_runner(fwd_config=(), bwd_config=()):
    """Through the Triton launchers: ``(out, lse, grads)`` of the box (``grads["q"]`` the box's)."""

    def run(bc: BoxCase, t: dict, grad_out, grad_lse):
        from natten_kernels.triton.launch_backward import na_fused_backward
        from natten_kernels.triton.launch_forward import na_fused_forward

        c = bc.case
        q = t["q"][bc.box].contiguous()
        args = [q, *(t.get(n) for n in NAMES[1:])]
        geo = (list(c.kernel_size), list(c.dilation), list(c.stride), list(c.is_causal), c.head_dim**-0.5)
        out, lse = na_fused_forward(*args, *geo, list(fwd_config), list(bc.offset))
        res = na_fused_backward(
            grad_out, q, t["k"], t["v"], out, lse, grad_lse, *args[3:], *geo, list(bwd_config), list(bc.offset)
        )
        return out, lse, {n: g for n, g in zip(NAMES, res) if n in t}

    return run


def api_runner(bc: BoxCase, t: dict, grad_out, grad_lse):
    """Through natten.functional (the dispatched backend's query box, or the padded fallback)."""
    from natten.functional.fused import _na

    c = bc.case
    x = {n: v.detach().clone().requires_grad_(True) for n, v in t.items()}
    q = x["q"][bc.box].detach().requires_grad_(True)
    out, lse = _na(
        c.rank, q, x["k"], x["v"], c.kernel_size, c.dilation, c.is_causal, x.get("rpb"), None,
        x.get("additional_keys"), x.get("additional_values"), c.stride, True, bc.offset,
    )  # fmt: skip
    leaves = [q, *(x[n] for n in x if n != "q")]
    grads = torch.autograd.grad((out, lse), leaves, (grad_out, grad_lse))
    return out.detach(), lse.detach(), dict(zip(["q", *(n for n in x if n != "q")], grads))


def check_box(bc: BoxCase, device: str, runner, seed: int = 0) -> None:
    c, box = bc.case, bc.box
    t = make_inputs(c, device, c.dtype, seed)
    up, up_lse = upstreams(c, t, device, c.dtype, seed)
    outside = torch.ones(up_lse.shape, dtype=torch.bool, device=device)
    outside[box] = False
    up, up_lse = up.masked_fill(outside[..., None], 0), up_lse.masked_fill(outside, 0)
    ref_out, ref_lse, ref_g = reference(c, t, up, up_lse)
    eager_out, eager_lse, eager_g = reference(c, t, up, up_lse, dtype=c.dtype)
    out, lse, grads = runner(bc, t, up[box].contiguous(), up_lse[box].contiguous())
    assert out.shape == ref_out[box].shape and lse.shape == ref_lse[box].shape
    assert_close_to_reference(out, ref_out[box], eager=eager_out[box], name="out")
    assert_close_to_reference(lse, ref_lse[box], eager=eager_lse[box].float(), name="lse")
    for name, rg in ref_g.items():
        got, eager = grads[name], eager_g[name]
        if name == "q":
            rg, eager = rg[box], eager[box]
        assert got.shape == rg.shape, name
        assert_close_to_reference(got, rg, eager=eager, name=f"d{name}")


def check_piece_after_box(device: str, config=(16, 16, 4, 1)) -> None:
    """A box whose edges cut stride blocks runs in pieces that write views of its output; one piece's
    queries then launched as a box of their own (the same q view, offset and key grid) write a fresh
    output. The forward's cached launch plans must tell the two apart: they once shared a key, and the
    second call wrote with the first's output strides (out of bounds on the GPU)."""
    from natten_kernels.triton.launch_forward import na_fused_forward

    c = Case((6, 12), (3, 5), (1, 1), (1, 4), (False, False), batch=1, dtype=F32)
    t = make_inputs(c, device, c.dtype, 0)
    geo = (list(c.kernel_size), list(c.dilation), list(c.stride), list(c.is_causal), c.head_dim**-0.5, list(config))
    q = t["q"][:, :, 2:10].contiguous()  # columns 2-9: stride blocks cut at 4 and 8, three pieces
    out, lse = na_fused_forward(q, t["k"], t["v"], None, None, None, *geo, [0, 2])
    piece = q[:, :, 2:6]  # columns 4-7, a view with the box's strides, as the middle piece's launch saw it
    out_p, lse_p = na_fused_forward(piece, t["k"], t["v"], None, None, None, *geo, [0, 4])
    assert torch.equal(out_p, out[:, :, 2:6]) and torch.equal(lse_p, lse[:, :, 2:6])
