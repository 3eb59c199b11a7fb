"""Root pytest configuration, loaded before any test module or notebook kernel starts."""

import os

# Idle OpenMP threads spin by default; with another busy process on a 2-core machine that made
# each training step up to 10x slower. PASSIVE lets them sleep; results are identical. Kernels
# started by nbval inherit this environment.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
