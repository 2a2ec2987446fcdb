"""Each pruner against an independent computation on small nets built here, plus exact counts,
scopes, schedules and bad input on VGG16."""

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from sparse_survey import masks, models, pruners

SURVEY = (0.05, 0.1, 0.2, 0.5, 1, 2)


def tiny_convnet():
    """Conv-BN-ReLU-pool-linear in float64, with non-trivial BatchNorm statistics so that
    scoring in eval mode matters."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(12, 4)).double()
    net[1].running_mean.uniform_(-0.5, 0.5)
    net[1].running_var.uniform_(0.5, 2.0)
    return net


def tiny_batches(n=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(5, 2, 6, 6, generator=g, dtype=torch.float64),
             torch.randint(0, 4, (5,), generator=g)) for _ in range(n)]


def summed_loss(net, batches, temperature=1.0):
    """The scoring objective written out: eval mode, mean cross-entropy summed over batches."""
    net.eval()
    return sum(F.cross_entropy(net(x) / temperature, y) for x, y in batches)


def gradient(net, batches, temperature=1.0):
    """dL/dw of the prunable weights, by plain .backward() on a copy."""
    net = copy.deepcopy(net)
    summed_loss(net, batches, temperature).backward()
    return {n: w.grad.clone() for n, w in masks.prunable(net).items()}


def kept(m):
    return sum(int(v.sum()) for v in m.values())


def total(model):
    return sum(w.numel() for w in masks.prunable(model).values())


# ----------------------------------------------------------------------------- the scores

def test_mag_is_the_absolute_weight():
    net = tiny_convnet()
    for name, s in pruners.score(net, "mag").items():
        assert torch.equal(s, masks.prunable(net)[name].detach().abs())


def test_rand_keeps_the_exact_count_and_differs_by_seed():
    model = models.build("vgg16", width=0.25)
    a = pruners.prune(copy.deepcopy(model), "rand", 1, seed=1)
    b = pruners.prune(copy.deepcopy(model), "rand", 1, seed=2)
    again = pruners.prune(copy.deepcopy(model), "rand", 1, seed=1)
    assert kept(a) == kept(b) == round(0.1 * total(model))
    assert any(not torch.equal(a[n], b[n]) for n in a)
    assert all(torch.equal(a[n], again[n]) for n in a)


def test_snip_is_the_finite_difference_derivative_wrt_a_mask_entry():
    net, batches, h = tiny_convnet(), tiny_batches(), 1e-6
    scores = pruners.score(net, "snip", batches)
    g = torch.Generator().manual_seed(0)
    for name, w in masks.prunable(net).items():
        for flat in torch.randint(0, w.numel(), (5,), generator=g).tolist():
            losses = []
            for m in (1 + h, 1 - h):  # the mask entry m multiplies the weight: w * m
                probe = copy.deepcopy(net)
                with torch.no_grad():
                    masks.prunable(probe)[name].view(-1)[flat] *= m
                losses.append(summed_loss(probe, batches).item())
            derivative = (losses[0] - losses[1]) / (2 * h)
            assert scores[name].view(-1)[flat].item() == pytest.approx(abs(derivative),
                                                                       rel=1e-5, abs=1e-10)


def finite_difference_hg(net, batches, eps=1e-5, temperature=200.0):
    """H g ~ (grad L(w + eps g) - grad L(w - eps g)) / (2 eps), g the summed gradient."""
    g = gradient(net, batches, temperature)
    grads = []
    for sign in (1, -1):
        probe = copy.deepcopy(net)
        with torch.no_grad():
            for n, w in masks.prunable(probe).items():
                w += sign * eps * g[n]
        grads.append(gradient(probe, batches, temperature))
    return {n: (grads[0][n] - grads[1][n]) / (2 * eps) for n in g}


def test_grasp_hessian_gradient_product_matches_finite_differences():
    net, batches = tiny_convnet(), tiny_batches()
    hg = finite_difference_hg(net, batches)
    scores = pruners.score(net, "grasp", batches)
    for name, w in masks.prunable(net).items():
        expected = w.detach() * hg[name]
        assert torch.allclose(scores[name], expected, rtol=1e-4, atol=1e-9 * expected.abs().max())


def test_grasp_keeping_highest_w_hg_equals_removing_largest_minus_w_hg():
    net, batches = tiny_convnet(), tiny_batches()
    hg = finite_difference_hg(net, batches)
    paper = {n: -w.detach() * hg[n] for n, w in masks.prunable(net).items()}  # GraSP's S(-w)
    flat = torch.cat([s.flatten() for s in paper.values()])
    k = round(10 ** -0.5 * flat.numel())
    removed = flat.argsort(descending=True)[: flat.numel() - k]  # remove the largest -w * Hg
    expected = torch.ones_like(flat, dtype=torch.bool)
    expected[removed] = False
    got = pruners.prune(net, "grasp", 0.5, batches)
    assert torch.equal(torch.cat([m.flatten() for m in got.values()]), expected)


def plain_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7, bias=False), nn.ReLU(), nn.Linear(7, 6, bias=False),
                         nn.ReLU(), nn.Linear(6, 3, bias=False))


def test_synflow_conserves_flow_in_every_layer_and_matches_the_closed_form():
    net = plain_net()
    w1, w2, w3 = (layer.weight.detach().abs().double() for layer in net[::2])
    r = (w3 @ w2 @ w1 @ torch.ones(5, dtype=torch.float64)).sum()
    scores = pruners.score(net, "synflow", input_shape=(5,))
    for name, s in scores.items():
        assert s.sum().item() == pytest.approx(r.item(), rel=1e-5), name
    # last layer: |w3_kj| times the flow reaching unit j
    expected = w3 * (w2 @ w1 @ torch.ones(5, dtype=torch.float64))[None, :]
    assert torch.allclose(scores["4.weight"].double(), expected, rtol=1e-5)


def deep_linear_net(depth, value=10.0):
    net = nn.Sequential(*[nn.Linear(20, 20, bias=False) for _ in range(depth)])
    for layer in net:
        nn.init.constant_(layer.weight, value)
    return net


def test_synflow_falls_back_to_float64_and_says_when_even_that_overflows():
    # R = 20 * 200**30 ~ 1e70: beyond float32 (3e38), well inside float64
    scores = pruners.score(deep_linear_net(30), "synflow", input_shape=(20,))
    assert all(torch.isfinite(s).all() for s in scores.values())
    assert next(iter(scores.values())).dtype == torch.float64
    with pytest.raises(FloatingPointError, match="overflow even in float64"):
        pruners.score(deep_linear_net(200), "synflow", input_shape=(20,))


def test_synflow_scores_of_vgg16_at_initialization_are_finite():
    torch.manual_seed(0)
    scores = pruners.score(models.build("vgg16"), "synflow")
    assert all(torch.isfinite(s).all() and (s > 0).any() for s in scores.values())


def test_iterative_synflow_avoids_layer_collapse_where_magnitude_does_not():
    torch.manual_seed(0)
    model = models.build("vgg16")
    magnitude = pruners.prune(copy.deepcopy(model), "mag", 3)
    assert min(int(m.sum()) for m in magnitude.values()) == 0  # some layer lost every weight
    synflow = pruners.prune(model, "synflow", 3)  # 100 rounds by default
    assert min(int(m.sum()) for m in synflow.values()) >= 1
    assert kept(synflow) == round(1e-3 * total(model))


# ----------------------------------------------------------------------------- pruning

def test_exact_kept_counts_at_every_survey_compression_on_vgg16():
    torch.manual_seed(0)
    model = models.build("vgg16")
    n = total(model)
    batch = [(torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,)))]
    alive = masks.get(model)
    for method in pruners.METHODS:  # one scoring per method, every compression from it
        scores = pruners.score(model, method, batch, seed=0)
        for c in SURVEY:
            for scope in pruners.SCOPES:
                got = pruners.select(scores, alive, 10**-c, scope)
                if scope == "global":
                    assert kept(got) == round(10**-c * n), (method, c)
                else:
                    assert all(int(got[k].sum()) == round(10**-c * v.numel())
                               for k, v in got.items()), (method, c)
    for method in pruners.METHODS:  # and end to end
        m = copy.deepcopy(model)
        iterations = 4 if method == "synflow" else None
        pruners.prune(m, method, 1, batch, iterations=iterations, seed=0)
        assert round(masks.density(m) * n) == round(0.1 * n)
        assert all(torch.count_nonzero(w[~masks.get(m)[k]]) == 0
                   for k, w in masks.prunable(m).items())


def test_global_and_local_scope_differ_as_they_should():
    torch.manual_seed(0)
    model = models.build("vgg16", width=0.25)
    local = pruners.prune(copy.deepcopy(model), "mag", 1, scope="local")
    assert all(int(m.sum()) == round(0.1 * m.numel()) for m in local.values())
    glob = pruners.prune(copy.deepcopy(model), "mag", 1, scope="global")
    densities = [int(m.sum()) / m.numel() for m in glob.values()]
    assert max(densities) > 0.3 and min(densities) < 0.1  # one threshold: uneven layers
    threshold = min(model.state_dict()[n][m].abs().min() for n, m in glob.items())
    pruned_max = max(model.state_dict()[n][~m].abs().max() for n, m in glob.items())
    assert pruned_max <= threshold


def recorded_rounds(monkeypatch) -> list:
    """The masks each round of a pruning attaches, in order, once the pruning has run."""
    rounds = []
    attach = masks.attach
    monkeypatch.setattr(masks, "attach", lambda mdl, m: (rounds.append(m), attach(mdl, m)))
    return rounds


def test_rounds_follow_the_exponential_schedule_and_masks_are_nested(monkeypatch):
    torch.manual_seed(0)
    model = models.build("vgg16", width=0.25)
    n = total(model)
    rounds = recorded_rounds(monkeypatch)
    batch = [(torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,)))]
    pruners.prune(model, "snip", 2, batch, iterations=4)
    assert [kept(m) for m in rounds] == [round(10 ** (-2 * r / 4) * n) for r in range(1, 5)]
    for earlier, later in zip(rounds, rounds[1:]):
        assert all(torch.equal(later[k] & ~earlier[k], torch.zeros_like(later[k]))
                   for k in later)


def synaptic_flow_global_mask(scores: dict, density: float) -> dict:
    """Synaptic-Flow's own global masking, written out: prune the ``int((1 - d) * N)`` lowest
    scores (those at or below the k-th smallest), keep the rest."""
    flat = torch.cat([s.flatten() for s in scores.values()])
    k = int((1.0 - density) * flat.numel())
    threshold = flat.kthvalue(k).values
    return {n: s > threshold for n, s in scores.items()}


def test_rounding_up_keeps_what_synaptic_flows_code_keeps():
    g = torch.Generator().manual_seed(0)
    scores = {"a": torch.rand(7, 11, generator=g), "b": torch.rand(5, 3, 3, generator=g)}
    alive = {n: torch.ones_like(s, dtype=torch.bool) for n, s in scores.items()}
    n = sum(s.numel() for s in scores.values())
    differs = 0
    for density in (0.9, 0.5, 0.31, 0.1, 0.05, 0.012):
        up = pruners.select(scores, alive, density, rounding="up")
        theirs = synaptic_flow_global_mask(scores, density)
        assert all(torch.equal(up[k], theirs[k]) for k in up), density
        nearest = pruners.select(scores, alive, density)
        assert kept(nearest) <= kept(up) <= kept(nearest) + 1  # one weight more at most
        assert all(torch.equal(up[k] & nearest[k], nearest[k]) for k in up)  # and nested
        differs += kept(up) != kept(nearest)
        assert kept(up) == n - int((1 - density) * n) == pruners.kept_count(density, n, "up")
    assert differs  # the densities above include some where the two conventions part


def test_every_round_of_rounding_up_keeps_one_weight_more_at_most(monkeypatch):
    torch.manual_seed(0)
    model = models.build("vgg16", width=0.25)
    n = total(model)
    rounds = recorded_rounds(monkeypatch)
    pruners.prune(model, "synflow", 2, iterations=10, rounding="up")
    counts = [kept(m) for m in rounds]
    densities = [10 ** (-2 * r / 10) for r in range(1, 11)]
    assert counts == [n - int((1 - d) * n) for d in densities]
    assert all(0 <= got - round(d * n) <= 1 for got, d in zip(counts, densities))
    with pytest.raises(ValueError, match="unknown rounding 'down'; known: nearest, up"):
        pruners.prune(model, "mag", 1, rounding="down")


def test_pruning_never_revives_a_pruned_weight_and_compression_zero_keeps_all():
    model = models.build("vgg16", width=0.25)
    first = pruners.prune(model, "mag", 1)
    second = pruners.prune(model, "rand", 0.5, seed=0)  # asks for more than is alive
    assert all(torch.equal(first[k], second[k]) for k in first)
    fresh = models.build("vgg16", width=0.25)
    assert kept(pruners.prune(fresh, "rand", 0, seed=0)) == total(fresh)


def test_invert_keeps_the_lowest_scores():
    model = models.build("vgg16", width=0.25)
    weights = {n: w.detach().clone() for n, w in masks.prunable(model).items()}
    inverted = pruners.prune(model, "mag", 1, invert=True)
    kept_max = max(weights[n][m].abs().max() for n, m in inverted.items())
    pruned_min = min(weights[n][~m].abs().min() for n, m in inverted.items())
    assert kept_max <= pruned_min and kept(inverted) == round(0.1 * total(model))


def test_the_per_layer_inversion_keeps_each_layers_count_of_its_lowest_scores():
    scores = {"a": torch.tensor([[3.0, 1.0, 2.0, 1.0]]), "b": torch.tensor([5.0, 4.0, 6.0])}
    chosen = pruners.invert_within_layers(scores, {"a": 2, "b": 1})
    assert chosen["a"].tolist() == [[False, True, False, True]]  # the two 1s, ties to the lower
    assert chosen["b"].tolist() == [False, True, False]
    model = models.build("vgg16", width=0.25)
    weights = {n: w.detach().clone() for n, w in masks.prunable(model).items()}
    plain = pruners.prune(model, "mag", 1)
    counts = {n: int(m.sum()) for n, m in plain.items()}
    inverted = pruners.invert_within_layers({n: w.abs() for n, w in weights.items()}, counts)
    for name, mask in inverted.items():  # the method's count per layer, its lowest magnitudes
        assert int(mask.sum()) == counts[name]
        assert weights[name][mask].abs().max() <= weights[name][~mask].abs().min()


def test_layerwise_shuffle_keeps_each_layers_count_at_new_positions():
    model = models.build("vgg16", width=0.25)
    original = pruners.prune(model, "mag", 1)
    shuffled = pruners.layerwise_shuffle(original, seed=3)
    for name in original:
        assert int(shuffled[name].sum()) == int(original[name].sum())
        assert not torch.equal(shuffled[name], original[name])
    again = pruners.layerwise_shuffle(original, seed=3)
    assert all(torch.equal(shuffled[n], again[n]) for n in original)


@pytest.mark.parametrize("method", pruners.METHODS)
def test_scoring_leaves_the_model_as_it_found_it(method):
    net, batches = tiny_convnet(), tiny_batches()
    net.train()
    net[0].weight.grad = torch.full_like(net[0].weight, 7.0)
    before = copy.deepcopy(net.state_dict())
    pruners.score(net, method, batches, seed=0)
    assert net.training and all(m.training for m in net.modules())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert torch.all(net[0].weight.grad == 7.0) and net[5].weight.grad is None
    got = pruners.prune(net, method, 0.3, batches, seed=0, iterations=2)
    after = net.state_dict()
    for k, v in before.items():
        assert torch.equal(after[k], v * got[k] if k in got else v), k


def test_bad_input_gets_clear_errors():
    model = models.build("vgg16", width=0.25)
    with pytest.raises(ValueError, match="known methods: rand, mag, snip, grasp, synflow"):
        pruners.prune(model, "l1", 1)
    with pytest.raises(ValueError, match="compression must be >= 0"):
        pruners.prune(model, "mag", -0.5)
    with pytest.raises(ValueError, match="compression must be >= 0"):
        pruners.prune(model, "mag", float("nan"))
    with pytest.raises(ValueError, match="fewer than one per prunable layer"):
        pruners.prune(model, "mag", 6)
    with pytest.raises(ValueError, match="keeps no weight of features.0.weight"):
        pruners.prune(model, "mag", 3, scope="local")
    for method in ("snip", "grasp"):
        with pytest.raises(ValueError, match="pass batches"):
            pruners.prune(model, method, 1)
        with pytest.raises(ValueError, match="empty"):
            pruners.prune(model, method, 1, batches=[])
    with pytest.raises(ValueError, match="unknown scope"):
        pruners.prune(model, "mag", 1, scope="layer")
    with pytest.raises(ValueError, match="iterations"):
        pruners.prune(model, "mag", 1, iterations=0)
    assert masks.density(model) == 1.0  # nothing was pruned by a refused call


@pytest.mark.usefixtures("fixed_threads")  # scores computed twice, compared exactly
def test_every_method_is_registered_once_with_its_label_data_need_and_rounds():
    assert list(pruners.METHODS) == ["rand", "mag", "snip", "grasp", "synflow"]
    assert [m.label for m in pruners.METHODS.values()] == ["Rand", "Mag", "SNIP", "GraSP",
                                                           "SynFlow"]
    assert [n for n, m in pruners.METHODS.items() if m.needs_data] == ["snip", "grasp"]
    assert {n: m.iterations for n, m in pruners.METHODS.items()}["synflow"] == 100
    net, batches = tiny_convnet(), tiny_batches()
    for name, method in pruners.METHODS.items():  # score() is the registered function, no more
        with pruners.scoring_mode(net):
            direct = method.scores(net, batches, seed=0, input_shape=None)
        assert all(torch.equal(direct[k], v)
                   for k, v in pruners.score(net, name, batches, seed=0).items()), name


def test_train_mode_batchnorm_scores_with_batch_statistics_and_restores_the_running_ones():
    net, batches = tiny_convnet(), tiny_batches()
    before = copy.deepcopy(net.state_dict())
    train_mode = copy.deepcopy(net).train()  # the loss with each batch's own statistics
    loss = sum(F.cross_entropy(train_mode(x), y) for x, y in batches)
    loss.backward()
    expected = {n: (w.detach() * w.grad).abs() for n, w in masks.prunable(train_mode).items()}
    got = pruners.score(net, "snip", batches, bn_mode="train")
    assert all(torch.allclose(got[n], e, rtol=1e-10) for n, e in expected.items())
    eval_mode = pruners.score(net, "snip", batches)
    assert not torch.allclose(eval_mode["0.weight"], got["0.weight"])  # the mode matters here
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # stats restored
    with pytest.raises(ValueError, match="methods that score on data"):
        pruners.score(net, "mag", bn_mode="train")
    with pytest.raises(ValueError, match="unknown BatchNorm mode"):
        pruners.score(net, "snip", batches, bn_mode="frozen")
