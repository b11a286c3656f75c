"""Settings out of range are refused by the configs themselves (the API, not only the CLI), as a
ConfigError: a UserError for the CLI's one-line message and a ValueError for API callers."""

import math

import pytest

from diffatr.diffusion_head import HeadConfig, RerankConfig
from diffatr.errors import ConfigError, UserError

BAD_HEAD = {
    "lr": (-1e-4, math.nan),
    "ema": (1.0, -0.1, 1.5, math.nan),
    "warmup": (-0.1, 1.5, math.nan),
    "weight_decay": (-0.2, math.nan),
    "grad_clip": (0.0, -1.0),
    "logit_scale": (0.0, -100.0),
}
BAD_RERANK = {"alpha": (-0.5, math.nan), "eta": (-0.1,), "query_block": (0,), "temperature": (0,)}


@pytest.mark.parametrize("name", list(BAD_HEAD))
def test_head_config_refuses_out_of_range_values(name) -> None:
    for value in BAD_HEAD[name]:
        with pytest.raises(ConfigError) as e:
            HeadConfig(**{name: value}).check()
        assert isinstance(e.value, UserError) and isinstance(e.value, ValueError)
    HeadConfig().check()
    HeadConfig(ema=0.0, warmup=0.0, weight_decay=0.0).check()  # the edges that are allowed
    HeadConfig(warmup=1.0).check()


@pytest.mark.parametrize("name", list(BAD_RERANK))
def test_rerank_config_refuses_out_of_range_values(name) -> None:
    for value in BAD_RERANK[name]:
        with pytest.raises(ValueError, match=name.replace("_", ".")):
            RerankConfig(**{name: value}).check()
    RerankConfig().check()
    RerankConfig(alpha=0.0, topk=None).check()
