"""A clock of another machine, for a gateway process started with this folder first on its PYTHONPATH
(`skewed_clock_env`): Python imports this module before any other, so `time.time` (the limiter's clock, the
leases' expiry) runs `SKEWED_CLOCK_SECONDS` ahead of the real one (behind when negative)."""

import os
import time

_OFFSET = float(os.environ.get("SKEWED_CLOCK_SECONDS", "0"))

if _OFFSET:
    _real_time = time.time

    def _skewed_time() -> float:
        return _real_time() + _OFFSET

    time.time = _skewed_time
