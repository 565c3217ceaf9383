"""The gradient-surgery strategies of `ranker.balancing` (pcgrad, mgda, cagrad, db_mtl): their
coefficients c on hand-computed gradients G, checked through the update G^T c they make, numpy
references where the solution is an optimum (grids over the simplex), and a short fit with each."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

from ranker import balancing
from ranker.balancing.base import Balancer
from ranker.errors import ConfigError
from ranker.keras_compat import tf

SURGERY = {"pcgrad": "shared", "mgda": "representation", "cagrad": "shared", "db_mtl": "shared"}


def _strategy(
    spec: str | dict[str, Any], tasks: int, weights: dict[str, float] | None = None
) -> Balancer:
    """The strategy `spec` names over tasks t0, t1, ..., built as the model builds it (by name)."""
    return balancing.build(spec, [f"t{k}" for k in range(tasks)], weights or {})


def _combine(strategy: Balancer, gradients: Any, losses: Any) -> tuple[np.ndarray, np.ndarray]:
    """(c, the update G^T c) for the task gradients G [T, P] and losses [T]."""
    grads = np.asarray(gradients, np.float32)
    c = strategy.combine(tf.constant(grads), tf.constant(losses, tf.float32)).numpy()
    return c, grads.T @ c


def test_the_surgery_strategies_are_registered_with_their_gradients() -> None:
    assert set(SURGERY) <= set(balancing.names())
    assert {name: balancing.get(name).gradients for name in SURGERY} == SURGERY


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"name": "mgda", "normalization": "l1"}, "normalization"),
        ({"name": "mgda", "iterations": 0}, "iterations"),
        ({"name": "cagrad", "c": -0.1}, "c"),
        ({"name": "cagrad", "rescale": 3}, "rescale"),
        ({"name": "db_mtl", "beta": 1.0}, "beta"),
        ({"name": "db_mtl", "beta_sigma": -1}, "beta_sigma"),
    ],
)
def test_a_hyperparameter_out_of_bounds_is_an_error_naming_it(spec: Any, field: str) -> None:
    with pytest.raises(ConfigError, match=rf"\({spec['name']}\): {field}"):
        balancing.parse(spec)


# ---- PCGrad ---------------------------------------------------------------------------------------


def _pcgrad_reference(grads: np.ndarray, orders: list[list[int]]) -> np.ndarray:
    """PCGrad's update as the paper writes it, task i projected in `orders[i]`."""
    update = np.zeros(grads.shape[1])
    for i, order in enumerate(orders):
        projected = grads[i].copy()
        for j in order:
            dot = projected @ grads[j]
            if j != i and dot < 0:
                projected -= dot / (grads[j] @ grads[j]) * grads[j]
        update += projected
    return update


def test_pcgrad_projects_two_conflicting_gradients_off_each_other() -> None:
    # g1 . g2 = -1: g1 - (-1 / 2) g2 = (0.5, 0.5) and g2 - (-1 / 1) g1 = (0, 1)
    grads = [[1.0, 0.0], [-1.0, 1.0]]
    for seed in range(4):  # whichever order the tasks come in
        tf.random.set_seed(seed)
        c, update = _combine(_strategy("pcgrad", 2), grads, [0.7, 0.2])
        np.testing.assert_allclose(c, [2.0, 1.5], rtol=1e-6)
        np.testing.assert_allclose(update, [0.5, 1.5], rtol=1e-6)
    g = np.asarray(grads)
    for orders in ([[0, 1], [0, 1]], [[1, 0], [1, 0]], [[1, 0], [0, 1]]):
        np.testing.assert_allclose(_pcgrad_reference(g, orders), [0.5, 1.5])
    # each projected gradient no longer conflicts: the update helps both tasks
    assert (g @ update > 0).all()


def test_pcgrad_with_fixed_weights_projects_the_weighted_gradients() -> None:
    # 0.5 g2 - (0.5 g2 . g1) g1 = (0, 0.5); g1 is projected off g2's direction as before
    c, update = _combine(_strategy("pcgrad", 2, {"t1": 0.5}), [[1, 0], [-1, 1]], [1, 1])
    np.testing.assert_allclose(c, [1.5, 1.0], rtol=1e-6)
    np.testing.assert_allclose(update, [0.5, 1.0], rtol=1e-6)


def test_pcgrad_without_conflict_is_the_fixed_weights() -> None:
    c, _ = _combine(_strategy("pcgrad", 3, {"t2": 0.25}), [[1, 0], [1, 1], [0, 2]], [1, 1, 1])
    np.testing.assert_allclose(c, [1.0, 1.0, 0.25])


def test_pcgrad_with_three_tasks_is_one_of_the_orders_drawn_at_random() -> None:
    grads = np.array([[1.0, 0.0], [-1.0, 1.0], [-0.2, -1.0]])
    others = [[j for j in range(3) if j != i] for i in range(3)]
    possible = [
        _pcgrad_reference(grads, [list(order) for order in orders])
        for orders in itertools.product(*(itertools.permutations(o) for o in others))
    ]
    assert len({tuple(np.round(p, 6)) for p in possible}) > 1  # the order does matter here
    tf.random.set_seed(0)
    strategy = _strategy("pcgrad", 3)
    seen = set()
    for _ in range(30):
        _, update = _combine(strategy, grads, [1, 1, 1])
        assert min(np.abs(update - p).max() for p in possible) < 1e-5, update
        seen.add(tuple(np.round(update, 5)))
    assert len(seen) > 1  # and it is drawn anew each step


# ---- MGDA ----------------------------------------------------------------------------------------


def test_mgda_finds_the_min_norm_point_of_two_gradients() -> None:
    # min_a |a (1, 0) + (1 - a) (0, 2)|^2 = a^2 + 4 (1 - a)^2: a = 0.8
    strategy = _strategy({"name": "mgda", "normalization": "none"}, 2)
    c, update = _combine(strategy, [[1, 0], [0, 2]], [0.3, 0.6])
    np.testing.assert_allclose(c, [0.8, 0.2], rtol=1e-6)
    np.testing.assert_allclose(update, [0.8, 0.4], rtol=1e-6)
    assert update @ np.array([1.0, -2.0]) == pytest.approx(0.0, abs=1e-6)  # u _|_ g1 - g2


@pytest.mark.parametrize(
    ("normalization", "losses", "expected"),
    [
        ("l2", [0.3, 0.6], [0.5, 0.5]),  # (1, 0) and (0, 1)
        ("loss", [1.0, 4.0], [0.2, 0.8]),  # (1, 0) and (0, 0.5)
        ("loss+", [2.0, 1.0], [0.8, 0.2]),  # / (2 * 1), / (1 * 2): (0.5, 0) and (0, 1)
    ],
)
def test_mgda_normalises_the_gradients_for_the_min_norm_problem_only(
    normalization: str, losses: list[float], expected: list[float]
) -> None:
    strategy = _strategy({"name": "mgda", "normalization": normalization}, 2)
    c, _ = _combine(strategy, [[1, 0], [0, 2]], losses)
    np.testing.assert_allclose(c, expected, rtol=1e-6)  # the paper's code: alpha, not alpha / n


def test_mgda_normalises_without_overflow() -> None:
    # g_k / (L_k ||g_k||) with L = 1e-20 and ||g|| = 1e10: a Gram matrix of those would be 1e40
    strategy = _strategy("mgda", 2)
    c, _ = _combine(strategy, [[1e10, 0], [0, 2e10]], [1e-20, 1e-20])
    np.testing.assert_allclose(c, [0.5, 0.5], rtol=1e-6)


def test_mgda_weights_the_hull_and_the_coefficients() -> None:
    # the hull of (1, 0) and 0.5 (0, 2): alpha = (0.5, 0.5), c = w * alpha
    strategy = _strategy({"name": "mgda", "normalization": "none"}, 2, {"t1": 0.5})
    c, _ = _combine(strategy, [[1, 0], [0, 2]], [1, 1])
    np.testing.assert_allclose(c, [0.5, 0.25], rtol=1e-6)


def test_mgda_leaves_a_task_without_gradient_out_of_the_hull() -> None:
    # a zero gradient is the min-norm point of any hull: it would take all the weight
    strategy = _strategy({"name": "mgda", "normalization": "none"}, 3)
    c, _ = _combine(strategy, [[1, 0], [0, 2], [0, 0]], [1, 1, 0])
    np.testing.assert_allclose(c, [0.8, 0.2, 0.0], rtol=1e-6)


def test_mgda_with_three_tasks_reaches_the_min_norm_of_a_grid_over_the_simplex() -> None:
    grads = np.array([[2.0, 0.2, 0.0], [-0.5, 1.5, 0.5], [0.3, -0.4, 1.0]])
    c, update = _combine(_strategy({"name": "mgda", "normalization": "none"}, 3), grads, [1, 1, 1])
    assert c.min() >= 0 and c.sum() == pytest.approx(1.0, abs=1e-5)
    n = 300
    grid = np.array([(i, j, n - i - j) for i in range(n + 1) for j in range(n + 1 - i)]) / n
    best = np.linalg.norm(grid @ grads, axis=1).min()
    assert best - 1e-3 < np.linalg.norm(update) <= best + 1e-5
    # the min-norm point's optimality: g_k . u >= |u|^2 for every task, = where alpha_k > 0
    assert (grads @ update >= update @ update - 1e-4).all()
    np.testing.assert_allclose((grads @ update)[c > 1e-3], update @ update, rtol=1e-3)


# ---- CAGrad --------------------------------------------------------------------------------------


def _cagrad_reference(
    grads: np.ndarray, c: float, grid: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(CAGrad's d with rescale 1, the dual's x) with x the best of `grid` (rows in the simplex),
    as the official code writes them."""
    g0 = grads.mean(axis=0)
    radius = c * np.linalg.norm(g0)
    gx = grid @ grads
    x = grid[np.argmin(gx @ g0 + radius * np.linalg.norm(gx, axis=1))]
    d = g0 + radius / np.linalg.norm(x @ grads) * (x @ grads)
    return d / (1 + c**2), x


@pytest.mark.parametrize("c", [0.5, 2.0])
def test_cagrad_matches_the_dual_solved_on_a_fine_grid_for_two_tasks(c: float) -> None:
    grads = np.array([[1.0, 0.0], [-0.5, 1.0]])
    t = np.linspace(0.0, 1.0, 100_001)
    d, x = _cagrad_reference(grads, c, np.stack([t, 1 - t], axis=1))
    assert 0.1 < x[0] < 0.9  # the dual's solution is inside the segment, not a vertex
    _, update = _combine(_strategy({"name": "cagrad", "c": c}, 2), grads, [1, 1])
    np.testing.assert_allclose(update, d, atol=1e-4)
    # conflict-averse: the worst task gains more from d than from the mean gradient g0
    assert (grads @ update).min() * (1 + c**2) > (grads @ grads.mean(axis=0)).min()


def test_cagrad_with_three_tasks_matches_a_grid_over_the_simplex() -> None:
    grads = np.array([[2.0, 0.2, 0.0], [-0.5, 1.5, 0.5], [0.3, -0.4, 1.0]])
    n = 400
    grid = np.array([(i, j, n - i - j) for i in range(n + 1) for j in range(n + 1 - i)]) / n
    d, _ = _cagrad_reference(grads, 0.5, grid)
    _, update = _combine(_strategy("cagrad", 3), grads, [1, 1, 1])
    np.testing.assert_allclose(update, d, atol=5e-3)


@pytest.mark.parametrize(("rescale", "divisor"), [(0, 1.0), (1, 1.25), (2, 1.5)])
def test_cagrad_with_c_0_is_the_mean_gradient_rescaled(rescale: int, divisor: float) -> None:
    strategy = _strategy({"name": "cagrad", "c": 0.5, "rescale": rescale}, 2, {"t1": 0.5})
    zero = _strategy({"name": "cagrad", "c": 0.0}, 2, {"t1": 0.5})
    grads = [[1, 0], [-0.5, 1]]
    np.testing.assert_allclose(_combine(zero, grads, [1, 1])[0], [0.5, 0.25], rtol=1e-6)
    # w = (1, 0.5) makes both weighted gradients (1, 0) = g0 = g_x: d = (1 + c) g0 / rescale
    _, aligned = _combine(strategy, [[1, 0], [2, 0]], [1, 1])
    np.testing.assert_allclose(aligned, [1.5 / divisor, 0.0], rtol=1e-6)


# ---- DB-MTL --------------------------------------------------------------------------------------


@pytest.mark.parametrize("beta_sigma", [0.0, 0.5])
def test_db_mtl_scales_the_log_gradients_to_the_largest_average_norm(beta_sigma: float) -> None:
    strategy = _strategy({"name": "db_mtl", "beta_sigma": beta_sigma}, 2, {"t1": 0.5})
    # step 1: log-gradients g / L = (2, 0) and (0, 1); m = 0.1 * (2, 1); t1 scaled up 2x, times w
    c, update = _combine(strategy, [[3, 0], [0, 0.5]], [1.5, 0.5])
    np.testing.assert_allclose(c, [1 / 1.5, 0.5 * 2 / 0.5], rtol=1e-6)
    np.testing.assert_allclose(update, [2.0, 0.5 * 2.0], rtol=1e-6)
    np.testing.assert_allclose(strategy.norms.numpy(), [0.2, 0.1], rtol=1e-6)
    # step 2: the loss scales move to beta * (1.5, 0.5) + (1 - beta) * (1.0, 0.5); the
    # log-gradient norms are the gradient norms (1, 0.5) over them; beta_2 = 0.9 / 2^sigma
    beta = 0.9 / 2**beta_sigma
    scale = beta * np.array([1.5, 0.5]) + (1 - beta) * np.array([1.0, 0.5])
    m = beta * np.array([0.2, 0.1]) + (1 - beta) * np.array([1.0, 0.5]) / scale
    c, _ = _combine(strategy, [[1, 0], [0, 0.5]], [1.0, 0.5])
    np.testing.assert_allclose(strategy.norms.numpy(), m, rtol=1e-6)
    expected = np.array([1.0, 0.5]) * np.minimum(m.max() / m, 10.0) / scale
    np.testing.assert_allclose(c, expected, rtol=1e-5)


def test_db_mtl_caps_the_magnitude_ratio_of_a_fading_task() -> None:
    """A task whose gradient on the shared parameters fades would get an unbounded ratio; it is
    capped at max_ratio (here 10): c_k = w_k * min(max m / m_k, 10) / L_k."""
    strategy = balancing.build({"name": "db_mtl", "beta": 0.0}, ["ctr", "cvr"], {})
    gradients = tf.constant([[3.0, 0.0], [0.0, 1e-6]])
    losses = tf.constant([1.0, 1.0])
    c = strategy.combine(gradients, losses).numpy()
    np.testing.assert_allclose(c, [1.0, 10.0], rtol=1e-5)  # uncapped: 3e6


def test_db_mtl_skips_a_task_without_rows_and_divides_by_the_running_loss_scale() -> None:
    """A CVR batch without clicks has no gradient: coefficient 0, averages kept. A batch whose
    loss is near 0 is divided by the running loss scale, not by ~0."""
    strategy = balancing.build({"name": "db_mtl", "beta": 0.5}, ["ctr", "cvr"], {})
    strategy.combine(tf.constant([[1.0, 0.0], [0.0, 1.0]]), tf.constant([0.5, 0.5]))
    kept = strategy.norms.numpy().copy()
    c = strategy.combine(tf.constant([[1.0, 0.0], [0.0, 0.0]]), tf.constant([0.5, 0.0])).numpy()
    assert c[1] == 0.0 and strategy.norms.numpy()[1] == kept[1]
    c = strategy.combine(tf.constant([[1.0, 0.0], [0.0, 1e-3]]), tf.constant([0.5, 1e-6])).numpy()
    assert c[1] < 10.0 / 0.25  # at most the cap over the running scale (0.25 = 0.5 * 0.5 + ...)
