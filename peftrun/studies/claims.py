"""Claims a sweep declares before its runs, and the verdicts `peftrun report` computes for them.

A sweep file may list the claims its study tests (nothing here is written after looking):

    claims:
      - name: prefix beats the adapter                  # a label (default: built from the sides)
        better: {method.kind: prefix, method.variant: every-layer}
        worse: {method.kind: adapter}
        metric: BLEU                                     # or metrics: [BLEU, NIST]; default: primary
      - name: FT-top2 close to full FT
        parity: [{method.kind: top-k}, {method.kind: full}]
        delta: 1.0                                       # on the report's print scale
      - name: the gap to full FT narrows with more data
        trend: {a: {method.kind: prefix}, b: {method.kind: full}, over: data.train_size,
                slope: negative}                         # (a − b) falls as data.train_size grows

Each side is a selector: config keys (dotted) and values that must match exactly one row of the
report (a trend's sides: exactly one row per value of `over`). Metric names are the report's
column names. Every comparison is the report's two-level paired bootstrap
(`significance.compare_rows`), two-sided; Holm corrects across the metrics of one claim.

Verdicts (computed, never written by hand):
- better/worse: **held** when the difference is significant (Holm-adjusted two-sided p ≤ 0.05) in the
  claimed direction, **reversed** when significant the other way, **inconclusive** otherwise;
- parity within δ: **held** when the confidence interval of the difference lies inside ±δ,
  **reversed** when it lies wholly outside, **inconclusive** otherwise (several metrics: the interval
  is widened to 1 − 0.05/m, Bonferroni, since Holm's steps have no interval form);
- trend: the least-squares slope of the gap (a − b) over the ordered values of `over` (by rank:
  equally spaced, unless `x: value` or `x: log`), tested on the bootstrap distribution of that
  slope (each comparison's resampled gaps, the instance draws shared); held / reversed /
  inconclusive as for better/worse, with the declared sign.

The specification models are torch- and numpy-free (sweep files validate fast); evaluation imports
numpy lazily.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from peftrun.errors import PeftrunError

ALPHA = 0.05
HELD, REVERSED, INCONCLUSIVE = "held", "reversed", "inconclusive"
NOT_TESTED = "not tested"  # a side names no finished row (its runs failed, or have not run yet)

Selector = dict[str, Any]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TrendSpec(_Spec):
    a: Selector
    b: Selector
    over: str = Field(description="the ordered config key, e.g. data.train_size")
    slope: Literal["negative", "positive"] = Field(description="the claimed sign of d(a − b)/d(over)")
    x: Literal["rank", "value", "log"] = Field("rank", description="the slope's x axis")


class ClaimSpec(_Spec):
    """One declared claim: exactly one of better/worse, parity, trend."""

    name: str | None = None
    better: Selector | None = None
    worse: Selector | None = None
    parity: tuple[Selector, Selector] | None = None
    delta: float | None = Field(None, gt=0, description="parity: the margin, on the report's print scale")
    trend: TrendSpec | None = None
    metric: str | None = None
    metrics: list[str] | None = None
    split: Literal["dev", "test"] = Field("test", description="the split the claim is about")

    @model_validator(mode="after")
    def _one_kind(self) -> ClaimSpec:
        kinds = [self.better is not None or self.worse is not None, self.parity is not None]
        kinds.append(self.trend is not None)
        if sum(kinds) != 1:
            raise ValueError("give exactly one of better+worse, parity (with delta) or trend")
        if kinds[0] and (self.better is None or self.worse is None):
            raise ValueError("a better/worse claim needs both better: and worse:")
        if self.parity is not None and self.delta is None:
            raise ValueError("a parity claim needs delta: (the margin, on the report's print scale)")
        if self.delta is not None and self.parity is None:
            raise ValueError("delta: belongs to a parity claim")
        if self.metric is not None and self.metrics is not None:
            raise ValueError("give metric: or metrics:, not both")
        if self.metrics is not None and not self.metrics:
            raise ValueError("metrics: lists at least one metric")
        return self

    @property
    def kind(self) -> str:
        return "trend" if self.trend else "parity" if self.parity else "better"

    def label(self) -> str:
        if self.name:
            return self.name
        if self.trend:
            t = self.trend
            return f"{_text(t.a)} − {_text(t.b)}: {t.slope} slope over {t.over}"
        if self.parity:
            return f"{_text(self.parity[0])} ≈ {_text(self.parity[1])} (±{self.delta:g})"
        return f"{_text(self.better)} > {_text(self.worse)}"

    def metric_names(self, primary: str) -> list[str]:
        """The claim's metrics, the primary metric first when it is among them."""
        names = self.metrics or [self.metric or primary]
        return sorted(dict.fromkeys(names), key=lambda m: m != primary)


def _text(selector: Selector | None) -> str:
    return ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in (selector or {}).items())


def declared(manifests: list[Path], split: str) -> tuple[list[ClaimSpec], list[str]]:
    """The claims about this split of the sweeps whose manifests (sweep.json) are given, as the sweep
    file declared them when its sweep first started (`sweep_at_start`: written before the runs), and
    a note for each sweep whose file's claims were edited since (the verdicts stay the first ones')."""

    from peftrun.files import read_json

    specs, notes = [], []
    for manifest in manifests:
        data = read_json(manifest)
        first = _claims_of(data.get("sweep_at_start", data.get("sweep")))
        if _claims_of(data.get("sweep")) != first:
            notes.append(
                f"{manifest.parent.name}: the sweep file's claims were edited after the sweep started; "
                "the verdicts are for the claims as first declared (sweep.json `sweep_at_start`)"
            )
        for item in first:
            try:
                spec = ClaimSpec.model_validate(item)
            except ValueError as err:
                raise PeftrunError(f"{manifest}: a claim is malformed: {_first_error(err)}") from None
            if spec.split == split:
                specs.append(spec)
    return specs, notes


def _claims_of(text: Any) -> list[Any]:
    import yaml

    try:
        data = yaml.safe_load(text) if isinstance(text, str) else None
    except yaml.YAMLError:
        return []
    items = data.get("claims") if isinstance(data, dict) else None
    return list(items or [])


def _first_error(err: ValueError) -> str:
    errors = getattr(err, "errors", None)
    if callable(errors):
        first = errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return f"{where}: {first['msg']}" if where else first["msg"].removeprefix("Value error, ")
    return str(err)


# --------------------------------------------------------------------------- matching rows


def same_value(config_value: Any, wanted: Any) -> bool:
    """A selector's value against a resolved config's: numbers by value (YAML reads 5e-5 as text)."""
    if (
        isinstance(wanted, str)
        and isinstance(config_value, (int, float))
        and not isinstance(config_value, bool)
    ):
        try:
            wanted = float(wanted)
        except ValueError:
            return False
    if isinstance(wanted, (int, float)) and isinstance(config_value, (int, float)):
        return not isinstance(wanted, bool) and float(wanted) == float(config_value)
    if isinstance(wanted, list | tuple) and isinstance(config_value, list | tuple):
        return len(wanted) == len(config_value) and all(map(same_value, config_value, wanted))
    return config_value == wanted


def row_matches(row, selector: Selector) -> bool:
    """Whether every finished run of the row has the selector's values (an absent key is None)."""
    runs = row.runs
    return bool(runs) and all(
        same_value(run.flat.get(key), value) for run in runs for key, value in selector.items()
    )


class MissingRow(PeftrunError):
    """A claim's side names no finished row: the claim is reported as not tested, with this reason."""


def find_row(rows: list, selector: Selector, claim: str):
    """The one row the selector names; several is a one-line error naming them (the declaration
    cannot tell them apart); none is `MissingRow` (the claim is not tested, the report goes on)."""
    found = [row for row in rows if row_matches(row, selector)]
    if len(found) == 1:
        return found[0]
    if not found:
        raise MissingRow(f"no finished row has {_text(selector) or 'these values'}")
    names = "; ".join(_text(row.group) or "(all runs)" for row in found)
    raise PeftrunError(
        f"claim {claim!r}: {_text(selector)} matches {len(found)} rows ({names}); add keys to tell them apart"
    )


# --------------------------------------------------------------------------- verdicts


@dataclass
class ClaimResult:
    """One metric of one claim: the compared rows' means, the difference and its test."""

    claim: str
    kind: str
    metric: str
    mean_a: float | None  # better / first parity side / trend: the slope's intercept side a
    mean_b: float | None
    estimate: float | None  # better − worse, first − second, or the slope (None: not tested)
    ci_low: float | None
    ci_high: float | None
    p: float | None  # Holm-adjusted two-sided p (None for parity)
    p_raw: float | None
    verdict: str
    instances: int
    seed_pairs: list[int] = field(default_factory=list)
    detail: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "claim": self.claim,
            "kind": self.kind,
            "metric": self.metric,
            "mean_a": self.mean_a,
            "mean_b": self.mean_b,
            "estimate": self.estimate,
            "ci": [self.ci_low, self.ci_high],
            "p": self.p,
            "p_raw": self.p_raw,
            "verdict": self.verdict,
            "instances": self.instances,
            "seed_pairs": self.seed_pairs,
            "detail": self.detail,
        }


def directional(estimate: float, p: float, claimed_positive: bool = True) -> str:
    """held / reversed / inconclusive for a claimed sign at two-sided level ALPHA."""
    if p > ALPHA or estimate == 0:
        return INCONCLUSIVE
    return HELD if (estimate > 0) == claimed_positive else REVERSED


def parity_verdict(low: float, high: float, delta: float) -> str:
    if -delta <= low and high <= delta:
        return HELD
    if low > delta or high < -delta:
        return REVERSED
    return INCONCLUSIVE


def evaluate(report, specs: list[ClaimSpec]) -> list[ClaimResult]:
    """Every claim's results, metric by metric (a claim that names no row is an error)."""
    from peftrun.studies.significance import PRIMARY

    primary = PRIMARY[report.dataset]
    columns = [c.name for c in report.columns if c.quality]
    out: list[ClaimResult] = []
    for spec in specs:
        label = spec.label()
        metrics = spec.metric_names(primary)
        unknown = [m for m in metrics if m not in columns]
        if unknown:
            raise PeftrunError(
                f"claim {label!r}: metric {unknown[0]!r} is not a report column; "
                f"choose from {', '.join(columns)}"
            )
        test = _trend if spec.trend else _parity if spec.parity else _better
        try:
            out += test(report, spec, label, metrics)
        except MissingRow as why:
            out += [_not_tested(label, spec.kind, metric, str(why)) for metric in metrics]
    return out


def _not_tested(label: str, kind: str, metric: str, why: str) -> ClaimResult:
    return ClaimResult(label, kind, metric, None, None, None, None, None, None, None, NOT_TESTED, 0, [], why)


def _compare(report, row_a, row_b, metrics: list[str], label: str) -> dict[str, Any]:
    from peftrun.studies.significance import compare_rows

    results = compare_rows(row_a, row_b, report)
    missing = [m for m in metrics if m not in results]
    if missing:
        raise PeftrunError(
            f"claim {label!r}: no paired {missing[0]} scores for its rows (runs without per-instance "
            "scores, different instances, or no seed in common)"
        )
    return results


def _better(report, spec: ClaimSpec, label: str, metrics: list[str]) -> list[ClaimResult]:
    from peftrun.studies.significance import holm

    better, worse = (find_row(report.rows, s, label) for s in (spec.better, spec.worse))
    # compare_rows gives B − A: B is the claimed better row.
    results = _compare(report, worse, better, metrics, label)
    adjusted = holm([results[m].p for m in metrics])
    out = []
    for metric, p in zip(metrics, adjusted, strict=True):
        r = results[metric]
        out.append(
            ClaimResult(
                label,
                "better",
                metric,
                r.mean_b,
                r.mean_a,
                r.delta,
                r.ci_low,
                r.ci_high,
                p,
                r.p,
                directional(r.delta, p),
                r.instances,
                [r.seed_pairs],
            )
        )
    return out


def _parity(report, spec: ClaimSpec, label: str, metrics: list[str]) -> list[ClaimResult]:
    import numpy as np

    first, second = (find_row(report.rows, s, label) for s in spec.parity)
    results = _compare(report, second, first, metrics, label)
    alpha = ALPHA / len(metrics)
    out = []
    for metric in metrics:
        r = results[metric]
        low, high = (float(q) for q in np.quantile(r.deltas, [alpha / 2, 1 - alpha / 2]))
        note = f"{1 - alpha:.1%} interval" + (
            " (Bonferroni over the claim's metrics)" if len(metrics) > 1 else ""
        )
        out.append(
            ClaimResult(
                label,
                "parity",
                metric,
                r.mean_b,
                r.mean_a,
                r.delta,
                low,
                high,
                None,
                r.p,
                parity_verdict(low, high, spec.delta),
                r.instances,
                [r.seed_pairs],
                f"margin ±{spec.delta:g}; {note}",
            )
        )
    return out


def _trend(report, spec: ClaimSpec, label: str, metrics: list[str]) -> list[ClaimResult]:
    import numpy as np

    from peftrun.studies.significance import holm

    t = spec.trend
    values = [
        v
        for v in _ordered_values(report, t.over, label)
        if any(row_matches(r, {**t.a, t.over: v}) for r in report.rows)
        and any(row_matches(r, {**t.b, t.over: v}) for r in report.rows)
    ]
    if len(values) < 3:
        raise MissingRow(
            f"a trend needs at least 3 values of {t.over} that both sides ran (found {len(values)}): "
            "two points always lie on a line"
        )
    xs = _positions(values, t.x, label)
    comparisons = []
    for value in values:
        at = {t.over: value}
        row_a = find_row(report.rows, {**t.a, **at}, label)
        row_b = find_row(report.rows, {**t.b, **at}, label)
        comparisons.append(_compare(report, row_b, row_a, metrics, label))  # a − b
    centred = np.asarray(xs) - np.mean(xs)
    weights = centred / float(centred @ centred)
    slopes, raw = {}, []
    for metric in metrics:
        gaps = np.stack([c[metric].deltas for c in comparisons])  # (values, resamples)
        point = float(weights @ np.array([c[metric].delta for c in comparisons]))
        resampled = weights @ gaps
        low, high = (float(q) for q in np.quantile(resampled, [ALPHA / 2, 1 - ALPHA / 2]))
        slopes[metric] = (point, low, high)
        raw.append(two_sided_p(resampled))
    adjusted = holm(raw)
    unit = "step of the ordered values" if t.x == "rank" else f"unit of {t.x}({t.over})"
    out = []
    for metric, p, p_raw in zip(metrics, adjusted, raw, strict=True):
        point, low, high = slopes[metric]
        gaps_text = ", ".join(
            f"{v}: {c[metric].delta:+.2f}" for v, c in zip(values, comparisons, strict=True)
        )
        out.append(
            ClaimResult(
                label,
                "trend",
                metric,
                None,
                None,
                point,
                low,
                high,
                p,
                p_raw,
                directional(point, p, claimed_positive=t.slope == "positive"),
                comparisons[0][metric].instances,
                [c[metric].seed_pairs for c in comparisons],
                f"gap (a − b) by {t.over}: {gaps_text}; slope per {unit}",
            )
        )
    return out


def two_sided_p(resampled) -> float:
    """Two-sided bootstrap p of 'the statistic is 0': twice the smaller tail, (count + 1)/(B + 1)."""
    import numpy as np

    resampled = np.asarray(resampled)
    tail = min(int(np.sum(resampled <= 0)), int(np.sum(resampled >= 0)))
    return min(1.0, 2 * (tail + 1) / (len(resampled) + 1))


def _ordered_values(report, key: str, label: str) -> list[Any]:
    from peftrun.studies.values import canon, sort_key

    if key not in report.keys:
        shown = ", ".join(report.keys) or "none"
        raise PeftrunError(
            f"claim {label!r}: trend over {key}, which does not vary in this report (keys: {shown})"
        )
    seen = {}
    for row in report.rows:
        if row.runs:
            seen.setdefault(canon(row.group[key]), row.group[key])
    return sorted(seen.values(), key=sort_key)


def _positions(values: list[Any], x: str, label: str) -> list[float]:
    if x == "rank":
        return [float(k) for k in range(len(values))]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise PeftrunError(f"claim {label!r}: x: {x} needs numeric values (got {values}); use x: rank")
    if x == "log":
        if any(v <= 0 for v in values):
            raise PeftrunError(f"claim {label!r}: x: log needs positive values (got {values})")
        return [math.log(v) for v in values]
    return [float(v) for v in values]


# --------------------------------------------------------------------------- text


def _fmt(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _signed(value: float | None) -> str:
    return "—" if value is None else f"{value:+.2f}"


def p_text(p: float | None) -> str:
    if p is None:
        return "—"
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def markdown(results: list[ClaimResult], split: str, notes: list[str] | None = None) -> list[str]:
    """The claims as a Markdown table, with a note on how each verdict is computed."""
    if not results:
        return [f"Note: {note}." for note in notes or []]
    lines = [
        f"### Claims (declared in the sweep file before the runs; {split} split)",
        "",
        "| claim | metric | a | b | estimate | 95% CI | p (Holm) | verdict |",
        "|---|---|---:|---:|---:|---|---:|---|",
    ]
    for r in results:
        ci = "—" if r.ci_low is None else f"[{_fmt(r.ci_low)}, {_fmt(r.ci_high)}]"
        lines.append(
            f"| {r.claim} | {r.metric} | {_fmt(r.mean_a)} | {_fmt(r.mean_b)} | {_signed(r.estimate)} | "
            f"{ci} | {p_text(r.p)} | **{r.verdict}** |"
        )
    details = sorted({f"- {r.claim}: {r.detail}" for r in results if r.detail})
    lines += [
        "",
        "a, b: the row means (better/worse: the claimed better row first; parity: as declared). "
        "Estimate: a − b (trend: the slope of the gap). Two-level paired bootstrap, two-sided p, "
        "Holm-adjusted across the metrics of one claim; held: significant in the claimed direction "
        "(parity: the interval inside ±δ), reversed: significant the other way (parity: wholly "
        "outside), inconclusive: neither; not tested: a side has no finished row (reason below).",
        *details,
        *[f"- Note: {note}." for note in notes or []],
    ]
    return lines
