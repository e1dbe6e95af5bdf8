"""What `modal run launch/modal_app.py -- OVERRIDES` does, as plain functions over the calls it makes."""

from cats_model.cloud.calls import follow
from cats_model.cloud.overrides import split_launch, split_run_name
from cats_model.cloud.run_config import compose_run
from cats_model.cloud.settings import load_settings
from cats_model.errors import UserError, exit_on_user_error
from cats_model.run_layout import fresh_run_name
from cats_model.run_summary import summary_block


def run_single(args, calls) -> dict:
    """One run: composed and checked here, once (a bad override fails in one line before any container starts),
    then one train call that trains that config, followed through the calls that continue it past its timeout."""
    overrides, run_name = split_run_name(args)
    settings = load_settings()
    with exit_on_user_error():
        config, call = compose_run(overrides, settings)
        overrides, _ = split_launch(overrides)
        run_name = run_name or fresh_run_name()
        with calls.running():
            calls.prepare_data([config])
            call_id = calls.submit(config, overrides, run_name, call)
            print(
                f"run {run_name}: call {call_id} on {call.gpu}, timeout {call.timeout} s, "
                f"overrides {overrides or '(none)'}",
                flush=True,
            )
            try:
                result = follow(calls, call_id)
            except Exception as err:  # a crash that Modal's retries did not get past
                raise UserError(f"run {run_name} failed: {err}") from err
        if "error" in result:
            raise UserError(result["error"])
    print(report(result, overrides, settings))
    return result


def report(result: dict, overrides: list[str] = (), settings=None) -> str:
    """The run's name, its final metrics and cost, then the block every run ends with (run_summary): where its
    files are on the outputs volume and the commands that fetch, use and continue it."""
    settings = settings or load_settings()
    name, seconds = result["run_name"], result.get("container_s") or 0
    calls = result.get("calls", 1)
    cost = settings.cost(seconds, result.get("gpu"))
    finished = (
        f"run {name} finished: epoch {result.get('epoch')}, val/acc_best {_fmt(result.get('val/acc_best'))}, "
        f"test/acc {_fmt(result.get('test/acc'))}, {seconds:.0f} s in {calls} call{'s' * (calls > 1)}, "
        f"about ${cost:.2f} on {result.get('gpu')}"
    )
    return "\n".join([finished, summary_block(result, list(overrides), modal_run=name)])


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def run_sweep(args) -> None:
    """`-m` after `--`: the same Hydra multirun as `python -m cats_model.train -m hydra/launcher=modal ...`. The
    launcher finds the app already running (this is its local entrypoint) and makes its calls in it."""
    from hydra._internal.utils import _run_hydra, get_args_parser

    from cats_model.paths import CONFIG_DIR
    from cats_model.train import main as train_main

    overrides = [a for a in args if a not in ("-m", "--multirun", "--")]
    parser = get_args_parser()
    # What @hydra.main does with the command line, given these arguments instead of sys.argv.
    _run_hydra(
        args=parser.parse_args(["--multirun", "hydra/launcher=modal", *overrides]),
        args_parser=parser,
        task_function=train_main.__wrapped__,
        config_path=str(CONFIG_DIR),
        config_name="train",
    )


def main(args, calls):
    if "-m" in args or "--multirun" in args:
        return run_sweep(args)
    return run_single(args, calls)
