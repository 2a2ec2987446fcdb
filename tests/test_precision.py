"""Precision is part of a run: bf16 autocast with channels_last where the device does bf16
arithmetic, float32 elsewhere or when asked; SynFlow scores in float32 whatever the training
precision; stored float32 records keep their meaning; with the allocator pinned, timed inference
passes fault no page in, whatever the process allocated before."""

import dataclasses
import json

import pytest
import torch
from torch import nn

from sparse_survey import bench, experiment, models, pruners, train
from sparse_survey.experiment import RunConfig
from sparse_survey.store import Store, write_json


def test_auto_is_bf16_exactly_where_torch_says_the_cpu_has_bf16_arithmetic():
    has_bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert train.bf16_supported("cpu") == has_bf16
    assert train.resolve_precision("auto", "cpu") == ("bf16" if has_bf16 else "fp32")
    assert train.resolve_precision("fp32", "cpu") == "fp32"
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        train.resolve_precision("fp16", "cpu")


def test_a_bf16_run_never_takes_an_fp32_runs_key():
    fp32 = RunConfig.from_preset("smoke", "mag", 1, precision="fp32")
    bf16 = RunConfig.from_preset("smoke", "mag", 1, precision="bf16")
    assert fp32.key != bf16.key and (fp32.precision, bf16.precision) == ("fp32", "bf16")
    auto = RunConfig.from_preset("smoke", "mag", 1, precision="auto")
    assert auto.key == (bf16 if train.bf16_supported("cpu") else fp32).key  # resolved when made
    laptop = RunConfig.from_preset("laptop", "mag", 1)
    assert laptop.precision == "fp32" and laptop.label == "Mag"  # its records are float32
    assert RunConfig.from_preset("laptop", "mag", 1, precision="bf16").label == "Mag (bf16)"


def test_a_presets_precision_is_its_own_unless_one_is_asked_for():
    machine = "bf16" if train.bf16_supported("cpu") else "fp32"
    assert experiment.preset_precision("laptop", "cpu") == "fp32"  # pinned: its records are fp32
    assert experiment.preset_precision("cpu-full", "cpu") == machine  # its own is "auto"
    assert experiment.preset_precision("laptop", "cpu", asked="bf16") == "bf16"
    assert experiment.preset_precision("cpu-full", "cpu", asked="fp32") == "fp32"
    assert experiment.preset_precision("laptop", "cpu", asked="auto") == "fp32"
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        experiment.preset_precision("laptop", "cpu", asked="fp16")


@pytest.mark.parametrize(("device", "precision"), [("cpu", "fp32"), ("cuda", "bf16"),
                                                    ("cuda:0", "bf16")])
def test_a_record_made_before_precision_was_stored_keeps_its_meaning(device, precision, tmp_path):
    """Schema 2 stored no precision: CUDA runs trained in bf16, every other run in float32."""
    config = RunConfig.from_preset("smoke", "mag", 1, precision=precision)
    stored = {k: v for k, v in experiment.config_dict(config).items() if k != "precision"}
    record = {"schema": 2, "key": "0123456789abcdef", "config": stored, "status": "failed",
              "label": "Mag", "error": "x", "environment": {"device": device}}
    write_json(tmp_path / "smoke" / "0123456789abcdef.json", record)
    store = Store(tmp_path)
    (read,) = store.records("smoke", stale=True)
    assert read["config"]["precision"] == precision and read["key"] == config.key
    store.rekey("smoke")
    assert [p.stem for p in (tmp_path / "smoke").glob("*.json")] == [config.key]
    assert json.loads((tmp_path / "smoke" / f"{config.key}.json").read_text())["schema"] == \
        experiment.SCHEMA


def layer_dtypes(model: nn.Module) -> set[torch.dtype]:
    """Record the output dtype of every convolution on the next forward pass."""
    seen: set[torch.dtype] = set()
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
    return seen


@pytest.mark.parametrize(("precision", "dtype"), [
    ("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_fit_trains_in_the_precision_it_is_given(precision, dtype, digits):
    """bf16 autocast with channels_last; fp32 in NCHW on a CPU, channels_last on CUDA (fit's
    default device)."""
    cuda = torch.cuda.is_available()
    layout = torch.channels_last if precision == "bf16" or cuda else torch.contiguous_format
    torch.manual_seed(0)
    model = models.build("resnet20", 10, 1, 0.5, image_size=8)
    seen = layer_dtypes(model)
    recipe = train.Recipe(epochs=1, batch_size=64, lr=0.05, schedule="constant")
    history = train.fit(model, digits[0], recipe, digits[1], progress=False, precision=precision)
    assert seen == {dtype} and history.final["test_acc"] > 0
    weight = [m for m in model.modules() if isinstance(m, nn.Conv2d)][-1].weight
    assert weight.dtype == torch.float32 and weight.is_contiguous(memory_format=layout)


def test_synflow_scores_in_float32_inside_a_bf16_autocast():
    torch.manual_seed(0)
    model = models.build("vgg11", 10, 3, 0.25)
    outside = pruners.score(model, "synflow", input_shape=(3, 32, 32))
    with torch.autocast("cpu", torch.bfloat16):
        inside = pruners.score(model, "synflow", input_shape=(3, 32, 32))
    assert all(inside[n].dtype == torch.float32 and torch.equal(inside[n], outside[n])
               for n in outside)


def test_fp32_on_cuda_turns_tensorfloat32_off_while_it_runs_and_restores_it(monkeypatch):
    """cuDNN runs float32 convolutions in TensorFloat-32 unless told not to (its default): an fp32
    run, and every pruner's scoring, turn that off and leave the process's settings as found."""
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    before = cudnn.allow_tf32, matmul.allow_tf32  # flags of torch's, which monkeypatch cannot set
    monkeypatch.setattr(pruners, "ieee_fp32", lambda device: train.ieee_fp32("cuda"))
    cudnn.allow_tf32 = matmul.allow_tf32 = True
    try:
        tensorfloat32_off_while_fp32_runs_on_cuda(monkeypatch)
    finally:
        cudnn.allow_tf32, matmul.allow_tf32 = before


def tensorfloat32_off_while_fp32_runs_on_cuda(monkeypatch):
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    with train.autocast(torch.device("cuda"), "fp32"):
        assert (cudnn.allow_tf32, matmul.allow_tf32) == (False, False)
    assert (cudnn.allow_tf32, matmul.allow_tf32) == (True, True)
    for device, precision in (("cuda", "bf16"), ("cpu", "fp32")):  # not float32 on CUDA
        with train.autocast(torch.device(device), precision):
            assert (cudnn.allow_tf32, matmul.allow_tf32) == (True, True)

    seen = []  # what a score function sees, with the model's device taken for CUDA
    mag = pruners.METHODS["mag"]
    monkeypatch.setitem(pruners.METHODS, "mag", dataclasses.replace(
        mag, scores=lambda *a, **k: seen.append(cudnn.allow_tf32) or mag.scores(*a, **k)))
    pruners.score(nn.Sequential(nn.Linear(4, 3)), "mag")
    assert seen == [False] and cudnn.allow_tf32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_an_fp32_convolution_on_cuda_matches_float64_to_float32_accuracy():
    """Under fp32 a convolution's error against float64 is float32's (about 1e-6 relative), not
    TensorFloat-32's (about 1e-3), whatever cuDNN's default."""
    generator = torch.Generator().manual_seed(0)
    x, w = (torch.randn(shape, generator=generator, dtype=torch.float64)
            for shape in ((8, 64, 16, 16), (64, 64, 3, 3)))
    exact = torch.nn.functional.conv2d(x, w, padding=1)
    with train.autocast(torch.device("cuda"), "fp32"):
        got = torch.nn.functional.conv2d(x.float().cuda(), w.float().cuda(), padding=1)
    error = ((got.double().cpu() - exact).norm() / exact.norm()).item()
    assert error < 1e-5, f"relative error {error:.2e}: the convolution ran in TensorFloat-32"


def test_pinning_the_allocator_stops_timed_passes_faulting_whatever_the_process_did_before():
    """The cause of history-dependent inference timings (issue 19: about 2 s against 3 s) was page
    faults: unpinned, glibc serves each pass's activations from fresh memory, and the five timed
    passes fault pages in by the hundred thousand (160,000 to 510,000 seen for these 1,024 images);
    pinned, no timed pass faults (or a few thousand once, when a thread's heap first grows), whether
    the process allocated nothing before or freed blocks of many sizes first. That the times then
    agree is a speed, measured by ``bench allocator``."""
    pinned = {history: bench.inference_after_history(history)
              for history in bench.ALLOCATION_HISTORIES}
    unpinned = bench.inference_after_history("fresh", pinned=False)
    assert all(t["allocator_pinned"] and t["inference_precision"] == "fp32"
               for t in pinned.values())
    assert not unpinned["allocator_pinned"]
    faults = {h: t["time_passes_minor_faults"] for h, t in pinned.items()}
    assert all(f < 10_000 for f in faults.values()), faults
    assert unpinned["time_passes_minor_faults"] > 50_000, unpinned["time_passes_minor_faults"]


def test_an_unknown_allocation_history_is_refused():
    with pytest.raises(ValueError, match="unknown allocation history 'warm'"):
        bench.inference_after_history("warm")


def test_dead_batchnorm_channels_are_counted_and_a_run_warns_of_them(monkeypatch):
    """A channel whose filter lost every weight feeds BatchNorm a constant: its running variance
    decays towards zero, below eps, and the run's record says so."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    with torch.no_grad():
        model[0].weight[:3] = 0  # three filters pruned whole: their outputs are their biases
    model.train()
    for _ in range(200):
        model(torch.randn(8, 3, 6, 6))
    assert train.dead_channels(model) == {"1": 3}
    assert model[1].running_var[3] > 0.1  # the live channel
    monkeypatch.setattr(experiment, "dead_channels", lambda _model: {"features.1": 3})
    with pytest.warns(UserWarning, match="3 BatchNorm channels in 1 layers"):
        record = experiment.run(RunConfig.from_preset("smoke", "mag", 1, device="cpu"))
    assert any("running variance below eps" in w for w in record["warnings"])
