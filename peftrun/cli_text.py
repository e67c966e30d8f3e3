"""What the command line prints, as lines of text: metrics per split, a paired comparison,
parameter counts, a packed training's ends, a sweep's run list and its summary. (`peftrun ls` and
`peftrun show RUN_DIR` are drawn by run_card.py.) Torch-free; cli.py only echoes these lines."""

from __future__ import annotations

from typing import Any

from peftrun.run_states import RunState

# A sweep's points in these states make `peftrun sweep` exit 1.
UNFINISHED = (RunState.FAILED, RunState.INTERRUPTED, RunState.NOT_STARTED)


def metrics_table(results: dict[str, Any]) -> list[str]:
    """Metrics per split, one row each (paper scale: BLEU/METEOR/ROUGE ×100 for E2E)."""
    if not results:
        return []
    names = list(dict.fromkeys(name for r in results.values() for name in r["scores"]))
    width = max(max(len(n) for n in names), 8)
    lines = ["split  " + "  ".join(f"{n:>{width}}" for n in names)]
    for split, r in results.items():
        values = [r["scores"].get(n) for n in names]
        cells = [f"{v:>{width}.4f}" if isinstance(v, (int, float)) else f"{'n/a':>{width}}" for v in values]
        lines.append(f"{split:<6} " + "  ".join(cells))
    return lines


def comparison_table(rows: list[dict[str, Any]]) -> list[str]:
    """`peftrun eval --compare A --compare B`: per metric A, B, B − A, its 95% CI, the two-sided p
    and N, then what the test is (one run against one run: the instance-level test)."""
    lines = [f"{'metric':<8} {'A':>9} {'B':>9} {'B-A':>9}  95% CI                p (2-sided)      N"]
    for r in rows:
        ci = f"[{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]"
        scores = f"{r['score_a']:9.4f} {r['score_b']:9.4f} {r['delta']:+9.4f}"
        p = "<0.001" if r["p"] < 0.001 else f"{r['p']:.3f}"
        lines.append(f"{r['metric']:<8} {scores}  {ci}  {p:>11}  {r['instances']:>5}")
    if rows:
        first = rows[0]
        lines.append(
            f"paired bootstrap over {first['instances']} instances (Koehn 2004), "
            f"{first['samples']} resamples, two-sided p; one run against one run (one seed pair): "
            "the instance-level test, seed variation not resampled "
            "(several seeds per system: `peftrun report`, two-level)"
        )
    return lines


def parameter_counts(counts: dict[str, Any]) -> list[str]:
    """`peftrun params`: base, trainable and stored parameters, the last two as % of the base."""
    return [
        f"model {counts['model']}, method {counts['method']}",
        f"  base       {counts['base']:>14,}",
        f"  trainable  {counts['trainable']:>14,}  {counts['trainable_pct']:8.3f}%",
        f"  stored     {counts['stored']:>14,}  {counts['stored_pct']:8.3f}%",
    ]


def packed_ends(outcomes: list[Any]) -> list[str]:
    """`peftrun train-packed`: one line per run, how it ended (and why, if it failed)."""
    return [
        f"{outcome.state:<8} {outcome.run_dir}" + (f": {outcome.error}" if outcome.error else "")
        for outcome in outcomes
    ]


def sweep_listing(summary: dict[str, Any]) -> list[str]:
    """`peftrun sweep --dry-run`: every run with its state, folder, overrides and pack."""
    lines = [f"sweep {summary['name']}: {len(summary['runs'])} runs in {summary['folder']}"]
    for r in summary["runs"]:
        lines.append(f"{r['state']:<12} {r['name']:<50} {r['run_dir']}")
        lines.append(f"{'':<12} {' '.join(r['overrides']) or '(no overrides)'}")
        if "packed_with" in r:
            others = ", ".join(n for n in r["packed_with"] if n != r["name"])
            lines.append(f"{'':<12} packed with: {others}")
    return lines + selection_plan(summary.get("selection"))


def selection_plan(plan: dict[str, Any] | None) -> list[str]:
    """A selection sweep's rule, groups and run counts (`peftrun sweep --dry-run`)."""
    if not plan:
        return []
    lines = [f"selection: {plan['rule']}"]
    for group, settings in plan["groups"].items():
        noun = "setting" if len(settings) == 1 else "settings"
        lines.append(f"  {group}: {len(settings)} {noun} ({', '.join(settings)})")
    tested = (
        f"test decoded for {plan['test_decodes']} runs (the winners' alone)"
        if plan["test_decodes"]
        else "no test decoded (select.test: false)"
    )
    lines.append(
        f"runs: {plan['grid_runs']} on the grid (dev only), then {plan['winner_runs']} more for the winners' "
        f"seeds; {tested}"
    )
    return lines


def sweep_summary(summary: dict[str, Any]) -> list[str]:
    """After a sweep: counts by state, then each run that did not finish and why."""
    counts = {state: summary["counts"].get(state, 0) for state in RunState}
    lines = [
        f"sweep {summary['name']}: {counts[RunState.DONE]} done, {counts[RunState.FAILED]} failed, "
        f"{counts[RunState.SKIPPED]} skipped (done before), {counts[RunState.INTERRUPTED]} interrupted, "
        f"{counts[RunState.NOT_STARTED]} not started"
    ]
    for r in summary["runs"]:
        if r["state"] in (RunState.FAILED, RunState.INTERRUPTED):
            lines.append(f"  {r['state']} {r['run_dir']}: {r['error']}")
    chosen = summary.get("selection")
    if chosen:
        for group, winner in chosen.get("winners", {}).items():
            lines.append(f"  selected for {group}: {winner}")
        for group, why in chosen.get("undecided", {}).items():
            lines.append(f"  not decided for {group}: {why}")
        lines.append(f"  test decoded for {len(chosen.get('test_decoded', []))} runs (the winners')")
    return lines


def unfinished(summary: dict[str, Any]) -> bool:
    """Whether any run of this sweep invocation failed, was interrupted or never started."""
    return any(r["state"] in UNFINISHED for r in summary["runs"])
