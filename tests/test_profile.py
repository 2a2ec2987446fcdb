"""FLOPs, parameters, storage, time and memory of pruned networks."""

import copy
import math
import os
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

from sparse_survey import masks, models, profile, pruners

SURVEY = pruners.SURVEY_COMPRESSIONS


def test_vgg16_dense_forward_is_313_2_million_macs():
    model = models.build("vgg16")
    counts = profile.flop_counts(model, (3, 32, 32))
    assert sum(counts["macs"].values()) == 313_201_664  # 313.2 M multiply-accumulates
    assert counts["matrix_flops"] == 2 * 313_201_664  # torch's counter: 2 FLOPs per MAC
    assert profile.flops(model, (3, 32, 32))["macs_dense"] == 313_201_664


def test_flops_of_a_tiny_net_by_hand():
    net = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.Flatten(), nn.Linear(4 * 5 * 5, 3, bias=False))
    got = profile.flops(net, (2, 5, 5))
    conv_macs, linear_macs = 4 * 2 * 9 * 25, 100 * 3
    other = 4 * 25 + 2 * 4 * 25  # conv bias, BatchNorm scale and shift
    assert got["macs_dense"] == conv_macs + linear_macs
    assert got["flops_dense"] == 2 * (conv_macs + linear_macs) + other
    masks.attach(net, {"0.weight": torch.arange(72).view(4, 2, 3, 3) < 18})  # a quarter kept
    got = profile.flops(net, (2, 5, 5))
    assert got["flops_remaining"] == 2 * (conv_macs / 4 + linear_macs) + other


@pytest.mark.parametrize("compression", SURVEY)
def test_random_pruning_keeps_flops_in_proportion_and_magnitude_keeps_more(compression):
    torch.manual_seed(0)
    model = models.build("vgg16")
    rand = copy.deepcopy(model)
    pruners.prune(rand, "rand", compression, seed=0)
    fraction = profile.remaining_flops_fraction(rand, (3, 32, 32))
    assert abs(fraction - 10**-compression) < 0.01
    pruners.prune(model, "mag", compression)
    assert profile.remaining_flops_fraction(model, (3, 32, 32)) > fraction + 0.01


def test_parameter_counts_and_storage():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 2))
    mask = {"0.weight": torch.rand(8, 10) < 0.25, "2.weight": torch.ones(2, 8, dtype=torch.bool)}
    masks.attach(net, mask)
    kept = int(mask["0.weight"].sum()) + 16
    counts = profile.parameter_counts(net)
    assert counts["params_total"] == 80 + 8 + 16 + 2 and counts["prunable_kept"] == kept
    assert counts["params_nonzero"] == kept + 10  # the biases are not zero
    storage = profile.storage_bytes(net)
    assert storage["storage_dense_bytes"] == 4 * 106
    assert storage["storage_csr_bytes"] == 4 * 10 + kept * 8 + (9 + 3) * 4
    assert storage["storage_bitmask_bytes"] == 4 * 10 + kept * 4 + 10 + 2


@pytest.fixture(scope="module")
def profiled(digits):
    torch.manual_seed(0)
    model = models.build("mlp", in_channels=1, image_size=8)
    pruners.prune(model, "mag", 1)
    model.train()
    before = copy.deepcopy(model.state_dict())
    record = profile.profile(model, digits[1], "cpu", batch_size=64, repeats=3,
                             latency_repeats=5)
    return model, before, record


def test_profile_fields_are_present_positive_and_finite(profiled):
    _, _, record = profiled
    for key in ("time_s", "time_s_min", "time_s_max", "images_per_s", "latency_ms",
                "cpu_rss_baseline_bytes", "cpu_rss_peak_bytes", "cpu_uss_peak_bytes",
                "cpu_rss_model_loaded_bytes", "flops_dense", "flops_remaining", "macs_dense",
                "storage_dense_bytes", "storage_csr_bytes", "params_nonzero"):
        assert isinstance(record[key], (int, float)) and math.isfinite(record[key]), key
        assert record[key] > 0, key
    assert record["time_s_min"] <= record["time_s"] <= record["time_s_max"]
    assert record["images"] == 450 and record["density"] == pytest.approx(0.1)
    assert record["cpu_rss_peak_bytes"] >= record["cpu_rss_baseline_bytes"]
    assert record["cpu_uss_increase_bytes"] >= 0
    assert "gpu_peak_allocated_bytes" not in record  # CUDA only


def test_profiling_leaves_the_model_unchanged(profiled):
    model, before, _ = profiled
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_memory_fields_on_cuda(digits):
    model = models.build("mlp", in_channels=1, image_size=8)
    record = profile.profile(model, digits[1], "cuda", repeats=2, latency_repeats=3,
                             memory=False)
    assert record["gpu_peak_reserved_bytes"] >= record["gpu_peak_allocated_bytes"] > 0


def spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_timed_sees_other_processes_take_the_cpu():
    """A single-threaded busy loop is at every moment either running or waiting for a CPU, so
    its CPU time and its waiting add up to its wall time, however busy the machine already is
    (this holds beside a sweep in the background too). Beside two more busy processes per core it
    waits most of its wall time, more than it did before they came, and
    :func:`profile.contended` says so."""
    before: dict = {}
    with profile.timed(before, "spin"):
        spin(0.5)
    assert before["spin_s"] >= 0.5 and len(before["spin_load"]) == 2
    assert before["spin_cpu_s"] + before["spin_wait_s"] == pytest.approx(before["spin_s"],
                                                                         rel=0.2)
    rivals = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
              for _ in range(2 * (os.cpu_count() or 1))]
    try:
        time.sleep(0.3)
        shared: dict = {}
        with profile.timed(shared, "spin"):
            spin(1.0)
    finally:
        for rival in rivals:
            rival.kill()
    assert shared["spin_cpu_s"] + shared["spin_wait_s"] == pytest.approx(shared["spin_s"],
                                                                         rel=0.2)
    waited = {k: t["spin_wait_s"] / t["spin_s"] for k, t in (("before", before),
                                                             ("shared", shared))}
    assert waited["shared"] > 0.3 and waited["shared"] > waited["before"], waited
    assert profile.contended(shared, "spin") is True


def test_contended_reads_waiting_first_then_load_and_knows_old_records():
    assert profile.contended({"x_s": 10, "x_wait_s": 0.5, "x_load": [9, 9]}, "x") is False
    assert profile.contended({"x_s": 10, "x_wait_s": 2.0, "x_load": [0, 0]}, "x") is True
    assert profile.contended({"x_s": 10, "x_wait_s": None, "x_load": [1, 3]}, "x", cpus=2)
    assert not profile.contended({"x_s": 10, "x_wait_s": None, "x_load": [1, 2]}, "x", cpus=2)
    assert profile.contended({"x_s": 10}, "x") is None  # made before these were measured
