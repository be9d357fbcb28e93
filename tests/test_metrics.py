"""Known-answer tests of the retrieval metrics on hand-computed toy cases."""

import numpy as np
import pytest

from fedstyle_secure.retrieval.metrics import (
    average_precision,
    evaluate_retrieval,
    macro_f1,
    mean_average_precision,
    nearest_neighbour_precision,
    top_k_accuracy,
)


def test_average_precision_hand_computed():
    # ranking: rel, non, rel, non -> precisions at hits: 1/1, 2/3 -> AP = (1 + 2/3) / 2
    sims = np.array([0.9, 0.8, 0.7, 0.1])
    relevant = np.array([True, False, True, False])
    assert average_precision(sims, relevant) == pytest.approx((1 + 2 / 3) / 2)


def test_mean_average_precision_excludes_self():
    labels = np.array([0, 0, 1, 1])
    # perfect block structure: each item's only relevant neighbour ranks first
    sim = np.array([[1, 0.9, 0.1, 0.2], [0.9, 1, 0.3, 0.1], [0.1, 0.3, 1, 0.8], [0.2, 0.1, 0.8, 1.0]])
    assert mean_average_precision(sim, labels) == pytest.approx(1.0)
    # swap: item 0's relevant neighbour ranked last of 3 -> AP 1/3 for it
    sim2 = sim.copy()
    sim2[0] = [1, 0.0, 0.5, 0.6]
    assert mean_average_precision(sim2, labels) == pytest.approx((1 / 3 + 1 + 1 + 1) / 4)


def test_macro_f1_hand_computed():
    labels = np.array([0, 0, 1, 1])
    predicted = np.array([0, 1, 1, 1])
    # class 0: tp=1, |true|=2, |pred|=1 -> 2/3; class 1: tp=2, |true|=2, |pred|=3 -> 4/5
    assert macro_f1(predicted, labels, 2) == pytest.approx((2 / 3 + 4 / 5) / 2)


def test_top_k_and_nearest_neighbour():
    scores = np.array([[0.1, 0.9, 0.5], [0.8, 0.1, 0.3]])
    labels = np.array([2, 0])
    assert top_k_accuracy(scores, labels, 1) == pytest.approx(0.5)
    assert top_k_accuracy(scores, labels, 2) == pytest.approx(1.0)
    sim = np.array([[1.0, 0.2, 0.9], [0.2, 1.0, 0.1], [0.9, 0.1, 1.0]])
    assert nearest_neighbour_precision(sim, np.array([0, 1, 0])) == pytest.approx(2 / 3)


def test_evaluate_retrieval_perfect_and_chance_shapes():
    labels = np.repeat(np.arange(3), 4)
    scores = np.eye(3)[labels]
    sim = (labels[:, None] == labels[None, :]).astype(float)
    m = evaluate_retrieval(scores, sim, labels)
    assert m.artist_accuracy == 1.0 and m.macro_f1 == 1.0 and m.map == pytest.approx(1.0)
