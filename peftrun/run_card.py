"""What a run directory holds, read back: the `peftrun ls` row and the `peftrun show RUN_DIR` card.

Only reads (config.resolved.yaml, meta.json, metrics/, adapter/); imports neither torch nor
transformers, so listing a folder of runs stays fast. File names are asked of `Run`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from peftrun.runs import Run

# The decoding settings a row shows (config.resolved.yaml's `decode` section has them all).
DECODE_KEYS = ("num_beams", "max_new_tokens", "max_length", "length_penalty")


def summary(run: Run) -> dict[str, Any]:
    """One row of `peftrun ls`: status, what was trained, its size, its key metric per split."""
    from peftrun.metrics import KEY_METRIC

    cfg, meta = _resolved(run), run.meta()
    dataset = cfg.get("data", {}).get("dataset")
    key = KEY_METRIC.get(dataset or "", "")
    decode = cfg.get("decode", {})
    return {
        "run": str(run.path),
        "status": run.status(),
        "dataset": dataset,
        "model": cfg.get("model", {}).get("name"),
        "method": cfg.get("method", {}).get("kind"),
        "key_metric": key,
        "scores": {split: m.get("scores", {}).get(key) for split, m in run.read_metrics().items()},
        "parameters": meta.get("parameters"),  # base, trainable, stored and both as % of base
        "adapter_bytes": adapter_bytes(run),
        "decode": {name: decode.get(name) for name in DECODE_KEYS},
        "started": meta.get("started"),
        "error": meta.get("error"),
    }


def card(run: Run) -> dict[str, Any]:
    """`peftrun show RUN_DIR`: the `ls` row plus every metric per split (raw scale) and when it ran."""
    meta = run.meta()
    metrics = run.read_metrics()
    return {
        **summary(run),
        "metrics": {split: m.get("scores", {}) for split, m in metrics.items()},
        "instances": {split: m.get("instances") for split, m in metrics.items()},
        "adapter_dir": str(run.adapter_dir),
        "finished": meta.get("finished"),
        "updates": meta.get("updates"),
    }


def adapter_bytes(run: Run) -> int | None:
    """Size on disk of what the run keeps: the files under adapter/ (None before it is saved)."""
    if not run.adapter_dir.is_dir():
        return None
    return sum(f.stat().st_size for f in run.adapter_dir.rglob("*") if f.is_file())


def human_size(size: int | None) -> str:
    """Bytes in binary units, e.g. 81.9 KiB ("-" when unknown)."""
    if size is None:
        return "-"
    value, unit = float(size), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            break
        value /= 1024
    return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"


def render_rows(rows: list[dict[str, Any]]) -> list[str]:
    """`peftrun ls`: one line per run (status first), columns aligned; splits any run has."""
    splits = sorted({split for row in rows for split in row["scores"]})
    stored = [_pct((row.get("parameters") or {}).get("stored_pct")) for row in rows]
    beams = [str(row["decode"].get("num_beams") or "?") for row in rows]
    table = [
        [
            row["status"],
            row["method"] or "?",
            row["model"] or "?",
            f"stored {pct:>{max(map(len, stored))}}",  # numbers right-aligned after their label
            human_size(row.get("adapter_bytes")),
            row["key_metric"] or "-",
            *(f"{split}:{_number(row['scores'].get(split))}" for split in splits),
            f"beams {n:>{max(map(len, beams))}}",
            row["run"],
        ]
        for row, pct, n in zip(rows, stored, beams, strict=True)
    ]
    widths = [max(len(cells[i]) for cells in table) for i in range(len(table[0]))]
    return [
        "  ".join(
            c if i == len(cells) - 1 else c.rjust(widths[i]) if i == 4 else c.ljust(widths[i])
            for i, c in enumerate(cells)
        )
        for cells in table
    ]


def render_card(info: dict[str, Any]) -> str:
    """`peftrun show RUN_DIR` as text: one field per line, then a metrics table per split."""
    params = info.get("parameters")
    if params:
        parameters = (
            f"trainable {params['trainable']:,} ({_pct(params['trainable_pct'])} of base "
            f"{params['base']:,}); stored {params['stored']:,} ({_pct(params['stored_pct'])})"
        )
    else:
        parameters = "- (not recorded: the run stopped before it started)"
    size = info.get("adapter_bytes")
    adapter = f"{human_size(size)} ({size:,} bytes) in {info['adapter_dir']}" if size is not None else "-"
    decode = ", ".join(f"{k} {_plain(v)}" for k, v in info["decode"].items())
    fields = [
        ("run", info["run"]),
        ("status", info["status"]),
        ("error", info["error"]),
        ("dataset", info["dataset"]),
        ("method", info["method"]),
        ("base model", info["model"]),
        ("parameters", parameters),
        ("adapter", adapter),
        ("decoding", decode),
        ("started", info["started"]),
        ("finished", info["finished"]),
        ("updates", info["updates"]),
    ]
    lines = [f"{name:<11} {_plain(value)}" for name, value in fields if name != "error" or value]
    if not info["metrics"]:
        return "\n".join([*lines, f"{'metrics':<11} - (none yet)"])
    names = list(dict.fromkeys(n for scores in info["metrics"].values() for n in scores))
    width = max(8, *(len(n) for n in names))
    lines.append(f"{'metrics':<11} per split, as metrics/SPLIT.json stores them (raw scale)")
    lines.append("  split  instances  " + "  ".join(f"{n:>{width}}" for n in names))
    for split, scores in info["metrics"].items():
        cells = "  ".join(f"{_number(scores.get(n)):>{width}}" for n in names)
        lines.append(f"  {split:<6} {_plain(info['instances'].get(split)):>9}  {cells}")
    return "\n".join(lines)


def _resolved(run: Run) -> dict[str, Any]:
    import yaml

    path = run.resolved_config_path
    cfg = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    return cfg if isinstance(cfg, dict) else {}


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def _pct(value: float | None) -> str:
    return "?" if value is None else f"{value:.3f}%"


def _plain(value: Any) -> str:
    return "-" if value is None else str(value)
