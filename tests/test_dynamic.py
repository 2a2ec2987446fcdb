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
    uniform = dynamic.initial_masks(model, 0.1, "uniform", first_dense=False)
    for name, w in masks.prunable(model).items():
        assert abs(int(uniform[name].sum()) - 0.1 * w.numel()) < 1
    erk = dynamic.initial_masks(model, 0.1, "erk", first_dense=False)
    first, last_conv = erk["features.0.weight"], erk["features.40.weight"]
    assert first.float().mean() > last_conv.float().mean()  # small layers denser
    with pytest.raises(ValueError, match="unknown distribution"):
        dynamic.initial_masks(model, 0.1, "lognormal")


def test_the_first_layer_is_dense_within_the_budget_as_rigls_cifar_runs_keep_it():
    torch.manual_seed(0)
    model = models.build("vgg16", 10, 3, 0.25)
    sizes = {n: w.numel() for n, w in masks.prunable(model).items()}
    total = sum(sizes.values())
    for distribution in dynamic.DISTRIBUTIONS:
        chosen = dynamic.initial_masks(model, 0.01, distribution)  # c = 2
        assert bool(chosen["features.0.weight"].all())  # 432 weights, all kept
        assert sum(int(m.sum()) for m in chosen.values()) == round(0.01 * total)  # exact
    densities = dynamic.erk_densities({n: tuple(w.shape) for n, w in
                                       masks.prunable(model).items()}, 0.01,
                                      dense=("features.0.weight",))
    assert densities["features.0.weight"] == 1.0
    assert sum(densities[n] * sizes[n] for n in sizes) == pytest.approx(0.01 * total)
    tiny = dynamic.initial_masks(model, 100 / total, "erk")  # 100 weights: 432 cannot stay whole
    assert sum(int(m.sum()) for m in tiny.values()) == 100


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
    assert buffer.tolist() == [1, 1, 1, 1, 1, 0, 0, 1]  # cleared where a connection is new


def test_a_dropped_weight_grown_again_keeps_its_value_and_momentum_as_in_rigls_code():
    model, layer = one_layer([5, 0.1, 0, 0], [True, True, False, False], grad=[0, 8, 1, 2])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    optimizer.state[layer.weight]["momentum_buffer"] = torch.full_like(layer.weight, 0.5)
    assert dynamic.move_connections(model, optimizer, 0.5, "gradient") == 0  # nothing moved
    assert masks.get(model)["0.weight"][0].tolist() == [True, True, False, False]
    assert layer.weight[0].tolist() == pytest.approx([5, 0.1, 0, 0])  # 0.1 kept, not reset
    assert optimizer.state[layer.weight]["momentum_buffer"][0].tolist() == [0.5] * 4
    model, _ = one_layer([5, 0.1, 0, 0], [True, True, False, False])
    with pytest.raises(RuntimeError, match="gradient"):
        dynamic.move_connections(model, None, 0.5, "gradient")


@pytest.mark.parametrize("growth", ["random", "gradient"])
def test_an_update_leaves_a_dense_layer_exactly_as_it_was(growth):
    weights = [0.3, -2.0, 0.01, 1.5, -0.2, 0.7]
    model, layer = one_layer(weights, [True] * 6, grad=[1, -3, 0.5, 2, 0.1, 4])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    optimizer.state[layer.weight]["momentum_buffer"] = torch.full_like(layer.weight, 0.25)
    moved = dynamic.move_connections(model, optimizer, 0.3, growth,
                                     torch.Generator().manual_seed(0))
    assert moved == 0 and bool(masks.get(model)["0.weight"].all())
    assert layer.weight[0].tolist() == pytest.approx(weights)
    assert optimizer.state[layer.weight]["momentum_buffer"][0].tolist() == [0.25] * 6


def test_the_count_moved_is_truncated_as_rigls_code_truncates_it():
    # 5 alive at fraction 0.3: 1.5 -> 1 moved (rounding would move 2)
    model, _ = one_layer([5, 4, 3, 2, 1, 0, 0, 0], [True] * 5 + [False] * 3,
                         grad=[0, 0, 0, 0, 0, 9, 8, 7])
    assert dynamic.move_connections(model, None, 0.3, "gradient") == 1
    assert masks.get(model)["0.weight"][0].tolist() == [True] * 4 + [False, True, False, False]


def test_set_grows_at_random_among_the_free_positions_keeping_the_count():
    grown = set()
    for seed in range(20):
        model, layer = one_layer(list(range(1, 11)), [True] * 5 + [False] * 5)
        dynamic.move_connections(model, None, 0.4, "random", torch.Generator().manual_seed(seed))
        mask = masks.get(model)["0.weight"][0]
        assert int(mask.sum()) == 5 and mask[2:5].all()  # 1 and 2 dropped (the smallest)
        new = tuple(i for i in (0, 1, 5, 6, 7, 8, 9) if mask[i])
        assert len(new) == 2 and all(layer.weight[0, i] == (i + 1 if i < 2 else 0)
                                     for i in new)  # new ones at zero, regrown ones kept
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
    with pytest.raises(ValueError, match="moves no connections"):
        dynamic.DynamicSparsity("deepr", steps)
    with pytest.raises(ValueError, match="moves no connections"):
        dynamic.DynamicSparsity("static", steps)


def test_set_and_rigl_are_stored_runs_with_what_moved(tmp_path):
    from sparse_survey.experiment import RunConfig
    from sparse_survey.tutorial import runs

    configs = [RunConfig.from_preset("smoke", m, 0.2, device="cpu")  # the first layer fits
               for m in ("set", "rigl", "static")]
    assert [c.label for c in configs] == ["SET (ERK)", "RigL (ERK)", "Static (ERK)"]
    records = runs(configs, tmp_path, progress=False)
    for record in records:
        metrics = record["metrics"]
        assert record["status"] == "finished"
        assert metrics["prunable_kept"] == round(10**-0.2 * metrics["prunable_total"])
        assert record["layer_densities"]["net.1.weight"] == 1.0  # the first layer dense
    for record in records[:2]:
        moved = record["connectivity"]
        assert moved["updates"] >= dynamic.UPDATES and moved["moves"] > 0
        assert 0 < moved["new_fraction"] < 1 and moved["moves_per_connection"] > 0
    assert "connectivity" not in records[2]  # static: the starting mask, kept
    with pytest.raises(ValueError, match="neither rounds nor a scope"):
        RunConfig.from_preset("smoke", "rigl", 1, scope="local")


def test_a_grid_names_set_and_rigl():
    from sparse_survey import sweeps

    grid = sweeps.load_grid("{methods: [set, rigl], compressions: [1, 2], imp_iterations: []}")
    assert [c.label for c in sweeps.grid_configs(grid, "smoke")] == [
        "SET (ERK)", "RigL (ERK)", "SET (ERK)", "RigL (ERK)"]


def test_the_revision_is_in_the_key_of_set_and_rigl_and_old_records_keep_theirs():
    """A record of revision 1 (stored before the field existed) keeps its key and file and is
    labelled with its revision; a new SET or RigL run has another key; revision 1 no longer
    runs."""
    from sparse_survey import experiment
    from sparse_survey.experiment import RunConfig, config_dict, config_from_dict

    new = RunConfig.from_preset("smoke", "set", 1)
    assert new.revision == dynamic.REVISION == 2 and config_dict(new)["revision"] == 2
    stored = {k: v for k, v in config_dict(new).items() if k != "revision"}  # as written before
    old = config_from_dict(stored)
    assert old.revision == 1 and old.label == "SET (ERK, revision 1)"
    assert old.key != new.key
    identity = {k: v for k, v in stored.items() if k not in experiment.EXECUTION}
    import hashlib
    import json

    assert old.key == hashlib.sha256(json.dumps(experiment.canonical(identity),
                                                sort_keys=True).encode()).hexdigest()[:16]
    mag = RunConfig.from_preset("smoke", "mag", 1)
    assert mag.revision == 1 and "revision" not in config_dict(mag)  # other keys unchanged
    record = experiment.run(old)
    assert record["status"] == "failed" and "earlier revision" in record["error"]
    with pytest.raises(ValueError, match="revision 3"):
        RunConfig.from_preset("smoke", "rigl", 1, revision=3)
