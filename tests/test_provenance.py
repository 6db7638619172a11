"""utils/provenance.py: the machine facts of result files, under the keys each file uses."""
from __future__ import annotations

import os
import platform

import pytest
import torch

from vireid.errors import ConfigError
from vireid.utils.provenance import machine_info


def test_facts_under_the_keys_asked_in_their_order() -> None:
    info = machine_info("platform", "processor", "threads=torch_threads", "torch")
    assert list(info) == ["platform", "processor", "threads", "torch"]
    assert info == {"platform": platform.platform(), "processor": platform.processor(),
                    "threads": torch.get_num_threads(), "torch": str(torch.__version__)}
    info = machine_info("python", "cpu_count", "cuda=cuda_available", "gpu=cuda_device")
    assert info == {"python": platform.python_version(), "cpu_count": os.cpu_count(),
                    "cuda": torch.cuda.is_available(),
                    "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def test_every_fact_without_arguments_and_an_unknown_one_refused() -> None:
    everything = machine_info()
    assert {"platform", "processor", "python", "torch", "cpu_count", "torch_threads",
            "cuda_available", "cuda_device", "loadavg"} == set(everything)
    assert len(everything["loadavg"]) == 3
    with pytest.raises(ConfigError, match="expected one of platform, .* found 'ram'"):
        machine_info("memory=ram")
