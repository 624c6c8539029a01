"""Suite-wide fixtures: the local control plane plugin (one plane per test process, shared by every folder)."""

import os

# Tiny models on a small machine shared by pytest workers and the pods they start: intra-op threads only contend
# (a 2-layer forward takes ~50x longer with 2 OpenMP threads per process than with 1). Set before torch loads, and
# inherited by every process the tests start. Benchmarks (bench/) keep torch's default.
os.environ.setdefault("OMP_NUM_THREADS", "1")

pytest_plugins = ["interp_operator.local.testing"]
