"""The report's claims, re-tested: each claim (from a TOML file a user can extend) becomes a
row with the evidence from the study and a verdict: supported, contradicted or inconclusive.

A claim of several tests (``within`` a factor's levels, or a list) is supported when every test
is, each at ALPHA: all must hold, so an intersection-union test needs no adjustment. It is
contradicted when any test shows the opposite, and "any of k" is k chances to be wrong: those
sign tests are Holm-adjusted over the claim's tests first (the page shows the adjusted p)."""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cnnsweep.errors import ConfigError, describe_validation_error
from cnnsweep.report.stats import MIN_PAIRS, Comparison, compare, holm, with_ranks
from cnnsweep.results import check_metric
from cnnsweep.spec import BUILTIN_CLAIMS

Scalar = str | int | float | bool
# Metrics of cost: a diverged run's are cut short by its divergence, so claims leave it out.
COST_METRICS = frozenset({"train_time", "epochs_trained", "epochs_run", "images_per_second"})
UNITS = {"test_accuracy": "pts", "overfit_gap": "pts", "best_train_acc": "pts",
         "train_time": "s", "epochs_trained": "epochs", "epochs_run": "epochs"}  # fmt: skip


class ClaimTest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    factor: str
    greater: Scalar  # the level expected to have the larger metric
    lesser: Scalar
    within: str | None = None  # repeat the test for each level of this factor
    where: dict[str, Scalar | list[Scalar]] = {}  # keep only these levels


class Claim(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    claim: str
    metric: str
    tests: list[ClaimTest] = Field(min_length=1)

    @field_validator("metric")
    @classmethod
    def _numeric_metric(cls, metric: str) -> str:
        return check_metric(metric)


class ClaimFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    claims: list[Claim]


# Studies stored before a spec named its claims: the built-in studies re-tested the report's.
_LEGACY_CLAIMS = {"seed48": "seed-report", "seed48-holdout": "seed-report"}


def claims_of(document: dict) -> str | None:
    """The claims a stored study names (``claims`` in its spec), or None for none."""
    spec = document.get("spec", {})
    if "claims" in spec:
        return spec["claims"]
    return _LEGACY_CLAIMS.get(spec.get("name"))


def load_claims(source: str | Path | None) -> list[Claim]:
    """The claims named by ``source``: a built-in set (``"seed-report"``: the seed report's
    conclusions), a TOML file of the same form, or None (no claims: no findings section)."""
    if source is None:
        return []
    if str(source) in BUILTIN_CLAIMS:
        text = (resources.files("cnnsweep") / "report" / "claims" / f"{source}.toml").read_text()
        source = f"built-in claims {str(source)!r}"
    else:
        path = Path(source)
        if path.exists() and not path.is_file():
            raise ConfigError(f"claims file {path} is not a regular file")
        try:
            text, source = path.read_bytes().decode("utf-8"), str(path)
        except OSError as exc:
            raise ConfigError(f"cannot read claims file {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"claims file {path} is not UTF-8 text") from None
    try:
        return ClaimFile(**tomllib.loads(text)).claims
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"malformed TOML in {source}: {exc}") from None
    except ValidationError as exc:
        raise ConfigError(f"{source}: {describe_validation_error(exc, 'key')}") from None


@dataclass(frozen=True)
class Evidence:
    context: str  # e.g. "optimizer=adam" for a test repeated `within` a factor
    comparison: Comparison

    def describe(self, unit: str) -> str:
        c = self.comparison
        where = f"{self.context}: " if self.context else ""
        if c.pairs == 0:
            return f"{where}{c.a} vs {c.b}: no matched pairs"
        low, high = c.difference_ci
        p_low, p_high = c.p_ci
        sign = "" if math.isnan(c.sign_p) else f", sign test p = {c.sign_p:.3g}"
        if not math.isnan(c.adjusted_p) and c.adjusted_p != c.sign_p:
            sign += f" (Holm over the claim's tests: {c.adjusted_p:.3g})"
        return (
            f"{where}{c.a} − {c.b} = {c.mean_difference:+.2f} {unit} "
            f"[{_num(low)}, {_num(high)}], P({c.a} > {c.b}) = {c.p_a_greater:.2f} "
            f"[{_prob(p_low)}, {_prob(p_high)}]{sign}, {c.pairs} pairs"
        )


def _num(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:+.2f}"


def _prob(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}"


@dataclass(frozen=True)
class Finding:
    claim: Claim
    verdict: str  # supported | contradicted | inconclusive
    evidence: list[Evidence]
    note: str = ""

    @property
    def unit(self) -> str:
        return UNITS.get(self.claim.metric, "")


def _levels_match(series: pd.Series, wanted: Scalar | list[Scalar]) -> pd.Series:
    wanted = wanted if isinstance(wanted, list) else [wanted]
    return series.isin(wanted)


def judge_claim(claim: Claim, frame: pd.DataFrame, factors: list[str]) -> Finding:
    """Test one claim on the finished runs of a tidy frame."""
    if claim.metric not in frame.columns:
        return Finding(claim, "inconclusive", [], f"metric {claim.metric!r} is not in the results")
    frame = frame[frame["finished"]]
    left_out = 0
    if claim.metric in COST_METRICS:  # a diverged run stopped early: its time says nothing
        diverged = frame["stop_reason"] == "diverged"
        left_out, frame = int(diverged.sum()), frame[~diverged]
    frame = with_ranks(frame, factors)
    evidence: list[Evidence] = []
    for test in claim.tests:
        needed = [test.factor, *([test.within] if test.within else []), *test.where]
        missing = [f for f in needed if f not in factors]
        if missing:
            return Finding(claim, "inconclusive", evidence,
                           f"factor {missing[0]!r} is not varied in this study")  # fmt: skip
        subset = frame
        for factor, wanted in test.where.items():
            subset = subset[_levels_match(subset[factor], wanted)]
        groups = [("", subset)]
        if test.within:
            groups = [(f"{test.within}={level}", part)
                      for level, part in subset.groupby(test.within, sort=False)]  # fmt: skip
        for context, part in groups:
            if test.where:
                context = ", ".join(f"{k}={v}" for k, v in test.where.items()) + (
                    f", {context}" if context else "")  # fmt: skip
            result = compare(part, test.factor, test.greater, test.lesser, claim.metric, factors)
            evidence.append(Evidence(context, result))
    if not evidence:
        return Finding(claim, "inconclusive", evidence, "no runs to compare")
    supports = all(e.comparison.outcome == "greater" for e in evidence)  # each at ALPHA
    # A test that went the opposite way is judged, and shown, with its Holm-adjusted p.
    adjusted = holm([e.comparison for e in evidence])
    evidence = [dataclasses.replace(e, comparison=c) if e.comparison.outcome == "less" else e
                for e, c in zip(evidence, adjusted, strict=True)]  # fmt: skip
    if any(e.comparison.outcome == "less" for e in evidence):
        verdict = "contradicted"
    elif supports:
        verdict = "supported"
    else:
        verdict = "inconclusive"
    few = [e for e in evidence if e.comparison.pairs < MIN_PAIRS]
    notes = [f"fewer than {MIN_PAIRS} matched pairs in some tests (n too small for a verdict)"
             if few else "",
             f"{left_out} diverged run{'s' if left_out != 1 else ''} left out" if left_out
             else ""]  # fmt: skip
    return Finding(claim, verdict, evidence, "; ".join(n for n in notes if n))


def judge_claims(claims: list[Claim], frame: pd.DataFrame, factors: list[str]) -> list[Finding]:
    return [judge_claim(claim, frame, factors) for claim in claims]
