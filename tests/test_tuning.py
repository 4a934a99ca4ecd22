"""Flags that choose kernel configurations: autotuner, KV parallelism, memory preference."""

import threading

import pytest
import torch
from natten_kernels.backends import TuningInfo
from natten_kernels.backends.cpu import CPU
from natten_legacy.reference import na_reference

import natten
import natten.functional as F
from natten import autotuner
from natten.functional.fused import _choose, _tuning_info
from natten.functional.validation import check_fused, normalize_params


@pytest.fixture(autouse=True)
def _empty_cache():
    autotuner.clear_cache()
    yield
    autotuner.clear_cache()


def _inputs(b=1, s=(11, 13), h=2, d=8):
    return [torch.randn(b, *s, h, d, dtype=torch.float64, requires_grad=True) for _ in range(3)]


def _configs_for(q, k, v, kernel_size=3):
    params = normalize_params(2, kernel_size)
    shapes = check_fused(q, k, v, params, None, None, None, None)
    tensors = (q, k, v, None, None, None)
    return _choose([CPU], _tuning_info(q, shapes), tensors, (*params.as_op_args(), 0.5))[1:]


def test_default_configs_let_the_kernel_choose():
    fwd, bwd = _configs_for(*_inputs())
    assert fwd == [] and bwd == ((),)


def test_kv_parallelism_and_memory_preference_choose_backward_splits():
    info = TuningInfo(batch=1, heads=2, kv_heads=2, tokens=143, head_dim=8)
    assert CPU.backward_configs(info)[0] == []  # kernel's choice
    natten.set_memory_usage_preference("strict")
    assert _configs_for(*_inputs())[1] == ((1,),)  # strict: one accumulator
    natten.set_memory_usage_preference("default")
    natten.use_kv_parallelism_in_fused_na(True)
    (splits,) = _configs_for(*_inputs())[1][0]
    assert splits >= 2
    natten.set_memory_usage_preference("strict")
    assert _configs_for(*_inputs())[1] == ((2,),)
    natten.set_memory_usage_preference("unrestricted")
    (more,) = _configs_for(*_inputs())[1][0]
    assert more >= splits


@pytest.mark.parametrize("splits", [[1], [2], [5]])
def test_backward_splits_agree_with_reference(splits):
    q, k, v = _inputs()
    out, lse = torch.ops.natten.na_fused_forward(q, k, v, None, None, None, [3, 4], [1, 2], [1, 1], [False, True], 0.5)
    g = torch.randn_like(out)
    dq, dk, dv, *_ = torch.ops.natten.na_fused_backward(
        g, q, k, v, out, lse, None, None, None, None, [3, 4], [1, 2], [1, 1], [False, True], 0.5, splits
    )
    ref = na_reference(q, k, v, (3, 4), (1, 2), 1, (False, True), scale=0.5)
    rq, rk, rv = torch.autograd.grad(ref, (q, k, v), g)
    for a, b in ((dq, rq), (dk, rk), (dv, rv)):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("query_block", [[1], [7], [64]])
def test_forward_query_blocks_agree(query_block):
    q, k, v = _inputs()
    out, _ = torch.ops.natten.na_fused_forward(
        q, k, v, None, None, None, [5, 3], [2, 1], [1, 1], [False] * 2, 1.0, query_block
    )
    torch.testing.assert_close(out, na_reference(q, k, v, (5, 3), (2, 1), scale=1.0))


def test_kv_parallel_module_training_matches_default():
    torch.manual_seed(0)
    m = natten.NeighborhoodAttention2D(dim=16, num_heads=2, kernel_size=5).double()
    x = torch.randn(1, 12, 12, 16, dtype=torch.float64, requires_grad=True)
    (g0,) = torch.autograd.grad(m(x).sum(), x)
    natten.use_kv_parallelism_in_fused_na(True)
    (g1,) = torch.autograd.grad(m(x).sum(), x)
    torch.testing.assert_close(g0, g1)


def test_autotuner_tunes_once_per_problem_and_stays_correct(monkeypatch):
    timed = []
    real = autotuner._time
    monkeypatch.setattr(autotuner, "_time", lambda run, *a: timed.append(1) or real(run, *a))
    natten.use_autotuner(
        forward_pass=True,
        backward_pass=True,
        warmup_steps_forward=1,
        warmup_steps_backward=1,
        steps_forward=1,
        steps_backward=1,
    )
    q, k, v = _inputs()
    for _ in range(2):
        out = F.na2d(q, k, v, 3, (1, 2))
        grads = torch.autograd.grad(out.sum(), (q, k, v))
    ref = na_reference(q, k, v, 3, (1, 2))
    torch.testing.assert_close(out, ref)
    for a, b in zip(grads, torch.autograd.grad(ref.sum(), (q, k, v))):
        torch.testing.assert_close(a, b)
    cache = autotuner.cached_configs()
    kinds = sorted(key[0] for key in cache)
    assert kinds == ["backward", "forward"]
    fwd_key = next(key for key in cache if key[0] == "forward")
    backend, config = cache[fwd_key]  # forward entries: the (backend, config) pair
    assert backend is CPU and config in CPU.forward_configs(None)
    n_candidates = len(CPU.forward_configs(None)) + len(CPU.backward_configs(TuningInfo(1, 2, 2, 143, 8)))
    assert len(timed) == n_candidates  # the second call was served from the cache


def test_autotuner_is_thread_safe():
    calls = []
    lock = threading.Lock()

    def run(config):
        with lock:
            calls.append(tuple(config))

    threads = [
        threading.Thread(target=autotuner.tune, args=("key", [[1], [2]], run, torch.device("cpu"), 0, 1))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(calls) == [(1,), (2,)]  # each candidate timed once, by one thread
    assert autotuner.cached_configs()["key"] in ([1], [2])


def test_autotuner_does_not_key_on_the_scale_value(monkeypatch):
    """One shape called with 300 scales tunes once (the value does not change the kernels' speed);
    only the sign of the scale is part of the key (a Triton path depends on scale <= 0)."""
    timed = []
    real = autotuner._time
    monkeypatch.setattr(autotuner, "_time", lambda run, *a: timed.append(1) or real(run, *a))
    natten.use_autotuner(forward_pass=True, warmup_steps_forward=1, steps_forward=1)
    q, k, v = _inputs()
    with torch.no_grad():
        for i in range(300):
            F.na2d(q, k, v, 3, scale=0.01 * (i + 1))
    assert len(autotuner.cached_configs()) == 1
    assert len(timed) == len(CPU.forward_configs(None))
    with torch.no_grad():
        F.na2d(q, k, v, 3, scale=-1.0)
    assert len(autotuner.cached_configs()) == 2


def test_autotuner_keys_on_layout_and_candidates(monkeypatch):
    """Strides (a permuted view costs copies) and the candidate set (KV parallelism, memory preference)
    are part of the key: a config tuned under one setting is never reused under another."""
    natten.use_autotuner(forward_pass=True, backward_pass=True, warmup_steps_forward=1, steps_forward=1)
    q, k, v = _inputs()
    with torch.no_grad():
        F.na2d(q, k, v, 3)
        F.na2d(q.transpose(1, 2).contiguous().transpose(1, 2), k, v, 3)
    assert len(autotuner.cached_configs()) == 2
    for kv_parallel in (False, True):
        natten.use_kv_parallelism_in_fused_na(kv_parallel)
        torch.autograd.grad(F.na2d(q, k, v, 3).sum(), q)
    backward = [key for key in autotuner.cached_configs() if key[0] == "backward"]
    assert len(backward) == 2


def test_autotuner_cache_is_a_bounded_lru(monkeypatch):
    monkeypatch.setattr(autotuner, "MAX_ENTRIES", 4)
    device = torch.device("cpu")
    for i in range(6):
        autotuner.tune(("p", i), [[i]], lambda c: None, device, 0, 1)
    assert list(autotuner.cached_configs()) == [("p", 2), ("p", 3), ("p", 4), ("p", 5)]
    autotuner.tune(("p", 2), [[2]], lambda c: None, device, 0, 1)  # a hit makes it the most recent
    autotuner.tune(("p", 6), [[6]], lambda c: None, device, 0, 1)
    assert list(autotuner.cached_configs()) == [("p", 4), ("p", 5), ("p", 2), ("p", 6)]
    assert autotuner.MAX_ENTRIES == 4 and len(autotuner.cached_configs()) <= autotuner.MAX_ENTRIES


def test_autotuner_default_bound():
    assert 100 <= autotuner.MAX_ENTRIES <= 1000


def test_autotuner_skips_candidates_that_fail():
    """A candidate that cannot run the problem (a kernel that fails to compile, say) is skipped; when
    every candidate fails, the first error surfaces."""

    def run(config):
        if config == [1]:
            raise RuntimeError("out of resource")

    assert autotuner.tune("k1", [[1], [2]], run, torch.device("cpu"), 0, 1) == [2]
    with pytest.raises(RuntimeError, match="out of resource"):
        autotuner.tune("k2", [[1], [1]], run, torch.device("cpu"), 0, 1)
