"""Frechet distance between two Gaussians fitted to feature sets (FID, FVD, E-FID; paper 4.2).

    d^2 = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2})

Computed in float64. The trace of the matrix square root is taken through the symmetric form
(S1^{1/2} S2 S1^{1/2})^{1/2}, whose eigenvalues equal those of (S1 S2)^{1/2} and are real and
non-negative, so no complex round-off appears; `scipy.linalg.sqrtm` of S1 S2 with the usual
eps offset on the diagonals (the pytorch-fid recipe) is kept as `method="sqrtm"` for cross-checks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import linalg

from emoportrait.errors import EMOError


@dataclass
class GaussianStats:
    """Mean (D,) and covariance (D, D) of a feature set, float64, with the sample count."""

    mu: np.ndarray
    sigma: np.ndarray
    count: int


def feature_stats(features: np.ndarray, name: str = "features") -> GaussianStats:
    """Fit a Gaussian to (N, D) features (unbiased covariance, as pytorch-fid's `np.cov`)."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise EMOError(f"{name}: expected an (N, D) feature array, got shape {x.shape}")
    if x.shape[0] < 2:
        raise EMOError(f"{name}: need at least 2 samples for a covariance, got {x.shape[0]}")
    if not np.isfinite(x).all():
        raise EMOError(f"{name}: features contain NaN or inf")
    return GaussianStats(x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False)), x.shape[0])


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix by eigen-decomposition."""
    w, v = linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray, method: str = "eigh", eps: float = 1e-6) -> float:
    """Tr((S1 S2)^{1/2}) for covariances S1, S2 (D, D).

    method "eigh": symmetric eigen-decomposition (stable, real by construction).
    method "sqrtm": `scipy.linalg.sqrtm(S1 S2)`; if the product is singular (non-finite root),
    retries with eps*I added to both, and drops an imaginary part below 1e-3 (pytorch-fid's recipe).
    """
    s1 = np.asarray(sigma1, np.float64)
    s2 = np.asarray(sigma2, np.float64)
    if method == "eigh":
        r1 = _psd_sqrt(s1)
        m = r1 @ s2 @ r1
        w = linalg.eigvalsh((m + m.T) / 2)
        return float(np.sqrt(np.clip(w, 0, None)).sum())
    if method == "sqrtm":
        covmean = linalg.sqrtm(s1 @ s2)
        if not np.isfinite(covmean).all():
            offset = np.eye(s1.shape[0]) * eps
            covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
        if np.iscomplexobj(covmean):
            if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
                raise EMOError(f"matrix square root has a large imaginary part ({np.max(np.abs(covmean.imag)):.3g})")
            covmean = covmean.real
        return float(np.trace(covmean))
    raise ValueError(f"unknown method {method!r}; use 'eigh' or 'sqrtm'")


def frechet_distance(mu1, sigma1, mu2, sigma2, method: str = "eigh") -> float:
    """Squared Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), float64.

    Args:
        mu1, mu2: (D,) means.
        sigma1, sigma2: (D, D) covariances.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise EMOError(f"feature dimensions differ: means {mu1.shape} vs {mu2.shape}, covariances {sigma1.shape} vs {sigma2.shape}")
    diff = mu1 - mu2
    d = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product(sigma1, sigma2, method)
    return float(max(d, 0.0))


def frechet_distance_features(a: np.ndarray, b: np.ndarray, method: str = "auto") -> float:
    """Frechet distance between the Gaussians fitted to two (N, D) feature sets.

    method "auto": with fewer samples than dimensions (max(N1, N2) <= D) the exact low-rank form
    below, else "eigh". With S_i = A_i^T A_i (A_i = centred features / sqrt(N_i - 1)), the
    non-zero eigenvalues of S1 S2 are those of (A1 A2^T)(A1 A2^T)^T, so
    Tr((S1 S2)^1/2) = nuclear norm of A1 A2^T, an (N1, N2) matrix: exact, and O(N1 N2 D)
    instead of O(D^3) (2048-d Inception features of a few hundred frames).
    """
    sa, sb = feature_stats(a, "first feature set"), feature_stats(b, "second feature set")
    if method != "auto":
        return frechet_distance(sa.mu, sa.sigma, sb.mu, sb.sigma, method)
    xa, xb = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if max(len(xa), len(xb)) > xa.shape[1]:
        return frechet_distance(sa.mu, sa.sigma, sb.mu, sb.sigma, "eigh")
    a1 = (xa - sa.mu) / np.sqrt(len(xa) - 1)  # (N1, D)
    a2 = (xb - sb.mu) / np.sqrt(len(xb) - 1)  # (N2, D)
    tr_sqrt = linalg.svdvals(a1 @ a2.T).sum()
    diff = sa.mu - sb.mu
    d = diff @ diff + (a1 ** 2).sum() + (a2 ** 2).sum() - 2.0 * tr_sqrt
    return float(max(d, 0.0))
