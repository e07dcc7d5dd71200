"""The soak benchmark's arithmetic: the RSS slope and the latency percentiles it prints."""

from __future__ import annotations

import math

from benchmarks.bench_soak import percentile, slope_mib_per_min


def test_slope_is_mib_per_minute_by_least_squares() -> None:
    rising = [(t, 400.0 + 0.5 * t) for t in range(0, 121, 10)]  # 0.5 MiB/s
    assert math.isclose(slope_mib_per_min(rising), 30.0)
    flat_with_noise = [(0.0, 500.0), (10.0, 510.0), (20.0, 490.0), (30.0, 500.0)]
    assert math.isclose(slope_mib_per_min(flat_with_noise), -12.0)
    assert math.isnan(slope_mib_per_min([(0.0, 1.0)]))


def test_percentiles_take_the_value_at_the_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 51.0 and percentile(values, 0.95) == 96.0
    assert percentile([3.0], 0.95) == 3.0 and math.isnan(percentile([], 0.5))
