"""The benchmarks' arithmetic: a peak that is one, and fractions of it that cannot pass 100 %."""

import pytest
import torch

from sparse_survey import bench


def test_the_peak_is_the_fastest_product_of_every_size_and_repeat():
    peak = bench.peak_flops(torch.device("cpu"), torch.float32, sizes=(64, 256), repeats=3)
    assert set(peak["per_size"]) == {64, 256}
    assert peak["flops"] == max(peak["per_size"].values()) == peak["per_size"][peak["size"]]
    assert peak["repeats"] == 3 and peak["threads"] == torch.get_num_threads()
    assert peak["dtype"] == "float32"


def rows(*rates):
    return [{"loop": "eager", "batch_size": 128, "setup": f"setup {i}", "precision": "fp32",
             "train_flops_per_s": rate} for i, rate in enumerate(rates)]


def test_fractions_are_of_the_matrix_product_peak_when_no_row_is_faster():
    measured = rows(50.0, 80.0)
    peaks = {"fp32": {"matmul": {"flops": 100.0, "size": 4096, "repeats": 5,
                                 "per_size": {1024: 90.0, 4096: 100.0}, "threads": 2}}}
    bench.set_fractions_of_peak(measured, peaks)
    assert [r["fraction_of_peak"] for r in measured] == [0.5, 0.8]
    assert peaks["fp32"]["flops"] == 100.0 and "4096 x 4096" in peaks["fp32"]["source"]


def test_a_row_faster_than_every_product_becomes_the_peak_and_no_fraction_passes_one():
    """A library that multiplies less than direct convolution counts (Winograd), or a product
    measured short, would put a row above 100 %: then the row itself is the peak, and says so."""
    measured = rows(50.0, 250.0, 125.0)
    peaks = {"fp32": {"matmul": {"flops": 100.0, "size": 4096, "repeats": 5,
                                 "per_size": {4096: 100.0}, "threads": 2}}}
    bench.set_fractions_of_peak(measured, peaks)
    assert [r["fraction_of_peak"] for r in measured] == pytest.approx([0.2, 1.0, 0.5])
    assert peaks["fp32"]["flops"] == 250.0 and "setup 1" in peaks["fp32"]["source"]
    assert max(r["fraction_of_peak"] for r in measured) <= 1
