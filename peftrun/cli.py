"""The `peftrun` command line. Thin commands; heavy imports happen inside the command bodies so
that `peftrun --help` stays fast (no torch, no transformers)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

from peftrun import cli_text
from peftrun.errors import PeftrunError
from peftrun.run_states import RunState


class _Commands(TyperGroup):
    """Every command's user errors (PeftrunError) end the same way, in this one place: one line on
    stderr, exit code 2 (see `_fail`)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except PeftrunError as err:
            _fail(err)


app = typer.Typer(
    cls=_Commands,
    help="peftrun: train, decode and score parameter-efficient fine-tuning experiments "
    "(prefix-tuning and friends) from one YAML config.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigArg = Annotated[Path, typer.Argument(help="experiment config (YAML)", show_default=False)]
Overrides = Annotated[
    list[str] | None,
    typer.Argument(help="dotted overrides, e.g. train.lr=1e-4 method.prefix_len=5", show_default=False),
]
RunDirArg = Annotated[
    Path, typer.Argument(help="a run directory made by `peftrun train`", show_default=False)
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print machine-readable JSON on stdout")]


def versions() -> str:
    """peftrun's version and the installed torch and transformers, read from package metadata
    (importing torch would make every command slow to start)."""
    from importlib import metadata

    from peftrun import __version__

    def installed(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "not installed"

    return f"peftrun {__version__} (torch {installed('torch')}, transformers {installed('transformers')})"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(versions())
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="print peftrun, torch and transformers versions",
            callback=_print_version,
            is_eager=True,
        ),
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="show the traceback of an error")] = False,
) -> None:
    """peftrun: train, decode and score parameter-efficient fine-tuning experiments (prefix-tuning
    and friends) from one YAML config."""
    _settings["debug"] = debug


_settings = {"debug": False}


def _fail(err: Exception) -> None:
    """A user's mistake: one line (with `--debug`, the traceback first) and exit code 2. Called
    while handling `err`, so that the traceback printed is its own."""
    if _settings["debug"]:
        import traceback

        traceback.print_exc()
    typer.echo(f"peftrun: error: {err}", err=True)
    raise typer.Exit(2)


@app.command()
def train(
    config: ConfigArg,
    overrides: Overrides = None,
    run_dir: Annotated[
        str | None, typer.Option("--run-dir", help="run directory (default: derived from the config)")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="replace a run directory that holds another config")
    ] = False,
    resume_from_last_good: Annotated[
        bool,
        typer.Option(
            "--resume-from-last-good",
            help="continue an unfinished run from its last checkpoint with changed train.* settings "
            "(e.g. a lower train.lr after a divergence)",
        ),
    ] = False,
    gpus: Annotated[
        int | None,
        typer.Option(
            "--gpus",
            help="data-parallel over N GPUs: runs `accelerate launch --num_processes N -m peftrun train`",
        ),
    ] = None,
) -> None:
    """Train, decode and score one experiment; re-running an interrupted run resumes it."""
    if gpus is not None and gpus > 1:
        _launch_data_parallel(gpus)
    from peftrun.interrupts import Interrupted, graceful

    try:
        from peftrun import experiment

        with graceful():
            path, results = experiment.train(
                config, overrides or [], run_dir, overwrite, resume_from_last_good=resume_from_last_good
            )
    except Interrupted as stop:
        where = f" {stop.where}" if stop.where else ""
        if stop.run_dir is None:
            typer.echo(f"peftrun: stopped by {stop} before the run started; nothing was written", err=True)
        else:
            again = " ".join(
                ["peftrun train", str(config), *(overrides or []), "--run-dir", str(stop.run_dir)]
            )
            typer.echo(f"peftrun: stopped by {stop}{where}; resume with: {again}", err=True)
        raise typer.Exit(stop.exit_code) from None
    except KeyboardInterrupt:
        typer.echo("peftrun: stopped at once (second signal); the last checkpoint is kept", err=True)
        raise typer.Exit(130) from None
    _echo_lines(cli_text.metrics_table(results))
    typer.echo(f"run directory: {path}", err=True)


@app.command("train-packed")
def train_packed(
    pack_file: Annotated[
        Path,
        typer.Argument(
            help='JSON: {"runs": [{"config": PATH, "overrides": [...], "run_dir": DIR}, ...]}',
            show_default=False,
        ),
    ],
) -> None:
    """Train several runs in one process on one frozen base, their rows in the same batches (what
    `peftrun sweep --pack` runs). Each run's directory is what `peftrun train` makes; re-running
    resumes; a run that fails stops alone. Exit 1 if any failed."""
    from peftrun.interrupts import Interrupted, graceful

    try:
        from peftrun import packing

        with graceful():
            outcomes = packing.train_pack(packing.read_pack_file(pack_file))
    except Interrupted as stop:
        where = f" {stop.where}" if stop.where else ""
        typer.echo(
            f"peftrun: stopped by {stop}{where}; resume with: peftrun train-packed {pack_file}", err=True
        )
        raise typer.Exit(stop.exit_code) from None
    except KeyboardInterrupt:
        typer.echo("peftrun: stopped at once (second signal); the last checkpoints are kept", err=True)
        raise typer.Exit(130) from None
    _echo_lines(cli_text.packed_ends(outcomes), err=True)
    if any(outcome.state == RunState.FAILED for outcome in outcomes):
        raise typer.Exit(1)


def _launch_data_parallel(gpus: int) -> None:
    """Re-run this very command under `accelerate launch` with N processes (one per GPU)."""
    import subprocess

    from peftrun.distributed import launched_processes

    if launched_processes() > 1:
        return  # already one of the launched processes
    args, skip = [], False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
        elif arg == "--gpus":
            skip = True  # its value follows
        elif not arg.startswith("--gpus="):
            args.append(arg)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(gpus)]
    command += ["--multi_gpu", "-m", "peftrun", *args]
    raise typer.Exit(subprocess.run(command).returncode)


@app.command()
def decode(
    run_dir: RunDirArg,
    overrides: Annotated[
        list[str] | None,
        typer.Argument(
            help="decode.* overrides, e.g. decode.num_beams=5: decoded into RUN/decodes/NAME, apart "
            "from the run's own outputs",
            show_default=False,
        ),
    ] = None,
    split: Annotated[
        list[str] | None, typer.Option("--split", help="dev or test (repeatable; default: the config's)")
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            "--name", help="the folder under RUN/decodes/ (default: from the overrides, e.g. num_beams=5)"
        ),
    ] = None,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="without overrides: decode a split the run has scored again, into its own files",
        ),
    ] = False,
) -> None:
    """Decode a trained run's stored adapter (again) and score the outputs: with its own settings into
    its own files (a split not decoded yet), or with decode.* overrides into RUN/decodes/NAME, kept
    apart (re-running skips splits done there)."""
    from peftrun import experiment

    results = experiment.decode(run_dir, split, overrides or [], name, overwrite)
    _echo_lines(cli_text.metrics_table(results))


@app.command()
def export(
    run_dir: RunDirArg,
    to: Annotated[str, typer.Option("--to", help="target format: peft (Hugging Face peft's adapter folder)")],
    out: Annotated[Path, typer.Option("--out", help="folder to write (new or empty)")],
) -> None:
    """Export a run's adapter for another library: with --to peft, adapter_config.json and
    adapter_model.safetensors that peft's PeftModel.from_pretrained loads (a built-in tiny base is
    written beside them, in OUT/base). What peft cannot express is refused, saying what would be lost."""
    from peftrun.serving import peft_export

    folder = peft_export.export(run_dir, out, to)
    typer.echo(f"wrote {folder}", err=True)


@app.command("eval")
def evaluate(
    run_dir: Annotated[
        Path | None, typer.Argument(help="a run directory to re-score", show_default=False)
    ] = None,
    predictions: Annotated[
        Path | None, typer.Option("--predictions", help="an outputs file (.txt one per line, or .jsonl)")
    ] = None,
    dataset: Annotated[str, typer.Option("--dataset", help="e2e or xsum (with --predictions)")] = "e2e",
    split: Annotated[str, typer.Option("--split", help="dev or test (with --predictions)")] = "test",
    references: Annotated[
        Path | None,
        typer.Option(
            "--references", help="references file (.csv mr/ref, .jsonl, or blank-line-separated text)"
        ),
    ] = None,
    reference_style: Annotated[
        str | None,
        typer.Option(
            "--reference-style",
            help="raw or tokenized references (E2E; default raw). With a run directory: re-score its "
            "predictions against them, into RUN/rescores/STYLE (its own metrics untouched)",
        ),
    ] = None,
    bleu: Annotated[
        str | None,
        typer.Option(
            "--bleu", help="print only this BLEU/NIST variant: perl (mteval) or py (the -p variant)"
        ),
    ] = None,
    compare: Annotated[
        list[Path] | None,
        typer.Option("--compare", help="two run dirs: bootstrap CI, two-sided p of B - A (give twice)"),
    ] = None,
    samples: Annotated[int, typer.Option("--samples", help="bootstrap resamples (with --compare)")] = 1000,
    decode: Annotated[
        str | None,
        typer.Option("--decode", help="with a run directory: score its decode RUN/decodes/NAME instead"),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Score a run's predictions, or any outputs file against a dataset split; or compare two runs."""
    from peftrun import scoring

    if compare:
        if len(compare) != 2:
            raise PeftrunError("--compare takes exactly two run directories: --compare RUN_A --compare RUN_B")
        rows = scoring.compare_runs(compare[0], compare[1], split, samples, seed=0)
        _echo_lines([json.dumps(rows, indent=2)] if as_json else cli_text.comparison_table(rows))
        return
    if predictions is not None:
        style = reference_style or "raw"
        results = {split: scoring.score_file(predictions, dataset, split, style, references)}
        results = {s: scoring.bleu_variant(r, bleu) for s, r in results.items()} if bleu else results
    elif run_dir is not None:
        results = scoring.rescore(run_dir, reference_style, bleu, decode)
    else:
        raise PeftrunError("give a run directory, or --predictions FILE --dataset e2e --split test")
    if as_json:
        typer.echo(json.dumps({split: r["scores"] for split, r in results.items()}, indent=2))
    else:
        _echo_lines(cli_text.metrics_table(results))


@app.command()
def show(
    target: Annotated[
        Path,
        typer.Argument(help="experiment config (YAML), or a run directory (its card)", show_default=False),
    ],
    overrides: Overrides = None,
    as_json: JsonOpt = False,
) -> None:
    """Print the resolved config (defaults filled, overrides applied) and its run directory; given a
    run directory, its card: method, model, parameters, adapter size, decoding, metrics, status."""
    from peftrun.runs import is_run_dir

    if is_run_dir(target):
        _show_run(target, overrides, as_json)
        return
    from peftrun import config as config_module

    cfg = config_module.load(target, overrides or [])
    if as_json:
        typer.echo(
            json.dumps({"config": cfg.model_dump(mode="json"), "run_dir": str(cfg.run_dir())}, indent=2)
        )
    else:
        typer.echo(cfg.to_yaml().rstrip())
        typer.echo(f"# run directory: {cfg.run_dir()}")


def _show_run(run_dir: Path, overrides: list[str] | None, as_json: bool) -> None:
    from peftrun import run_card
    from peftrun.runs import Run

    if overrides:
        raise PeftrunError(f"{run_dir} is a run directory; overrides apply only to a config file")
    info = run_card.card(Run(run_dir, writer=False))
    typer.echo(json.dumps(info, indent=2) if as_json else run_card.render_card(info))


@app.command()
def params(config: ConfigArg, overrides: Overrides = None, as_json: JsonOpt = False) -> None:
    """Count parameters: trainable during training, stored after it, both as % of the base model
    (built from the model's config, no weights needed)."""
    from peftrun import experiment

    counts = experiment.parameter_counts(config, overrides or [])
    _echo_lines([json.dumps(counts, indent=2)] if as_json else cli_text.parameter_counts(counts))


@app.command("ls")
def list_runs(
    directory: Annotated[Path, typer.Argument(help="folder of run directories")] = Path("runs"),
    as_json: JsonOpt = False,
) -> None:
    """List runs, one line each: status, method, model, stored %, adapter size, the key metric per
    split, beams, run directory."""
    from peftrun import run_card
    from peftrun.runs import Run, is_run_dir

    if not directory.is_dir():
        raise PeftrunError(f"{directory} is not a directory")
    rows = [run_card.summary(Run(p, writer=False)) for p in sorted(directory.iterdir()) if is_run_dir(p)]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    elif not rows:
        typer.echo(f"no runs in {directory}")
    else:
        typer.echo("\n".join(run_card.render_rows(rows)))


@app.command()
def sweep(
    sweep_file: Annotated[Path, typer.Argument(help="sweep file (YAML: base, set, grid, cases, seeds)")],
    overrides: Overrides = None,
    root: Annotated[Path, typer.Option("--root", help="parent of the sweep's folder")] = Path("runs"),
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="list the runs (name, run dir, overrides, state); run nothing")
    ] = False,
    workers: Annotated[
        int | None, typer.Option("--workers", help="runs at once (default: one per visible GPU, else 1)")
    ] = None,
    executor: Annotated[
        str, typer.Option("--executor", help="local (processes here) or slurm (submitit)")
    ] = "local",
    fail_fast: Annotated[bool, typer.Option("--fail-fast", help="stop at the first failed run")] = False,
    partition: Annotated[str | None, typer.Option("--partition", help="Slurm partition")] = None,
    gpus_per_task: Annotated[int | None, typer.Option("--gpus-per-task", help="Slurm: GPUs per run")] = None,
    time_limit: Annotated[
        str | None, typer.Option("--time", help="Slurm: time per run (minutes or H:MM:SS)")
    ] = None,
    mem: Annotated[str | None, typer.Option("--mem", help="Slurm: memory per run, e.g. 32G")] = None,
    pack: Annotated[
        int,
        typer.Option(
            "--pack",
            min=1,
            help="train up to N compatible runs (same frozen base; prefix, prompt, P-tuning, LoRA) "
            "in one process, their rows in the same batches",
        ),
    ] = 1,
    reselect: Annotated[
        bool,
        typer.Option(
            "--reselect",
            help="select: accept a changed winner after test was decoded (recorded; the report says so)",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Run a study: every point of SWEEP_FILE as its own run directory under ROOT/NAME. Points are
    validated before anything starts; re-running skips DONE runs and resumes interrupted ones.
    With `select:` the grid is tuned on dev and only each group's winner is decoded on test."""
    from peftrun.studies import sweep as sweeps

    slurm = {"partition": partition, "gpus_per_task": gpus_per_task, "time": time_limit, "mem": mem}
    summary = sweeps.run(
        sweep_file,
        root,
        overrides or [],
        dry_run=dry_run,
        workers=workers,
        executor=executor,
        fail_fast=fail_fast,
        slurm=slurm,
        pack=pack,
        reselect=reselect,
    )
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    elif dry_run:
        _echo_lines(cli_text.sweep_listing(summary))
    else:
        _echo_lines(cli_text.sweep_summary(summary), err=True)
    if cli_text.unfinished(summary) and not dry_run:
        raise typer.Exit(1)


@app.command()
def report(
    directories: Annotated[
        list[Path],
        typer.Argument(help="folders searched recursively for run directories (and sweep.json manifests)"),
    ],
    split: Annotated[str, typer.Option("--split", help="the split whose metrics are reported")] = "test",
    by: Annotated[
        list[str] | None,
        typer.Option("--by", help="group by this config key (repeatable; default: the keys that vary)"),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="md (default), csv, latex (booktabs) or json")] = "md",
    out: Annotated[Path | None, typer.Option("--out", help="write the table to FILE, not stdout")] = None,
    plots: Annotated[
        Path | None, typer.Option("--plots", help="also write figures (PNG and PDF) into this folder")
    ] = None,
    bleu: Annotated[
        str,
        typer.Option(
            "--bleu",
            help="E2E BLEU/NIST: perl (mteval, the official default) or py (the -p variant, the paper's)",
        ),
    ] = "perl",
    samples: Annotated[
        int, typer.Option("--samples", help="bootstrap resamples of the significance test")
    ] = 1000,
    decode: Annotated[
        str | None,
        typer.Option(
            "--decode",
            help="report each run's RUN/decodes/NAME metrics (from `peftrun decode RUN decode.*=...`) "
            "instead of its own",
        ),
    ] = None,
    reference_style: Annotated[
        str | None,
        typer.Option(
            "--reference-style",
            help="E2E: report the outputs as re-scored against raw or tokenized references (from "
            "`peftrun eval RUN --reference-style STYLE [--decode NAME]`)",
        ),
    ] = None,
) -> None:
    """Tabulate finished runs: grouped by the config keys that vary (seeds collapsed), each cell
    mean ± sample std (n), the best row tested against every other by a paired bootstrap.
    Missing and failed runs are listed; no finished run at all is an error."""
    from peftrun.studies import report as reports
    from peftrun.studies import tables

    if fmt not in tables.FORMATS:
        raise PeftrunError(f"--format {fmt!r}: choose md, csv, latex or json")
    result = reports.build(directories, split, by, bleu, samples, decode=decode, references=reference_style)
    text = tables.render(result, fmt)
    figures = []
    if plots is not None:
        from peftrun.studies import plots as figures_module

        figures = figures_module.write(result, plots)
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {out}", err=True)
    for path in figures:
        typer.echo(f"wrote {path}", err=True)


@app.command()
def generate(
    adapter: Annotated[
        list[str] | None,
        typer.Option("--adapter", help="NAME=RUN_DIR (or a run dir, named after it); repeatable"),
    ] = None,
    input_file: Annotated[
        str, typer.Option("--input", help='JSONL lines {"id", "adapter", "input"}; - for stdin')
    ] = "-",
    output_file: Annotated[str, typer.Option("--output", help="JSONL outputs; - for stdout")] = "-",
    base: Annotated[
        str | None, typer.Option("--base", help="the frozen base model (default: the adapters' own)")
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Argument(
            help="decode.* overrides for every adapter, e.g. decode.num_beams=1", show_default=False
        ),
    ] = None,
) -> None:
    """Generate with many adapters on one frozen base: rows of different adapters are decoded
    together in mixed batches, outputs are written in input order, chunk by chunk."""
    from peftrun.serving import generate as generating
    from peftrun.serving.adapters import parse_adapter_args

    generating.run(parse_adapter_args(adapter or []), input_file, output_file, base, overrides or [])


@app.command()
def serve(
    adapter: Annotated[
        list[str] | None,
        typer.Option("--adapter", help="NAME=RUN_DIR (or a run dir, named after it); repeatable"),
    ] = None,
    base: Annotated[
        str | None, typer.Option("--base", help="the frozen base model (default: the adapters' own)")
    ] = None,
    host: Annotated[str, typer.Option("--host", help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="port (0: any free one, said at start-up)")] = 8000,
    api_key_file: Annotated[
        Path | None, typer.Option("--api-key-file", help="a file holding the API key clients must send")
    ] = None,
    adapter_root: Annotated[
        Path | None,
        typer.Option(
            "--adapter-root", help="allow POST /v1/adapters to load run dirs from under this folder"
        ),
    ] = None,
    max_batch: Annotated[int, typer.Option("--max-batch", help="rows (prompts x n) per decoded batch")] = 16,
    max_queue: Annotated[
        int, typer.Option("--max-queue", help="rows that may wait; more get 429 with Retry-After")
    ] = 256,
    no_mixing: Annotated[
        bool, typer.Option("--no-mixing", help="batch one adapter's requests at a time (for comparison)")
    ] = False,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:1, ...")] = "auto",
) -> None:
    """Serve one frozen base and many adapters (prefixes, prompts, LoRAs) over an
    OpenAI-compatible HTTP API: rows of different adapters are decoded in the same batch."""
    from peftrun.serving.adapters import parse_adapter_args

    if max_batch < 1 or max_queue < 1:
        raise PeftrunError("--max-batch and --max-queue must be at least 1")
    if not 0 <= port <= 65535:
        raise PeftrunError(f"--port {port}: choose 0 to 65535")
    key = None
    if api_key_file is not None:
        try:
            key = api_key_file.read_text(encoding="utf-8").strip()
        except OSError as err:
            raise PeftrunError(f"--api-key-file {api_key_file}: {err.strerror or err}") from None
        if not key:
            raise PeftrunError(f"--api-key-file {api_key_file} is empty")
    if adapter_root is not None and not adapter_root.is_dir():
        raise PeftrunError(f"--adapter-root {adapter_root}: no such folder")
    try:
        from peftrun.serving import server
    except ImportError as err:
        raise PeftrunError(f"peftrun serve needs {err.name}: pip install 'peftrun[serve]'") from None

    settings = server.ServeSettings(host=host, port=port, api_key=key, adapter_root=adapter_root)
    server.serve(
        parse_adapter_args(adapter or []), base, settings, max_batch, max_queue, not no_mixing, device
    )


def _echo_lines(lines: list[str], err: bool = False) -> None:
    for line in lines:
        typer.echo(line, err=err)


def main() -> None:  # pragma: no cover - console entry point
    app(sys.argv[1:])
