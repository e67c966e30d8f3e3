"""Options of bottleneck adapters."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from peftrun.methods.options import MethodOptions


class BottleneckAdapterOptions(MethodOptions):
    """Bottleneck adapters: Lin et al. 2020 (`lin`, one per block) or Houlsby et al. 2019 (two)."""

    kind: Literal["adapter"] = "adapter"
    layout: Literal["lin", "houlsby"] = Field(
        "lin",
        description="lin: one adapter (LayerNorm inside) on each block's output (the paper); "
        "houlsby: one on the attention and one on the FFN sublayer output",
    )
    bottleneck: int | None = Field(None, gt=0, description="bottleneck size b (set this or target_fraction)")
    target_fraction: float | None = Field(
        None, gt=0, lt=1, description="choose b so the adapters are about this fraction of the base model"
    )
    nonlinearity: Literal["relu", "gelu"] = Field("relu", description="between down and up projections")

    @model_validator(mode="after")
    def _one_size(self) -> BottleneckAdapterOptions:
        if (self.bottleneck is None) == (self.target_fraction is None):
            raise ValueError(
                "set exactly one of method.bottleneck and method.target_fraction "
                "(e.g. bottleneck: 6, or target_fraction: 0.001)"
            )
        return self
