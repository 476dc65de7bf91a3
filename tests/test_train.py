"""Losses that train inference, and the fit loop."""

import logging

import numpy as np
import pytest
import torch
from helpers import grid
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import pgmunfold as pu
from pgmunfold.models import LayeredBinaryMRF
from pgmunfold.train import (
    binary_log_marginals,
    evaluate,
    fit,
    map_hinge_loss,
    marginal_cross_entropy,
    marginal_mse,
)

F64 = torch.float64


def test_binary_log_marginals():
    h = torch.tensor([-200.0, -3.0, 0.0, 2.5, 200.0])
    lm = binary_log_marginals(h)
    assert lm.shape == (5, 2) and torch.isfinite(lm).all()
    torch.testing.assert_close(lm.exp().sum(-1), torch.ones(5))
    torch.testing.assert_close(lm[:, 1].exp(), torch.sigmoid(h))


def test_cross_entropy_matches_nll_and_soft_targets():
    torch.manual_seed(0)
    lm = torch.log_softmax(torch.randn(4, 6, 3), -1)
    y = torch.randint(0, 3, (4, 6))
    ref = nn.functional.nll_loss(lm.reshape(-1, 3), y.reshape(-1))
    torch.testing.assert_close(marginal_cross_entropy(lm, y), ref)
    onehot = nn.functional.one_hot(y, 3).double()
    torch.testing.assert_close(marginal_cross_entropy(lm.double(), onehot), ref.double())
    per = marginal_cross_entropy(lm, y, reduction="none")
    assert per.shape == (4, 6)
    torch.testing.assert_close(marginal_cross_entropy(lm, y, reduction="sum"), per.sum())
    # mask and ignore_index select the variables that count
    mask = torch.zeros(4, 6)
    mask[:, :2] = 1
    torch.testing.assert_close(marginal_cross_entropy(lm, y, mask=mask), per[:, :2].mean())
    y2 = y.clone()
    y2[:, 2:] = -100
    torch.testing.assert_close(marginal_cross_entropy(lm, y2), per[:, :2].mean())
    torch.testing.assert_close(marginal_cross_entropy(lm, y, mask=torch.ones(6)), per.mean())


def test_loss_input_errors():
    lm = torch.log_softmax(torch.randn(2, 3, 2), -1)
    with pytest.raises(ValueError, match=r"integer targets must have shape \(2, 3\)"):
        marginal_cross_entropy(lm, torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="soft targets must have"):
        marginal_mse(lm, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="out of range"):
        marginal_cross_entropy(lm, torch.full((2, 3), 2))
    with pytest.raises(ValueError, match="integer states"):
        map_hinge_loss(lm, torch.zeros(2, 3, 2))
    with pytest.raises(ValueError, match="does not broadcast"):
        marginal_cross_entropy(lm, torch.zeros(2, 3, dtype=torch.long), mask=torch.ones(4))
    with pytest.raises(ValueError, match="reduction must be"):
        marginal_mse(lm, torch.zeros(2, 3, dtype=torch.long), reduction="max")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="expected Beliefs"):
        marginal_mse(np.zeros((2, 2)), torch.zeros(2, dtype=torch.long))  # type: ignore[arg-type]


def test_mse_and_beliefs_input_with_padded_states():
    fg = pu.FactorGraph()
    fg.add_variable("a", 2)
    fg.add_variable("b", 3)
    fg.add_factor(("a", "b"), np.arange(6.0).reshape(2, 3) / 5)
    net = pu.compile(fg, iterations=3, dtype=F64)
    out = net(unary={"a": torch.zeros(4, 2, dtype=F64)})  # batch of 4
    y = torch.tensor([[1, 2]] * 4)
    probs = out.probs
    ref = ((probs - nn.functional.one_hot(y, 3)) ** 2).sum(-1).mean()
    torch.testing.assert_close(marginal_mse(out, y), ref)
    torch.testing.assert_close(marginal_mse(out, nn.functional.one_hot(y, 3).double()), ref)
    ce = marginal_cross_entropy(out, y)
    ce.backward()
    p = next(iter(net.potentials.values()))
    assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_map_hinge_loss_values_and_training_a_max_product_net():
    lm = torch.log(torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.2, 0.7]]))
    y = torch.tensor([0, 0])
    per = map_hinge_loss(lm, y, margin=1.0, reduction="none")
    torch.testing.assert_close(per[0], torch.relu(1 + lm[0, 1] - lm[0, 0]))
    torch.testing.assert_close(per[1], 1 + lm[1, 2] - lm[1, 0])
    assert float(map_hinge_loss(lm, y, margin=0.0, reduction="none")[0]) == 0.0
    # a 3-variable chain: training the potentials with the hinge loss fixes the MAP decode
    fg = pu.FactorGraph()
    x = fg.add_variables("x", 3, 2)
    pairs = np.stack([x.ids[:-1], x.ids[1:]], -1)
    fg.add_factors(pairs, np.array([[0.3, -0.3], [-0.3, 0.3]]), name="pair")
    fg.add_factors(x.ids[:, None], np.zeros((3, 2)), name="bias")
    net = pu.compile(fg, iterations=3, semiring="max", dtype=F64)
    unary = torch.tensor([[[0.0, 0.5], [0.0, 0.6], [0.0, 0.2]]], dtype=F64)
    target = torch.tensor([[0, 0, 0]])
    assert net(unary={x: unary}).map_states.tolist() == [[1, 1, 1]]
    opt = torch.optim.SGD(net.parameters(), lr=0.2)
    for _ in range(20):
        opt.zero_grad()
        loss = map_hinge_loss(net(unary={x: unary}), target, margin=0.5)
        loss.backward()
        opt.step()
    assert float(loss) == 0.0
    assert torch.equal(net(unary={x: unary}).map_states, target)


def _teacher_task(seed=0, n=256):
    gen = torch.Generator().manual_seed(seed)
    teacher = LayeredBinaryMRF([8, 6, 3])
    with torch.no_grad():
        for w in teacher.weights:
            w.copy_(3 * torch.randn(w.shape, generator=gen))
    x = torch.rand(n, 8, generator=gen)
    y = (teacher.unfold("mf")(x) > 0.5).long().detach()
    return x, y


def _layered_loss(net, batch):
    x, y = batch
    return marginal_cross_entropy(binary_log_marginals(net.log_odds(x)), y)


def test_fit_reduces_loss_on_a_fixed_seed(caplog):
    torch.manual_seed(0)
    x, y = _teacher_task()
    train = DataLoader(TensorDataset(x[:192], y[:192]), batch_size=32, shuffle=True)
    val = DataLoader(TensorDataset(x[192:], y[192:]), batch_size=64)
    student = LayeredBinaryMRF([8, 6, 3])
    net = student.unfold("mf", sweeps=2, untie=True)
    with caplog.at_level(logging.INFO, logger="pgmunfold.train"):
        hist = fit(net, _layered_loss, train, val, epochs=15, lr=0.05, progress=False)
    assert len(hist) == 15 and set(hist[0]) == {"epoch", "train_loss", "val_loss", "seconds", "lr"}
    assert hist[-1]["train_loss"] < 0.6 * hist[0]["train_loss"]
    assert min(h["val_loss"] for h in hist) < 0.6 * hist[0]["val_loss"]
    assert "epoch 1/15: train_loss=" in caplog.text
    # restore_best: the final weights are the best validation epoch's
    assert evaluate(net, _layered_loss, val) == pytest.approx(min(h["val_loss"] for h in hist))
    assert net.training


def test_fit_trains_an_engine_network():
    torch.manual_seed(1)
    fg, x = grid(3, k=2, coupling=0.1, seed=3)
    net = pu.compile(fg, iterations=3, untie=True, dtype=F64)
    clean = torch.randint(0, 2, (64, 3, 3))
    noisy = nn.functional.one_hot(clean, 2).double() * 2.0 + torch.randn(64, 3, 3, 2, dtype=F64)
    loader = DataLoader(TensorDataset(noisy, clean), batch_size=16)

    def loss(m, b):
        return marginal_cross_entropy(m(unary={x: b[0]}).log_marginals, b[1].reshape(-1, 9))

    hist = fit(net, loss, loader, epochs=8, lr=0.05, progress=False)
    assert hist[-1]["train_loss"] < 0.9 * hist[0]["train_loss"]


def test_early_stopping_and_restore_best():
    p = nn.Parameter(torch.zeros(()))
    model = nn.Module()
    model.p = p

    def loss(m, batch):  # training pulls p to 5; validation prefers p = 0
        return (m.p - 5) ** 2 if batch == "train" else m.p**2

    opt = torch.optim.SGD([p], lr=0.1)
    hist = fit(
        model, loss, ["train"], ["val"], epochs=10, optimizer=opt, patience=2, progress=False
    )
    assert [h["epoch"] for h in hist] == [1, 2, 3]  # val loss rose twice after epoch 1
    np.testing.assert_allclose([h["val_loss"] for h in hist], [1.0, 1.8**2, 2.44**2], rtol=1e-5)
    assert float(p) == pytest.approx(1.0)  # restored to epoch 1
    # without validation the training loss is monitored; it keeps improving here
    hist = fit(model, loss, ["train"], epochs=3, optimizer=opt, patience=1, progress=False)
    assert len(hist) == 3


def test_fit_progress_bar_and_errors(capsys):
    pytest.importorskip("tqdm")
    model = nn.Linear(1, 1)
    data = [(torch.ones(2, 1), torch.zeros(2, 1))]

    def loss(m, b):
        return ((m(b[0]) - b[1]) ** 2).mean()

    fit(model, loss, data, epochs=2, progress=True)
    assert "fit" in capsys.readouterr().err
    with pytest.raises(ValueError, match="epochs must be"):
        fit(model, loss, data, epochs=0)
    with pytest.raises(ValueError, match="patience must be"):
        fit(model, loss, data, patience=0)
    with pytest.raises(ValueError, match="no batches"):
        fit(model, loss, [], epochs=1, progress=False)
    with pytest.raises(FloatingPointError, match="training loss is nan"):
        fit(model, lambda m, b: m(b[0]).sum() * float("nan"), data, epochs=1, progress=False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        fit(nn.Sigmoid(), loss, data, progress=False)
