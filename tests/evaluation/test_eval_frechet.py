"""Frechet distance: closed-form cases and an independent scipy computation."""

import numpy as np
import pytest
from scipy import linalg

from emoportrait.errors import EMOError
from emoportrait.evaluation.frechet import feature_stats, frechet_distance, frechet_distance_features


def _random_spd(rng, d):
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def test_diagonal_gaussians_closed_form():
    # Commuting (diagonal) covariances: d = |mu1-mu2|^2 + sum (sqrt(a_i) - sqrt(b_i))^2.
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
    expected = 1 + 0 + 4 + (1 - 2) ** 2 + (2 - 1) ** 2 + 0
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, abs=1e-10)


def test_scaled_full_covariance_closed_form():
    # S2 = c^2 S1 (non-diagonal): Tr((S1 S2)^1/2) = c Tr(S1), so d = |dmu|^2 + (1-c)^2 Tr(S1).
    rng = np.random.default_rng(0)
    s1 = _random_spd(rng, 6)
    mu1, mu2 = rng.standard_normal(6), rng.standard_normal(6)
    c = 2.5
    expected = np.sum((mu1 - mu2) ** 2) + (1 - c) ** 2 * np.trace(s1)
    assert frechet_distance(mu1, s1, mu2, c * c * s1) == pytest.approx(expected, rel=1e-10)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-9)


def test_matches_independent_scipy_sqrtm():
    rng = np.random.default_rng(1)
    for d in (1, 5, 64):
        s1, s2 = _random_spd(rng, d), _random_spd(rng, d)
        mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
        covmean = linalg.sqrtm(s1 @ s2).real  # independent: the textbook formula
        ref = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean)
        assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-8)
        assert frechet_distance(mu1, s1, mu2, s2, method="sqrtm") == pytest.approx(ref, rel=1e-8)


def test_singular_covariances_feature_sets():
    # Fewer samples than dimensions: rank-deficient covariances must still give finite, symmetric values.
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((10, 50)), rng.standard_normal((12, 50)) + 0.5
    d_ab, d_ba = frechet_distance_features(a, b), frechet_distance_features(b, a)
    assert np.isfinite(d_ab) and d_ab > 0
    assert d_ab == pytest.approx(d_ba, rel=1e-6)
    assert frechet_distance_features(a, a) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance_features(a, b, method="sqrtm") == pytest.approx(d_ab, rel=1e-4)
    # The low-rank (nuclear-norm) path used for N < D equals the full eigen-decomposition.
    assert frechet_distance_features(a, b, method="eigh") == pytest.approx(d_ab, rel=1e-6)
    c = rng.standard_normal((80, 50)) * 2  # N > D: full path
    assert frechet_distance_features(c, b) == pytest.approx(frechet_distance_features(c, b, method="sqrtm"), rel=1e-6)


def test_sample_estimate_converges_to_population_value():
    rng = np.random.default_rng(3)
    s1 = _random_spd(rng, 4)
    x = rng.multivariate_normal(np.zeros(4), s1, size=20000)
    y = rng.multivariate_normal(np.ones(4), 4 * s1, size=20000)
    expected = 4 + (1 - 2) ** 2 * np.trace(s1)
    assert frechet_distance_features(x, y) == pytest.approx(expected, rel=0.05)


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(EMOError, match="at least 2 samples"):
        feature_stats(np.zeros((1, 3)))
    with pytest.raises(EMOError, match="dimensions differ"):
        frechet_distance_features(np.ones((3, 2)) * np.arange(3)[:, None], np.ones((3, 4)) * np.arange(3)[:, None])
    with pytest.raises(EMOError, match="NaN"):
        feature_stats(np.array([[1.0, np.nan], [0.0, 1.0]]))
