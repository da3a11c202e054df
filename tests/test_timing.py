"""measure(): samples, their median, spread and confidence interval."""

import numpy as np
import pytest

from torch_tier.timing import Measurement, measure
from torch_tier.policy import Policy


def test_median_interval_covers_as_promised():
    """Over many samples of 15 from a skewed distribution, the 95% interval holds
    the true median (ln 2 for Exp(1)) about 95% of the time (96.5% exactly, by its order statistics)."""
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(2000):
        low, high = Measurement(tuple(rng.exponential(size=15))).interval()
        hits += low <= np.log(2) <= high
    assert 0.95 <= hits / 2000 <= 0.98


def test_interval_of_few_samples_is_their_range():
    assert Measurement((3.0, 1.0, 2.0)).interval() == (1.0, 3.0)
    assert Measurement((2.0,)).interval() == (2.0, 2.0)


def test_measure_times_each_repeat(cnn):
    model, x = cnn
    result = measure(model, x, Policy.uniform(model), pm="sim", repeats=4, warmup=1)
    assert len(result.samples) == 4 and all(s > 0 for s in result.samples)
    assert result.interval()[0] <= result.median <= result.interval()[1]
    with pytest.raises(ValueError, match="repeats"):
        measure(model, x, Policy.uniform(model), pm="sim", repeats=0)
