"""FLOP counting with fvcore; provided by the optional natten-flops package."""

try:
    from natten_flops import add_natten_handle, get_flops
except ImportError as exc:
    raise ImportError(
        "natten.flops is provided by the natten-flops package (it also needs fvcore): "
        "pip install natten-flops fvcore (or natten[flops])"
    ) from exc

__all__ = ["add_natten_handle", "get_flops"]
