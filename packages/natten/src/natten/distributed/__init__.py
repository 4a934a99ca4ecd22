"""Neighborhood attention over a token grid sharded across the ranks of a ``torch.distributed``
process group (docs/distributed.md): exact ``na1d/na2d/na3d`` by halo exchange or head parallelism,
Modules whose projections stay local, and per-exchange byte counts."""

from natten.distributed.accounting import Exchange, collect, last_exchange, predicted
from natten.distributed.functional import choose_method, na1d, na2d, na3d
from natten.distributed.modules import (
    DistributedNeighborhoodAttention1D,
    DistributedNeighborhoodAttention2D,
    DistributedNeighborhoodAttention3D,
)
from natten.distributed.plan import AxisPlan, Layout, RankPlan, axis_plan, rank_plan

__all__ = [
    "na1d",
    "na2d",
    "na3d",
    "choose_method",
    "DistributedNeighborhoodAttention1D",
    "DistributedNeighborhoodAttention2D",
    "DistributedNeighborhoodAttention3D",
    "Exchange",
    "collect",
    "last_exchange",
    "predicted",
    "AxisPlan",
    "Layout",
    "RankPlan",
    "axis_plan",
    "rank_plan",
]
