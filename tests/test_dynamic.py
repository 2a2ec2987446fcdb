"""SET and RigL against hand computations: ERK's formula, exact counts, the drop and the growth,
the cosine schedule, and a real training through fit's step hook (digits, CPU, seconds)."""

import math

import pytest
import torch
from torch import nn

from sparse_survey import dynamic, masks, models
from sparse_survey.train import Recipe, fit


def test_erk_densities_follow_the_formula_and_give_the_excess_of_a_full_layer_away():
    shapes = {"a": (4, 2), "b": (10, 10), "c": (20, 30)}  # sum/prod: 0.75, 0.2, 1/12
    d = dynamic.erk_densities(shapes, 0.1)
    n = {"a": 8, "b": 100, "c": 600}
    eps = 0.1 * 708 / (0.75 * 8 + 0.2 * 100 + 600 / 12)  # no layer above 1
    assert d["a"] == pytest.approx(eps * 0.75) and d["b"] == pytest.approx(eps * 0.2)
    assert sum(d[k] * n[k] for k in n) == pytest.approx(0.1 * 708)
    dense = dynamic.erk_densities(shapes, 0.5)  # eps * 0.75 would be above 1
    assert dense["a"] == 1.0 and max(dense.values()) <= 1.0
    eps = (0.5 * 708 - 8) / (0.2 * 100 + 600 / 12)  # solved again over b and c
    assert dense["b"] == pytest.approx(eps * 0.2) and dense["c"] == pytest.approx(eps / 12)
    assert sum(dense[k] * n[k] for k in n) == pytest.approx(0.5 * 708)
    with pytest.raises(ValueError, match="density"):
        dynamic.erk_densities(shapes, 0)


def test_kept_counts_are_whole_add_up_exactly_and_stay_within_each_layer():
    sizes = {"a": 8, "b": 100, "c": 600}
    for density in (0.01, 0.1, 0.37, 0.9, 1.0):
        for densities in (dynamic.erk_densities({"a": (4, 2), "b": (10, 10), "c": (20, 30)},
                                                density), dict.fromkeys(sizes, density)):
            counts = dynamic.kept_counts(densities, sizes, density)
            assert sum(counts.values()) == round(density * 708)
            assert all(abs(counts[k] - densities[k] * sizes[k]) < 1 + 1e-9 for k in sizes)
            assert all(0 <= counts[k] <= sizes[k] for k in sizes)


def test_initial_masks_keep_exact_counts_at_seeded_random_positions():
    torch.manual_seed(0)
    model = models.build("vgg16", 10, 3, 0.25)
    total = sum(w.numel() for w in masks.prunable(model).values())
    for distribution in dynamic.DISTRIBUTIONS:
        chosen = dynamic.initial_masks(model, 0.1, distribution, seed=3)
        assert sum(int(m.sum()) for m in chosen.values()) == round(0.1 * total)
        again = dynamic.initial_masks(model, 0.1, distribution, seed=3)
        assert all(torch.equal(chosen[n], again[n]) for n in chosen)
    uniform = dynamic.initial_masks(model, 0.1, "uniform")
    for name, w in masks.prunable(model).items():
        assert abs(int(uniform[name].sum()) - 0.1 * w.numel()) < 1
    erk = dynamic.initial_masks(model, 0.1, "erk")
    first, last_conv = erk["features.0.weight"], erk["features.40.weight"]
    assert first.float().mean() > last_conv.float().mean()  # small layers denser
    with pytest.raises(ValueError, match="unknown distribution"):
        dynamic.initial_masks(model, 0.1, "lognormal")


def test_the_cosine_schedule_starts_at_the_fraction_halves_midway_and_stops_at_the_end():
    assert dynamic.update_fraction(0, 1000, 0.3, 0.75) == pytest.approx(0.3)
    assert dynamic.update_fraction(375, 1000, 0.3, 0.75) == pytest.approx(0.15)
    assert dynamic.update_fraction(750, 1000, 0.3, 0.75) == 0.0
    assert dynamic.update_fraction(999, 1000, 0.3, 0.75) == 0.0


def one_layer(weights: list[float], alive: list[bool], grad: list[float] | None = None):
    layer = nn.Linear(len(weights), 1, bias=False)
    model = nn.Sequential(layer)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([weights], dtype=torch.float32))
    masks.attach(model, {"0.weight": torch.tensor([alive])})
    if grad is not None:
        layer.weight.grad = torch.tensor([grad], dtype=torch.float32)
    return model, layer


def test_rigl_drops_the_smallest_alive_and_grows_the_largest_gradients_at_zero():
    # alive: 5, -1, 0.5, 3 (and a dead 0 at positions 4-7); fraction 0.5 of 4 alive -> move 2
    model, layer = one_layer([5, -1, 0.5, 3, 0, 0, 0, 0],
                             [True, True, True, True, False, False, False, False],
                             grad=[0, 0, 0, 0, 0.1, -7, 2, 0.3])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    optimizer.state[layer.weight]["momentum_buffer"] = torch.ones_like(layer.weight)
    moved = dynamic.move_connections(model, optimizer, 0.5, "gradient")
    mask = masks.get(model)["0.weight"][0]
    assert moved == 2 and int(mask.sum()) == 4  # the count exact
    # dropped: 0.5 and -1 (the smallest magnitudes); grown: -7 and 2 (largest |gradient|)
    assert mask.tolist() == [True, False, False, True, False, True, True, False]
    assert layer.weight[0].tolist() == [5, 0, 0, 3, 0, 0, 0, 0]  # grown at zero
    buffer = optimizer.state[layer.weight]["momentum_buffer"][0]
    assert buffer.tolist() == [1, 0, 0, 1, 1, 0, 0, 1]  # cleared where dropped or grown


def test_rigl_may_regrow_a_dropped_weight_and_needs_a_gradient():
    model, layer = one_layer([5, 0.1, 0, 0], [True, True, False, False], grad=[0, 8, 1, 2])
    dynamic.move_connections(model, None, 0.5, "gradient")
    assert masks.get(model)["0.weight"][0].tolist() == [True, True, False, False]
    assert layer.weight[0].tolist() == [5, 0, 0, 0]  # dropped, regrown: it starts again at 0
    model, _ = one_layer([5, 0.1, 0, 0], [True, True, False, False])
    with pytest.raises(RuntimeError, match="gradient"):
        dynamic.move_connections(model, None, 0.5, "gradient")


def test_set_grows_at_random_among_the_free_positions_keeping_the_count():
    grown = set()
    for seed in range(20):
        model, layer = one_layer(list(range(1, 11)), [True] * 5 + [False] * 5)
        dynamic.move_connections(model, None, 0.4, "random", torch.Generator().manual_seed(seed))
        mask = masks.get(model)["0.weight"][0]
        assert int(mask.sum()) == 5 and mask[2:5].all()  # 1 and 2 dropped (the smallest)
        new = tuple(i for i in (0, 1, 5, 6, 7, 8, 9) if mask[i])
        assert len(new) == 2 and all(layer.weight[0, i] == 0 for i in new)  # grown at zero
        grown.add(new)
    assert len(grown) > 5  # drawn at random: the seeds grow different positions


def test_a_training_with_rigl_keeps_its_density_and_stops_moving_after_the_end(digits):
    train, test = digits
    torch.manual_seed(0)
    model = models.build("mlp", 10, 1, image_size=8)
    masks.attach(model, dynamic.initial_masks(model, 0.2, "erk", seed=0))
    counts = {n: int(m.sum()) for n, m in masks.get(model).items()}
    recipe = Recipe(epochs=4, batch_size=64, lr=0.05, schedule="onecycle")
    steps = recipe.epochs * (len(train) // recipe.batch_size)
    hook = dynamic.DynamicSparsity("rigl", steps, update_every=5, fraction=0.3, end=0.5)
    seen = []

    def watch(step, m, optimizer):
        hook(step, m, optimizer)
        current = masks.get(m)
        assert {n: int(x.sum()) for n, x in current.items()} == counts  # exact after each step
        seen.append((step, {n: x.clone() for n, x in current.items()}))

    history = fit(model, train, recipe, test, device="cpu", progress=False, on_step=watch)
    assert hook.updates == len(range(5, math.ceil(0.5 * steps), 5)) and hook.moved > 0
    after = [m for step, m in seen if step >= 0.5 * steps]
    assert all(torch.equal(a[n], after[0][n]) for a in after for n in a)  # fixed after the end
    assert history.final["test_acc"] > 0.5
    with pytest.raises(ValueError, match="unknown method"):
        dynamic.DynamicSparsity("deepr", steps)


def test_set_and_rigl_are_stored_runs_with_what_moved(tmp_path):
    from sparse_survey.experiment import RunConfig
    from sparse_survey.tutorial import runs

    configs = [RunConfig.from_preset("smoke", m, 1, device="cpu") for m in ("set", "rigl")]
    assert [c.label for c in configs] == ["SET (ERK)", "RigL (ERK)"]
    records = runs(configs, tmp_path, progress=False)
    for record in records:
        metrics = record["metrics"]
        assert record["status"] == "finished"
        assert metrics["prunable_kept"] == round(0.1 * metrics["prunable_total"])
        moved = record["connectivity"]
        assert moved["updates"] >= dynamic.UPDATES and moved["moves"] > 0
        assert 0 < moved["new_fraction"] < 1 and moved["moves_per_connection"] > 0
    with pytest.raises(ValueError, match="neither rounds nor a scope"):
        RunConfig.from_preset("smoke", "rigl", 1, scope="local")


def test_a_grid_names_set_and_rigl():
    from sparse_survey import sweeps

    grid = sweeps.load_grid("{methods: [set, rigl], compressions: [1, 2], imp_iterations: []}")
    assert [c.label for c in sweeps.grid_configs(grid, "smoke")] == [
        "SET (ERK)", "RigL (ERK)", "SET (ERK)", "RigL (ERK)"]
