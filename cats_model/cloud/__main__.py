"""Results from the outputs volume, on this machine:

python -m cats_model.cloud fetch RUN        a run's metrics, config, best checkpoint and plots into ./runs/RUN/
python -m cats_model.cloud summary SWEEP    the table of a sweep, also after its terminal was closed; a sweep run
                                           here (backend=local): its name or its folder (outputs/sweeps/<time>)
python -m cats_model.cloud submit OVERRIDES  a run on the deployed app (`modal deploy launch/modal_app.py`): it
                                           goes on whatever becomes of this terminal
"""

import argparse
from pathlib import Path

from cats_model.atomic import atomic_path
from cats_model.cloud import entry, outputs
from cats_model.cloud.calls import ModalCalls, deployed_app
from cats_model.cloud.sweep_summary import format_table, local_rows
from cats_model.errors import exit_on_user_error
from cats_model.paths import configured_path
from cats_model.run_layout import RUNS_DIR


def fetch(run_name: str, volume, into: Path = Path(RUNS_DIR)) -> Path:
    """Write the run's files into `into/run_name/`, laid out as in the run folder on the volume."""
    files = outputs.run_files(volume, run_name)
    target = (into / run_name).absolute()
    for relative, data in files.items():
        path = (target / relative).resolve()
        if not path.is_relative_to(target.resolve()):
            raise ValueError(f"refusing {relative!r}: outside {target}")
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
    print(f"run {run_name}: {len(files)} files in {target}/: {', '.join(sorted(files))}")
    return target


def local_summary(sweep: str) -> list[dict] | None:
    """A sweep run on this machine, by its folder or name: its table, read without Modal; None if none is."""
    rows = local_rows(sweep, configured_path("log_dir") / RUNS_DIR)
    if rows is not None:
        print(format_table(rows))
    return rows


def summary(sweep: str, volume) -> list[dict]:
    rows = outputs.sweep_rows(volume, sweep)
    print(format_table(rows) if rows else f"no job of sweep {sweep} has started on the outputs volume")
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cats_model.cloud", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    fetch_parser = commands.add_parser("fetch", help="a run's metrics, config, best checkpoint and plots")
    fetch_parser.add_argument("run", help="the run's name (printed when it started and finished)")
    fetch_parser.add_argument(
        "--into", type=Path, default=Path(RUNS_DIR), help=f"folder of run folders (./{RUNS_DIR})"
    )
    summary_parser = commands.add_parser(
        "summary", help="a sweep's table, from Modal's outputs volume or here"
    )
    summary_parser.add_argument(
        "sweep", help="the sweep's name (printed when it started), or the folder of a sweep run here"
    )
    submit_parser = commands.add_parser("submit", help="a run on the deployed app, as `modal run` takes it")
    submit_parser.add_argument(
        "overrides", nargs=argparse.REMAINDER, help="the run's overrides, run_name=..."
    )
    args = parser.parse_args(argv)
    if args.command == "submit":
        entry.run_single(args.overrides, ModalCalls(deployed_app()))
        return
    if args.command == "summary" and local_summary(args.sweep) is not None:
        return
    # Read from this machine through Modal's Volume API: no app, no container, no image build.
    if args.command == "fetch":
        with exit_on_user_error(), outputs.opened() as volume:
            fetch(args.run, volume, args.into)
        return
    without = f"for a sweep run here, give its folder or its name ({args.sweep} is neither here)"
    with exit_on_user_error(), outputs.opened(without) as volume:
        summary(args.sweep, volume)


if __name__ == "__main__":
    main()
