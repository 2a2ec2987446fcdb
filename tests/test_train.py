import copy
import dataclasses
import math

import pytest
import torch

from sparse_survey import models
from sparse_survey.train import Recipe, evaluate, fit


def mlp():
    return models.build("mlp", in_channels=1, image_size=8)


def test_fit_learns_digits_and_records_every_epoch(digits):
    train, test = digits
    history = fit(mlp(), train, Recipe(epochs=4, batch_size=64, lr=0.05, schedule="onecycle"),
                  test, progress=False)
    assert not history.diverged and [e["epoch"] for e in history.epochs] == [1, 2, 3, 4]
    assert history.final["test_acc"] > 0.85
    assert history.epochs[-1]["train_loss"] < history.epochs[0]["train_loss"]
    assert all(e["images_per_s"] > 0 for e in history.epochs)


def test_fit_is_reproducible_for_a_seed(digits):
    train, _ = digits
    results = []
    for _ in range(2):
        torch.manual_seed(0)
        model = mlp()
        recipe = Recipe(epochs=1, batch_size=64, lr=0.05, schedule="constant")
        fit(model, train, recipe, seed=5, progress=False)
        results.append(torch.cat([p.flatten() for p in model.parameters()]))
    assert torch.equal(*results)


def test_a_nan_loss_stops_the_run_and_marks_it_diverged(digits):
    train, _ = digits
    recipe = Recipe(epochs=3, batch_size=64, lr=1e12, momentum=0.0, nesterov=False,
                    schedule="constant")
    history = fit(mlp(), train, recipe, progress=False)
    assert history.diverged and "loss became" in history.error
    assert len(history.epochs) < 3


@pytest.mark.parametrize(("schedule", "epoch", "factor"), [
    ("multistep", 59.9, 1.0), ("multistep", 60, 0.1), ("multistep", 150, 0.01),
    ("cosine", 0, 1.0), ("cosine", 80, 0.5), ("cosine", 160, 0.0),
    ("onecycle", 16, 0.5), ("onecycle", 32, 1.0), ("onecycle", 160, 0.0),
    ("constant", 100, 1.0),
])
def test_schedules(schedule, epoch, factor):
    assert math.isclose(Recipe(schedule=schedule).lr_factor(epoch), factor, abs_tol=1e-12)


def test_bad_recipe_is_rejected():
    with pytest.raises(ValueError, match="unknown schedule"):
        Recipe(schedule="step")
    with pytest.raises(ValueError, match="epochs must be a whole number >= 1, got 0"):
        Recipe(epochs=0)
    with pytest.raises(ValueError, match="Nesterov"):
        Recipe(momentum=0.0)


def test_evaluate_counts_correctly_and_restores_the_mode(digits):
    _, test = digits
    model = mlp().train()
    loss, acc = evaluate(model, test, precision="fp32")  # against a float32 computation
    assert model.training
    model.eval()
    with torch.no_grad():
        logits = model((test.images.float() / 255 - test.mean[0]) / test.std[0])
    assert acc == pytest.approx((logits.argmax(1) == test.labels).float().mean().item())
    assert loss == pytest.approx(torch.nn.functional.cross_entropy(logits, test.labels).item(),
                                 rel=1e-5)


def test_compiled_training_runs_and_keeps_masks(digits):
    from sparse_survey import masks

    train, test = digits
    model = mlp()
    masks.attach(model, {n: torch.rand(w.shape) < 0.2 for n, w in masks.prunable(model).items()})
    recipe = Recipe(epochs=1, batch_size=64, lr=0.05, schedule="constant")
    history = fit(model, train, recipe, test, compile=True, progress=False)
    assert not history.diverged and history.final["test_acc"] > 0.3
    assert all(torch.all(w[~masks.get(model)[n]] == 0) for n, w in masks.prunable(model).items())


def test_label_smoothing_trains_on_targets_mixed_with_the_uniform_distribution(digits):
    """One full-batch SGD step with label smoothing e against the same step computed by hand on
    the targets (1 - e) * one-hot + e / K (no augmentation, so the batch is known)."""
    train = dataclasses.replace(digits[0], crop_padding=0, flip=False)
    eps, lr = 0.2, 0.5
    model = mlp()
    by_hand = copy.deepcopy(model)
    recipe = Recipe(epochs=1, batch_size=len(train), lr=lr, momentum=0.0, nesterov=False,
                    weight_decay=0.0, schedule="constant", label_smoothing=eps)
    fit(model, train, recipe, progress=False, precision="fp32")
    x = (train.images.float() / 255 - train.mean[0]) / train.std[0]
    k = len(train.classes)
    targets = (1 - eps) * torch.nn.functional.one_hot(train.labels, k) + eps / k
    loss = -(targets * by_hand(x).log_softmax(1)).sum(1).mean()
    loss.backward()
    with torch.no_grad():
        for p in by_hand.parameters():
            p -= lr * p.grad
    for mine, theirs in zip(model.parameters(), by_hand.parameters()):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="label_smoothing must lie in"):
        Recipe(label_smoothing=1.0)
    with pytest.raises(ValueError, match="label_smoothing must lie in"):
        Recipe(label_smoothing=float("nan"))
