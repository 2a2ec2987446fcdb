import pytest
import torch

from sparse_survey import masks, models
from sparse_survey.train import Recipe, fit


def random_masks(model, density=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {n: torch.rand(w.shape, generator=g) < density for n, w in masks.prunable(model).items()}


def test_prunable_weights_are_conv_and_linear_weights_only():
    model = models.build("resnet20")
    names = list(masks.prunable(model))
    assert names[0] == "conv.weight" and names[-1] == "fc.weight"
    assert all(n.endswith(".weight") and "bn" not in n for n in names)
    assert len(names) == 1 + 18 + 1


def test_masked_weights_stay_exactly_zero_through_sgd_with_momentum_and_weight_decay():
    model = models.build("mlp", in_channels=1, image_size=8)
    m = random_masks(model)
    masks.attach(model, m)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True,
                                weight_decay=5e-4)
    for _ in range(20):
        x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        masks.apply(model)
    for name, w in masks.prunable(model).items():
        assert torch.all(w[~m[name]] == 0), name
        assert torch.count_nonzero(w[m[name]]) == m[name].sum()  # kept weights did train


def test_fit_keeps_pruned_weights_zero(digits):
    train, test = digits
    model = models.build("mlp", in_channels=1, image_size=8)
    m = random_masks(model, 0.1)
    masks.attach(model, m)
    before = {n: w.clone() for n, w in masks.prunable(model).items()}
    fit(model, train, Recipe(epochs=2, batch_size=64, lr=0.1, weight_decay=5e-4,
                             schedule="constant"), progress=False)
    for name, w in masks.prunable(model).items():
        assert torch.all(w[~m[name]] == 0)
        assert not torch.equal(w[m[name]], before[name][m[name]])


def test_density_accounting_is_exact():
    model = models.build("vgg16", width=0.25)
    m = random_masks(model, 0.2)
    masks.attach(model, m)
    kept = sum(int(v.sum()) for v in m.values())
    total = sum(v.numel() for v in m.values())
    assert masks.density(model) == kept / total
    assert masks.layer_densities(model) == {n: int(v.sum()) / v.numel() for n, v in m.items()}
    everything = sum(p.numel() for p in model.parameters())
    assert masks.remaining_fraction(model) == (everything - (total - kept)) / everything
    for name, w in masks.prunable(model).items():
        assert torch.equal(w != 0, m[name] & (w != 0))


def test_unmasked_model_is_dense_and_detach_removes_masks():
    model = models.build("mlp", in_channels=1, image_size=8)
    assert masks.density(model) == 1.0 and masks.remaining_fraction(model) == 1.0
    masks.attach(model, random_masks(model))
    assert "net.1.weight_mask" in model.state_dict()
    masks.remove(model)
    assert masks.density(model) == 1.0


def test_attach_rejects_wrong_names_and_shapes():
    model = models.build("mlp", in_channels=1, image_size=8)
    with pytest.raises(KeyError, match="net.1.bias"):
        masks.attach(model, {"net.1.bias": torch.ones(300, dtype=torch.bool)})
    with pytest.raises(ValueError, match="shape"):
        masks.attach(model, {"net.1.weight": torch.ones(3, 3, dtype=torch.bool)})


def test_empty_units_counts_the_filters_and_rows_that_keep_no_weight():
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.Flatten(),
                                torch.nn.Linear(4, 3))
    conv = torch.ones(4, 2, 3, 3, dtype=torch.bool)
    conv[1] = False  # filter 1 keeps nothing
    conv[3] = False
    conv[3, 1, 2, 0] = True  # filter 3 keeps one weight: alive
    linear = torch.tensor([[0, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    masks.attach(model, {"0.weight": conv, "2.weight": linear})
    assert masks.empty_units(model) == {"0.weight": 1, "2.weight": 2}
    masks.remove(model)
    assert masks.empty_units(model) == {"0.weight": 0, "2.weight": 0}
