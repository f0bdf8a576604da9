from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.base import clone
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from surrogates import (
    AutoSurrogate,
    BoostingSurrogate,
    EnsembleSurrogate,
    ForestSurrogate,
    GPSurrogate,
    HawqProxy,
    default_candidates,
)


def _small_candidates():
    return [
        ("forest", ForestSurrogate(n_estimators=10)),
        ("hawq", HawqProxy()),
    ]


ESTIMATORS = [
    GPSurrogate(n_restarts_optimizer=0),
    ForestSurrogate(n_estimators=20),
    BoostingSurrogate(n_members=2, n_estimators=20),
    HawqProxy(),
    AutoSurrogate(candidates=_small_candidates(), cv=3),
    AutoSurrogate(candidates=_small_candidates(), cv=3, focus=0.5),
    EnsembleSurrogate(members=_small_candidates()),
]


@parametrize_with_checks(ESTIMATORS)
def test_sklearn_estimator_checks(estimator, check) -> None:
    check(estimator)


def _data(rng, n=60, d=4):
    X = rng.normal(size=(n, d))
    y = 0.9 - 0.1 * np.tanh(X[:, 0]) - 0.02 * X[:, 1] ** 2 + 0.005 * rng.normal(size=n)
    return X, y


@pytest.mark.parametrize("est", [*ESTIMATORS[:4], EnsembleSurrogate()],
                         ids=lambda e: type(e).__name__)
def test_predict_with_std(est, rng) -> None:
    X, y = _data(rng)
    m = clone(est).fit(X[:40], y[:40])
    mean, std = m.predict(X[40:], return_std=True)
    assert mean.shape == std.shape == (20,)
    assert np.all(std > 0) and np.all(np.isfinite(mean))
    np.testing.assert_allclose(m.predict(X[40:]), mean)
    tau = stats.kendalltau(y[40:], mean).statistic
    assert tau > 0.4, (type(est).__name__, tau)


def test_uncertainty_grows_away_from_data(rng) -> None:
    X, y = _data(rng)
    for est in (GPSurrogate(ard=True, n_restarts_optimizer=0), BoostingSurrogate(n_members=4)):
        m = est.fit(X, y)
        _, s_in = m.predict(X[:5], return_std=True)
        _, s_out = m.predict(X[:5] + 8.0, return_std=True)
        assert s_out.mean() > s_in.mean(), type(est).__name__


def test_hawq_proxy_is_monotone_decreasing(rng) -> None:
    X, y = _data(rng)
    m = HawqProxy().fit(X, y)
    grid = np.zeros((50, X.shape[1]))
    grid[:, 0] = np.linspace(-3, 3, 50)
    assert np.all(np.diff(m.predict(grid)) <= 1e-12)
    assert m.resid_std_ > 0
    with pytest.raises(ValueError, match="column"):
        HawqProxy(column=9).fit(X, y)


def test_auto_picks_best_cv_tau_and_delegates(rng) -> None:
    X, y = _data(rng)
    auto = AutoSurrogate(cv=2).fit(X[:30], y[:30])
    assert set(auto.cv_scores_) == {name for name, _ in default_candidates()}
    assert auto.cv_scores_[auto.best_name_] == max(auto.cv_scores_.values())
    mean, std = auto.predict(X, return_std=True)
    m2, s2 = auto.estimator_.predict(X, return_std=True)
    np.testing.assert_allclose(mean, m2)
    np.testing.assert_allclose(std, np.maximum(s2, 1e-6))
    # a purely monotone target in column 0: the proxy is perfect in CV
    y_mono = -X[:, 0]
    a2 = AutoSurrogate(candidates=[("hawq", HawqProxy()), ("forest", ForestSurrogate(10))],
                       cv=4).fit(X, y_mono)
    assert a2.best_name_ == "hawq" and a2.cv_scores_["hawq"] > 0.95


def test_pipeline_and_cross_validation(rng) -> None:
    X, y = _data(rng)
    pipe = make_pipeline(StandardScaler(), ForestSurrogate(n_estimators=30))
    scores = cross_val_score(pipe, X, y, cv=3)
    assert scores.shape == (3,)
    mean, std = pipe.fit(X, y).predict(X, return_std=True)
    assert mean.shape == std.shape == (60,)


def test_auto_handles_tiny_and_failing_candidates(rng) -> None:
    X, y = _data(rng, n=3)
    auto = AutoSurrogate(candidates=_small_candidates()).fit(X, y)
    assert auto.best_name_ == "forest"
    with pytest.raises(ValueError, match="candidates is empty"):
        AutoSurrogate(candidates=[]).fit(X, y)
    X, y = _data(rng)
    bad = AutoSurrogate(candidates=[("bad", BoostingSurrogate(n_members=0)),
                                    ("hawq", HawqProxy())], cv=3).fit(X, y)
    assert bad.cv_scores_["bad"] == -1.0 and bad.best_name_ == "hawq"


def test_ensemble_is_the_members_mixture(rng) -> None:
    X, y = _data(rng)
    members = [("gp", GPSurrogate(n_restarts_optimizer=0)),
               ("forest", ForestSurrogate(n_estimators=30))]
    ens = EnsembleSurrogate(members=members).fit(X[:40], y[:40])
    assert len(ens.members_) == 2
    alone = [clone(e).fit(X[:40], y[:40]).predict(X[40:], return_std=True) for _, e in members]
    mu = np.stack([a[0] for a in alone])
    sd = np.stack([np.maximum(a[1], 1e-6) for a in alone])
    mean, std = ens.predict(X[40:], return_std=True)
    np.testing.assert_allclose(mean, mu.mean(0))
    # the equal-weight mixture: mean of the variances plus the variance of the means
    np.testing.assert_allclose(std, np.sqrt((sd**2).mean(0) + mu.var(0)))
    assert np.all(std >= sd.min(0) - 1e-12)


def test_ensemble_defaults_and_empty_members(rng) -> None:
    X, y = _data(rng)
    ens = EnsembleSurrogate().fit(X, y)
    assert [type(m).__name__ for m in ens.members_] == [
        "GPSurrogate", "ForestSurrogate", "BoostingSurrogate"]
    with pytest.raises(ValueError, match="members is empty"):
        EnsembleSurrogate(members=[]).fit(X, y)
