"""Accuracy predictors: scikit-learn regressors with ``predict(X, return_std=True)``.

Every predictor takes a feature matrix (from :class:`surrogates.GenomeFeatures`) and the
accuracy in ``[0, 1]`` as target, and returns a mean and, on request, a standard
deviation, like :class:`sklearn.gaussian_process.GaussianProcessRegressor`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.ensemble import ExtraTreesRegressor, GradientBoostingRegressor
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel
from sklearn.isotonic import IsotonicRegression
from sklearn.model_selection import KFold, cross_val_predict
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted, check_random_state, validate_data

__all__ = [
    "GPSurrogate",
    "ForestSurrogate",
    "BoostingSurrogate",
    "HawqProxy",
    "AutoSurrogate",
    "EnsembleSurrogate",
]

_STD_FLOOR = 1e-6


class _Surrogate(RegressorMixin, BaseEstimator):
    """Shared ``predict`` plumbing: subclasses implement ``_fit`` and ``_predict``."""

    def fit(self, X: Any, y: Any) -> _Surrogate:
        """Fit on features ``X (n, d)`` and accuracies ``y (n,)``; returns ``self``."""
        X, y = validate_data(self, X, y, y_numeric=True, dtype=np.float64)
        self._fit(X, np.asarray(y, dtype=np.float64))
        return self

    def predict(self, X: Any, return_std: bool = False) -> Any:
        """Predicted accuracy ``(n,)``, and with ``return_std`` its std ``(n,)``."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        mean, std = self._predict(X)
        if return_std:
            return mean, np.maximum(std, _STD_FLOOR)
        return mean

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover
        raise NotImplementedError


class GPSurrogate(_Surrogate):
    """Gaussian process on standardized features.

    The default kernel is ``C * Matern(nu=2.5) + White`` on standardized features,
    fitted with normalized targets. ``ard=True`` gives one length scale per feature
    (irrelevant features get long ones): better with many points, but over-parameterized
    and about ten times slower to fit with a few dozen points and ~30 features.

    Args:
        kernel: a scikit-learn kernel to use instead of the default.
        ard: one length scale per feature in the default kernel (default: one shared).
        alpha: jitter added to the kernel diagonal.
        n_restarts_optimizer: restarts of the marginal-likelihood optimizer.
        random_state: seed of the restarts.

    Attributes:
        scaler_: the fitted :class:`StandardScaler`.
        gp_: the fitted :class:`GaussianProcessRegressor`.
    """

    def __init__(
        self,
        kernel: Any = None,
        ard: bool = False,
        alpha: float = 1e-8,
        n_restarts_optimizer: int = 1,
        random_state: int | None = 0,
    ) -> None:
        self.kernel = kernel
        self.ard = ard
        self.alpha = alpha
        self.n_restarts_optimizer = n_restarts_optimizer
        self.random_state = random_state

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        d = X.shape[1]
        kernel = self.kernel
        if kernel is None:
            ls = np.ones(d) if self.ard else 1.0
            kernel = ConstantKernel(1.0, (1e-3, 1e3)) * Matern(
                length_scale=ls, length_scale_bounds=(1e-2, 1e3), nu=2.5
            ) + WhiteKernel(1e-2, (1e-6, 1.0))
        self.scaler_ = StandardScaler().fit(X)
        self.gp_ = GaussianProcessRegressor(
            kernel=clone(kernel),
            alpha=self.alpha,
            normalize_y=True,
            n_restarts_optimizer=self.n_restarts_optimizer,
            random_state=self.random_state,
        )
        import warnings

        from sklearn.exceptions import ConvergenceWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.gp_.fit(self.scaler_.transform(X), y)

    def _predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean, std = self.gp_.predict(self.scaler_.transform(X), return_std=True)
        return mean, std


class ForestSurrogate(_Surrogate):
    """Extremely randomized trees; the std is the spread of the trees' predictions.

    Args:
        n_estimators: number of trees.
        min_samples_leaf: minimum samples per leaf (>1 smooths small data sets).
        max_features: features tried per split (as in scikit-learn).
        random_state: seed.

    Attributes:
        forest_: the fitted :class:`ExtraTreesRegressor`.
    """

    def __init__(
        self,
        n_estimators: int = 200,
        min_samples_leaf: int = 1,
        max_features: float | str | None = 1.0,
        random_state: int | None = 0,
    ) -> None:
        self.n_estimators = n_estimators
        self.min_samples_leaf = min_samples_leaf
        self.max_features = max_features
        self.random_state = random_state

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        self.forest_ = ExtraTreesRegressor(
            n_estimators=self.n_estimators,
            min_samples_leaf=self.min_samples_leaf,
            max_features=self.max_features,
            random_state=self.random_state,
        ).fit(X, y)

    def _predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        per_tree = np.stack([t.predict(X) for t in self.forest_.estimators_])
        return per_tree.mean(0), per_tree.std(0)


class BoostingSurrogate(_Surrogate):
    """An ensemble of gradient-boosted trees on subsamples; std across members.

    Each member is a :class:`GradientBoostingRegressor` with its own seed and row
    subsampling, so members disagree where the data do not pin the function down.

    Args:
        n_members: ensemble size.
        n_estimators / learning_rate / max_depth / subsample: per member.
        random_state: seed of the members' seeds.

    Attributes:
        members_: the fitted members.
    """

    def __init__(
        self,
        n_members: int = 5,
        n_estimators: int = 100,
        learning_rate: float = 0.05,
        max_depth: int = 2,
        subsample: float = 0.7,
        random_state: int | None = 0,
    ) -> None:
        self.n_members = n_members
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.subsample = subsample
        self.random_state = random_state

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        if self.n_members < 1:
            raise ValueError(f"n_members must be >= 1, got {self.n_members}")
        rs = check_random_state(self.random_state)
        # row subsampling needs a few rows to draw from
        subsample = self.subsample if X.shape[0] >= 4 else 1.0
        self.members_ = [
            GradientBoostingRegressor(
                n_estimators=self.n_estimators,
                learning_rate=self.learning_rate,
                max_depth=self.max_depth,
                subsample=subsample,
                random_state=int(rs.randint(2**31 - 1)),
            ).fit(X, y)
            for _ in range(self.n_members)
        ]

    def _predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = np.stack([m.predict(X) for m in self.members_])
        return p.mean(0), p.std(0)


class HawqProxy(_Surrogate):
    """The reference to beat: accuracy as a monotone function of one sensitivity total.

    An isotonic (decreasing) regression of accuracy on column ``column`` of the
    features, by default ``hawq_total`` (column 0 of :class:`GenomeFeatures`). Its std
    is the root mean squared training residual, the same for every point.

    Args:
        column: index of the sensitivity column.
        increasing: fit an increasing function instead (for a score, not a loss).

    Attributes:
        iso_: the fitted :class:`IsotonicRegression`.
        resid_std_: RMS training residual.
    """

    def __init__(self, column: int = 0, increasing: bool = False) -> None:
        self.column = column
        self.increasing = increasing

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        if not -X.shape[1] <= self.column < X.shape[1]:
            raise ValueError(f"column {self.column} is outside the {X.shape[1]} features")
        x = X[:, self.column]
        self.iso_ = IsotonicRegression(increasing=self.increasing, out_of_bounds="clip")
        self.iso_.fit(x, y)
        self.resid_std_ = float(np.sqrt(np.mean((self.iso_.predict(x) - y) ** 2)))

    def __sklearn_tags__(self):  # type: ignore[no-untyped-def]
        tags = super().__sklearn_tags__()
        # one monotone feature by design: on arbitrary data its R^2 is poor
        tags.regressor_tags.poor_score = True
        return tags

    def _predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean = self.iso_.predict(X[:, self.column])
        return mean, np.full(mean.shape, self.resid_std_)


def _tau(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall tau-b, NaN when either side is constant (instead of a warning)."""
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(stats.kendalltau(a, b).statistic)


def default_candidates(random_state: int | None = 0) -> list[tuple[str, BaseEstimator]]:
    """The predictors :class:`AutoSurrogate` chooses among by default."""
    return [
        ("gp", GPSurrogate(random_state=random_state)),
        ("forest", ForestSurrogate(random_state=random_state)),
        ("boosting", BoostingSurrogate(random_state=random_state)),
        ("hawq", HawqProxy()),
    ]


class AutoSurrogate(_Surrogate):
    """Picks the candidate with the best cross-validated Kendall tau, refit on all data.

    The tau is computed once over the pooled out-of-fold predictions of a shuffled
    ``cv``-fold split (more stable than averaging taus of small folds). With ``focus``,
    the score is the mean of that tau and the tau among the best ``focus`` share of the
    points (by measured accuracy): a search needs its surrogate to rank the frontier,
    where the easy contrast between working and collapsed networks is absent. Ties go
    to the earlier candidate; a candidate that fails or predicts a constant scores ``-1``.

    Args:
        candidates: ``(name, estimator)`` pairs; default: GP, forest, boosting, HAWQ.
        cv: number of folds (reduced to the number of samples when fewer).
        random_state: seed of the fold split and of the default candidates.
        focus: share ``(0, 1]`` of the best points whose tau also counts, or None (the
            default) for the tau over all points only. On the demo's replayed rounds
            (``benchmarks/bench_surrogate_frontier.py``) ``focus=0.5`` chose worse
            predictors than None once the layer-width features were in.

    Attributes:
        cv_scores_: name -> cross-validated Kendall tau.
        best_name_: the chosen candidate's name.
        estimator_: the chosen candidate, refit on all the data.
    """

    def __init__(
        self,
        candidates: Sequence[tuple[str, BaseEstimator]] | None = None,
        cv: int = 5,
        random_state: int | None = 0,
        focus: float | None = None,
    ) -> None:
        self.candidates = candidates
        self.cv = cv
        self.random_state = random_state
        self.focus = focus

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        cands = list(self.candidates) if self.candidates is not None else default_candidates(
            self.random_state
        )
        if not cands:
            raise ValueError("candidates is empty: give at least one (name, estimator)")
        if self.focus is not None and not 0 < float(self.focus) <= 1:
            raise ValueError(f"focus must be in (0, 1] or None, got {self.focus}")
        n = X.shape[0]
        folds = min(int(self.cv), n)
        scores: dict[str, float] = {}
        if folds >= 2 and n >= 4:
            split = KFold(folds, shuffle=True, random_state=self.random_state)
            # the best `focus` share of the points (at least 3, for a tau to mean much)
            n_top = max(3, int(np.ceil(float(self.focus) * n))) if self.focus else n
            top = np.argsort(-y, kind="stable")[:n_top]
            for name, est in cands:
                try:
                    pred = cross_val_predict(clone(est), X, y, cv=split)
                    tau = _tau(y, pred)
                    if n_top < n:
                        tau = 0.5 * (tau + _tau(y[top], pred[top]))
                except (ValueError, np.linalg.LinAlgError):
                    tau = float("nan")
                scores[name] = float(tau) if np.isfinite(tau) else -1.0
        else:
            scores = {name: 0.0 for name, _ in cands}
        best = max(range(len(cands)), key=lambda i: (scores[cands[i][0]], -i))
        self.cv_scores_ = scores
        self.best_name_ = cands[best][0]
        self.estimator_ = clone(cands[best][1]).fit(X, y)

    def _predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean, std = self.estimator_.predict(X, return_std=True)
        return np.asarray(mean), np.asarray(std)


class EnsembleSurrogate(_Surrogate):
    """The mean of several predictors, each fitted on all the data (model averaging).

    Where :class:`AutoSurrogate` bets on the one candidate that cross-validates best on a
    few dozen points (a noisy choice that can flip from one refit to the next), the
    ensemble averages them: its mean is the members' mean prediction, its std that of the
    equal-weight mixture, ``sqrt(mean(std_i^2) + var(mean_i))``, so disagreement between
    members counts as uncertainty. One fit per member and no cross-validation, so it is
    also cheaper to refit.

    Args:
        members: ``(name, estimator)`` pairs with ``predict(X, return_std=True)``;
            default: GP, forest and boosting (:func:`default_candidates` without the HAWQ
            proxy, whose single monotone feature would pull the mean toward it).
        random_state: seed of the default members.

    Attributes:
        members_: the fitted members, in order.
    """

    def __init__(
        self,
        members: Sequence[tuple[str, BaseEstimator]] | None = None,
        random_state: int | None = 0,
    ) -> None:
        self.members = members
        self.random_state = random_state

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        members = list(self.members) if self.members is not None else [
            (n, e) for n, e in default_candidates(self.random_state) if n != "hawq"
        ]
        if not members:
            raise ValueError("members is empty: give at least one (name, estimator)")
        self.members_ = [clone(est).fit(X, y) for _, est in members]

    def _predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = [m.predict(X, return_std=True) for m in self.members_]
        means = np.stack([np.asarray(o[0]) for o in out])
        var = np.stack([np.asarray(o[1]) ** 2 for o in out]).mean(0) + means.var(0)
        return means.mean(0), np.sqrt(var)
