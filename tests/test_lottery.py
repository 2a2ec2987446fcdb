"""IMP with rewinding and its controls, on the MLP and the digits set (CPU, seconds)."""

import copy

import pytest
import torch

from sparse_survey import lottery, masks, models
from sparse_survey.train import Recipe

pytestmark = pytest.mark.usefixtures("fixed_threads")  # runs and reruns compared bit for bit

RECIPE = Recipe(epochs=3, batch_size=64, lr=0.05, momentum=0.9, nesterov=False, weight_decay=0,
                schedule="constant")


def mlp(seed=0):
    torch.manual_seed(seed)
    return models.build("mlp", in_channels=1, image_size=8)


def run(digits, tmp_path, compression=1.5, iters=3, seed=0, recipe=RECIPE, **kwargs):
    """IMP on the MLP in float32 on every machine: ``auto`` would train in bf16 on a CPU with
    bf16 dot products, and the cache names (and exact results) would depend on the machine."""
    return lottery.imp(mlp(seed), digits, compression, iters, recipe, seed=seed,
                       cache_dir=tmp_path, device="cpu", progress=False, precision="fp32",
                       **kwargs)


@pytest.fixture
def spy(monkeypatch):
    """Records, at the start of every training run inside IMP, the masks and the full state."""
    starts = []
    fit = lottery.fit

    def recording_fit(model, *args, **kwargs):
        starts.append((masks.get(model), copy.deepcopy(model.state_dict())))
        return fit(model, *args, **kwargs)

    monkeypatch.setattr(lottery, "fit", recording_fit)
    return starts


def test_rounds_prune_to_exact_counts_nest_and_rewind_exactly(digits, tmp_path, spy):
    result = run(digits, tmp_path, compression=1.5, iters=3)
    n = sum(w.numel() for w in masks.prunable(result.model).values())
    assert [r["round"] for r in result.rounds] == [0, 1, 2, 3]
    assert [round(r["density"] * n) for r in result.rounds] == \
        [n] + [round(10 ** (-1.5 * r / 3) * n) for r in (1, 2, 3)]
    assert len(spy) == 4  # dense + three rounds
    init = spy[0][1]
    for (before, _), (after, state) in zip(spy, spy[1:]):
        for name in after:
            assert not (after[name] & ~before[name]).any()  # nested
            kept = after[name]
            assert torch.equal(state[name][kept], init[name][kept])  # rewound exactly
            assert torch.all(state[name][~kept] == 0)
        for key, value in init.items():  # biases (and BatchNorm, where present) rewound too
            if key not in after:
                assert torch.equal(state[key], value), key
    assert all(torch.equal(result.masks[k], spy[-1][0][k]) for k in result.masks)
    # an MLP uses each weight once per image (1 MAC = 2 FLOPs) and adds each bias once
    kept = sum(int(m.sum()) for m in result.masks.values())
    biases = sum(layer.bias.numel() for layer in masks.prunable_layers(result.model).values())
    expected = (2 * kept + biases) / (2 * n + biases)
    assert result.final["remaining_flops"] == pytest.approx(expected, rel=1e-12)


def test_rewinding_to_a_training_step_uses_that_steps_weights(digits, tmp_path, spy):
    result = run(digits, tmp_path, compression=1, iters=1, rewind=5)
    captured = {}
    reference = mlp(0)
    lottery.fit(reference, digits[0], RECIPE, None, device="cpu", seed=0, progress=False,
                precision="fp32",
                on_step=lambda step, m, _: step == 5 and captured.update(
                    state=copy.deepcopy(m.state_dict())))
    assert all(torch.equal(result.rewind_state[k], v) for k, v in captured["state"].items())
    mask, state = spy[1]  # the start of round 1 (spy[0] is the dense run)
    for name, kept in mask.items():
        assert torch.equal(state[name][kept], captured["state"][name][kept])
    with pytest.raises(ValueError, match="beyond"):
        run(digits, tmp_path / "other", compression=1, iters=1, rewind=10_000)


def test_dense_training_is_cached_across_configurations_but_not_seeds(digits, tmp_path, spy):
    first = run(digits, tmp_path, compression=1, iters=2)
    assert not first.dense_cached and len(spy) == 3
    second = run(digits, tmp_path, compression=2, iters=3)
    assert second.dense_cached and len(spy) == 3 + 3  # no dense training this time
    assert second.rounds[0] == {**first.rounds[0], "cached": True}
    other_seed = run(digits, tmp_path, compression=1, iters=2, seed=1)
    assert not other_seed.dense_cached and len(spy) == 6 + 3


def test_configurations_that_prune_to_the_same_compressions_share_those_rounds_exactly(
        digits, tmp_path, spy):
    """IMP (3 Iters) at c = 1.5 prunes to c = 0.5 and 1 before its last round, as IMP (2 Iters)
    at c = 1 does: it trains only its third round, and ends bitwise where it would alone."""
    two = run(digits, tmp_path, compression=1, iters=2)
    assert len(spy) == 3 and [r["cached"] for r in two.rounds] == [False] * 3
    three = run(digits, tmp_path, compression=1.5, iters=3)
    assert len(spy) == 3 + 1 and [r["cached"] for r in three.rounds] == [True, True, True, False]
    assert three.rounds[:3] == [{**r, "cached": True} for r in two.rounds]
    alone = run(digits, tmp_path / "alone", compression=1.5, iters=3)
    assert all(torch.equal(a, b) for a, b in zip(three.model.state_dict().values(),
                                                 alone.model.state_dict().values()))
    assert three.final["test_acc"] == alone.final["test_acc"]
    other = run(digits, tmp_path, compression=2, iters=2)  # prunes to c = 1 first: its own rounds
    assert len(spy) == 4 + 1 + 2 + 3 and [r["cached"] for r in other.rounds] == [True, False, False]


def test_trainings_left_says_how_many_trainings_a_run_will_do(digits, tmp_path, spy):
    """Before each run, the count of trainings the cache does not hold, checked against the
    trainings the run then does: shared rounds, a cached dense run, a finished run, another
    seed, and fine-tuning (its own rounds, the shared dense run)."""
    def left(compression, iters, seed=0, rewind="init"):
        return lottery.trainings_left(lottery.cache_files(
            mlp(seed), digits, compression, iters, RECIPE, rewind=rewind, seed=seed,
            precision="fp32", cache_dir=tmp_path))

    for compression, iters, seed, rewind, expected in [
            (1, 2, 0, "init", 3), (1.5, 3, 0, "init", 1), (2, 2, 0, "init", 2),
            (1, 2, 0, "init", 0), (1, 2, 1, "init", 3), (2, 4, 0, "init", 1),
            (1, 2, 0, "none", 2)]:
        before = len(spy)
        assert left(compression, iters, seed, rewind) == expected
        run(digits, tmp_path, compression=compression, iters=iters, seed=seed, rewind=rewind)
        assert len(spy) - before == expected, (compression, iters, seed, rewind)


def test_an_interrupted_run_resumes_to_the_same_result(digits, tmp_path, monkeypatch):
    uninterrupted = run(digits, tmp_path / "a", compression=1.5, iters=3)
    train_round = lottery._train_round

    def dies_in_round_2(r, *args, **kwargs):
        if r == 2:
            raise KeyboardInterrupt("killed")
        return train_round(r, *args, **kwargs)

    monkeypatch.setattr(lottery, "_train_round", dies_in_round_2)
    with pytest.raises(KeyboardInterrupt):
        run(digits, tmp_path / "b", compression=1.5, iters=3)
    monkeypatch.setattr(lottery, "_train_round", train_round)
    resumed = run(digits, tmp_path / "b", compression=1.5, iters=3)
    assert resumed.dense_cached
    assert all(torch.equal(resumed.masks[k], uninterrupted.masks[k]) for k in resumed.masks)
    assert resumed.final["test_acc"] == uninterrupted.final["test_acc"]
    assert all(torch.equal(a, b) for a, b in zip(resumed.model.state_dict().values(),
                                                 uninterrupted.model.state_dict().values()))


def test_reinit_changes_every_surviving_weight_and_no_mask_entry(digits, tmp_path):
    result = run(digits, tmp_path, compression=1, iters=1)
    ticket = lottery.rewind_to(copy.deepcopy(result.model), result.rewind_state, result.masks)
    before = {n: w.detach().clone() for n, w in masks.prunable(ticket).items()}
    control = lottery.reinitialize(ticket, seed=7)
    for name, w in masks.prunable(control).items():
        kept = result.masks[name]
        assert torch.equal(masks.get(control)[name], kept)
        assert torch.all(w[kept] != before[name][kept])
        assert torch.all(w[~kept] == 0)


def test_shuffle_control_keeps_layer_counts_and_the_rewind_weights(digits, tmp_path):
    result = run(digits, tmp_path, compression=1, iters=1)
    ticket = lottery.rewind_to(copy.deepcopy(result.model), result.rewind_state, result.masks)
    control = lottery.shuffle_masks(ticket, result.rewind_state, seed=3)
    for name, w in masks.prunable(control).items():
        new = masks.get(control)[name]
        assert int(new.sum()) == int(result.masks[name].sum())
        assert not torch.equal(new, result.masks[name])
        assert torch.equal(w[new], result.rewind_state[name][new])


def test_winning_tickets_beat_random_reinitialization_on_digits(digits, tmp_path):
    """At 3% density (compression 1.5, three rounds), over three seeds."""
    recipe = Recipe(epochs=10, batch_size=64, lr=0.05, momentum=0.9, nesterov=False,
                    weight_decay=0, schedule="constant")
    gaps = []
    for seed in range(3):
        result = run(digits, tmp_path, compression=1.5, iters=3, seed=seed, recipe=recipe)
        accuracy = lottery.controls(result, digits, recipe, seed=seed, device="cpu",
                                    progress=False, precision="fp32")
        assert accuracy["winning ticket"] > accuracy["random reinit"], (seed, accuracy)
        gaps.append(accuracy["winning ticket"] - accuracy["random reinit"])
    assert sum(gaps) / len(gaps) > 0.1


def test_bad_imp_arguments(digits, tmp_path):
    with pytest.raises(ValueError, match="iterations"):
        run(digits, tmp_path, iters=0)
    with pytest.raises(ValueError, match="rewind"):
        run(digits, tmp_path, rewind="start")
    with pytest.raises(ValueError, match="fewer than one per prunable layer"):
        run(digits, tmp_path, compression=5)


def test_rewind_to_works_on_a_model_without_masks(digits, tmp_path):
    result = run(digits, tmp_path, compression=1, iters=1)
    dense = mlp(5)
    lottery.rewind_to(dense, result.rewind_state, result.masks)
    for name, w in masks.prunable(dense).items():
        kept = result.masks[name]
        assert torch.equal(w[kept], result.rewind_state[name][kept]) and torch.all(w[~kept] == 0)


def test_no_rewind_fine_tunes_the_trained_survivors_and_shares_the_dense_run(digits, tmp_path,
                                                                           spy):
    rewound = run(digits, tmp_path, compression=1, iters=2)
    tuned = run(digits, tmp_path, compression=1, iters=2, rewind="none")
    assert tuned.dense_cached and tuned.rounds[0] == {**rewound.rounds[0], "cached": True}
    assert len(spy) == 3 + 2  # one dense training for both
    (dense_file,) = (tmp_path / "imp").glob("*-dense.pt")
    trained = torch.load(dense_file)["model"]
    mask, state = spy[3]  # the start of the tuned run's first round
    for name, kept in mask.items():
        assert torch.equal(state[name][kept], trained[name][kept])  # trained values, not init
        assert torch.all(state[name][~kept] == 0)
    assert tuned.final["test_acc"] != rewound.final["test_acc"]
