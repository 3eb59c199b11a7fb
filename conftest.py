"""Root pytest configuration, loaded before any test module or notebook kernel starts.

`--cpu-profile=other` runs the tests as on a CPU without bfloat16 or AVX-512 (README, "Run the
whole test suite"): it sets four environment variables before anything imports torch, and nbval's
kernels, fresh processes, inherit them.
"""

import os

import pytest

# Idle OpenMP threads spin by default; with another busy process on a 2-core machine that made
# each training step up to 10x slower. PASSIVE lets them sleep; results are identical. Kernels
# started by nbval inherit this environment.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

CPU_PROFILES = {
    "native": {},                                 # this machine as it is
    "other": {                                    # a CPU without bfloat16 or AVX-512
        "CLIPCOURSE_PRECISION": "float32",        # precision="auto" trains in float32 (clipcourse.train)
        "ATEN_CPU_CAPABILITY": "default",         # PyTorch's own kernels without AVX2/AVX-512
        "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",      # MKL's matrix products without AVX
        "ONEDNN_MAX_CPU_ISA": "SSE41",            # oneDNN's convolutions without AVX
    },
}


def pytest_addoption(parser):
    parser.addoption("--cpu-profile", choices=sorted(CPU_PROFILES), default="native",
                     help="native (default): this machine as it is; other: as a CPU without bfloat16 or "
                          "AVX-512 (" + " ".join(f"{k}={v}" for k, v in CPU_PROFILES["other"].items()) + ")")


def pytest_configure(config):
    os.environ.update(CPU_PROFILES[config.getoption("cpu_profile")])


def pytest_report_header(config):
    import torch                                  # after pytest_configure: the profile is in effect

    from clipcourse import train

    profile = config.getoption("cpu_profile")
    capability = torch.backends.cpu.get_cpu_capability()
    device = train.resolve_device()
    precision = train.resolve_precision("auto", device)
    if profile == "other" and capability != "DEFAULT":
        raise pytest.UsageError(f"--cpu-profile=other: torch still reports the CPU capability {capability}, "
                                "not DEFAULT; the profile would test nothing")
    settings = {k: os.environ[k] for k in CPU_PROFILES["other"] if k in os.environ}
    return (f"cpu profile: {profile} (torch CPU capability {capability}; precision='auto' trains in "
            f"{str(precision).removeprefix('torch.')} on {device.type}"
            + (f"; {' '.join(f'{k}={v}' for k, v in settings.items())}" if settings else "") + ")")
