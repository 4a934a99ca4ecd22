"""natten-legacy: pure-PyTorch neighborhood attention.

* :mod:`natten_legacy.reference` — the reference oracle (docs/semantics.md literally: each query attends
  its own gathered neighborhood slots, so NaN/inf stay in their dependency sets).
* :mod:`natten_legacy.testing` — the comparison helper every test and benchmark uses.
* ``LegacyNeighborhoodAttention{1,2,3}D`` — gather-based Modules, state_dict-compatible with
  ``natten.NeighborhoodAttention{1,2,3}D``.
"""

from natten_legacy.modules import (
    LegacyNeighborhoodAttention,
    LegacyNeighborhoodAttention1D,
    LegacyNeighborhoodAttention2D,
    LegacyNeighborhoodAttention3D,
)
from natten_legacy.reference import na_av_reference, na_qk_reference, na_reference, neighborhood_slots

__version__ = "1.0.0"

__all__ = [
    "LegacyNeighborhoodAttention",
    "LegacyNeighborhoodAttention1D",
    "LegacyNeighborhoodAttention2D",
    "LegacyNeighborhoodAttention3D",
    "__version__",
    "na_av_reference",
    "na_qk_reference",
    "na_reference",
    "neighborhood_slots",
]
