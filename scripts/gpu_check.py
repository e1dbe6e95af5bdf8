"""The GPU check: every path a paid Modal run takes, run for real on this machine, and one JSON of the results.

Run through `bash scripts/gpu_check.sh [--cpu] [--out FILE|DIR]`, which brings Hydra along where it is missing.
Each check is a plain function that returns its figures or raises with the reason; the JSON, written once at
the end (atomically), holds the machine, each check's outcome under `checks` ("passed" or "failed: <reason>")
and its figures under `figures`. Every command's output goes to a log beside the JSON.

--cpu: the same checks at small sizes on the CPU (the test suite runs it); GPU-only figures "not measured".
"""

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from cats_model import run_layout
from cats_model.atomic import atomic_write_text
from cats_model.config import compose_train_config
from cats_model.data.oxford import CAT, OxfordPet
from cats_model.run_layout import METRICS_FILE, last_checkpoint, metrics_file
from cats_model.system import auto_precision, available_cpus

ROOT = Path(__file__).resolve().parent.parent
NOT_MEASURED = "not measured: no GPU"


@dataclass(frozen=True)
class Sizes:
    trainer: tuple[str, ...]  # the trainer choice of the training checks
    ddp: tuple[str, ...]  # the DDP check's instead
    training: tuple[str, ...]  # what every training check trains
    bench: tuple[str, ...]  # arguments of python -m cats_model.bench
    budget_s: int  # for all checks together, so that the JSON is written before a caller's time limit


GPU = Sizes(
    trainer=("trainer=gpu",),
    ddp=("trainer=ddp", "trainer.devices=1"),
    training=tuple(
        "data=synthetic data.image_size=224 data.batch_size=64 data.synthetic.trainval_per_class=100 "
        "data.synthetic.test_per_class=20 data.synthetic.dog_breeds=0 data.synthetic.min_size=300 "
        "data.synthetic.max_size=500 model=resnet18 model.pretrained=false trainer.max_epochs=2 "
        "trainer.precision=auto".split()
    ),
    bench=(),  # its defaults: resnet18 at 224 px, batch 64, Oxford-sized synthetic photos
    budget_s=420,
)
CPU = Sizes(
    trainer=("trainer=cpu",),
    # One process, as on the GPU machine: the DDP strategy, its process group and sampler; a relaunched second
    # rank is tests/test_modal_app.py's (through the Modal function's body). SyncBatchNorm needs a GPU.
    ddp=("trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=1", "trainer.sync_batchnorm=false"),
    training=tuple(
        "data=synthetic data.image_size=32 data.batch_size=16 data.num_workers=0 "
        "data.synthetic.trainval_per_class=6 data.synthetic.test_per_class=2 data.synthetic.dog_breeds=0 "
        "model=resnet18 model.pretrained=false trainer.max_epochs=2 trainer.precision=auto".split()
    ),
    bench=tuple(
        "--images-per-class 4 --image-size 32 --batch-size 8 --workers 0 --epochs 1 --train-size 16 "
        "--train-steps 4".split()
    ),
    budget_s=900,
)
EPOCHS = 2


class CheckFailed(Exception):
    pass


@dataclass
class Check:
    """What the checks share: the mode, a work folder, the log, the time left, and the trained checkpoint."""

    gpu: bool
    sizes: Sizes
    work: Path
    log: Path
    deadline: float
    best_checkpoint: str | None = None
    test_acc: float | None = None

    @property
    def data_dir(self) -> Path:
        return self.work / "data"

    def python(self, name: str, args: list[str], limit_s: float, expect_rc: int = 0) -> str:
        """Run `python ARGS` in its own process group, output appended to the log; return that output."""
        timeout = min(limit_s, self.deadline - time.monotonic())
        if timeout <= 0:
            raise CheckFailed("not run: the time budget was spent")
        env = {
            **os.environ,
            "CATS_MODEL_DATA_DIR": str(self.data_dir),
            "CATS_MODEL_OUTPUT_DIR": str(self.work / "outputs"),
            # tests/ for the fault injection of the preemption suite (faults.KillAt)
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]),
        }
        with open(self.log, "a") as log:
            log.write(f"\n===== {name}: python {' '.join(args)}\n")
            log.flush()
            start = log.tell()
            process = subprocess.Popen(
                [sys.executable, *args], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.work,
                start_new_session=True,
            )  # fmt: skip
            try:
                rc = process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                rc = None
            finally:  # DDP ranks and loader workers go with it
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        with open(self.log) as log:
            log.seek(start)
            output = log.read()
        if rc is None:
            raise CheckFailed(f"timed out after {timeout:.0f} s")
        if rc != expect_rc:
            raise CheckFailed(f"exit status {rc}, expected {expect_rc}: {last_line(output)}")
        return output

    def train(self, name: str, trainer: tuple[str, ...], extra: list[str] = (), expect_rc: int = 0):
        """`python -m cats_model.train` into its own run folder; (run folder, output)."""
        folder = run_layout.run_dir(self.work, name)
        args = ["-m", "cats_model.train", *trainer, *self.sizes.training, *extra, f"hydra.run.dir={folder}"]
        return folder, self.python(name, args, limit_s=300, expect_rc=expect_rc)

    def trained(self, run_dir: Path, output: str) -> dict:
        """The figures of a finished run, checked: all epochs, a test accuracy, the GPU and precision it used."""
        metrics = json.loads(metrics_file(run_dir).read_text())
        if metrics["epoch"] != EPOCHS or metrics.get("test/acc") is None:
            raise CheckFailed(
                f"{METRICS_FILE} has epoch {metrics['epoch']} and test/acc {metrics.get('test/acc')}"
            )
        precision = precision_used(output)
        if self.gpu:
            if not gpu_used(output):
                raise CheckFailed("trained without the GPU")
            expected = auto_precision("gpu")
            if precision != expected:
                raise CheckFailed(f"precision auto trained in {precision}, expected {expected}")
        return {
            "precision": precision,
            **{
                key: metrics[key]
                for key in ("test/acc", "val/acc_best", "train_images_per_sec", "wall_time_s")
            },
        }


def precision_used(output: str) -> str:
    """What Lightning says it trained in."""
    amp = re.search(r"Using (bfloat16|16bit) Automatic Mixed Precision", output)
    return {"bfloat16": "bf16-mixed", "16bit": "16-mixed"}[amp.group(1)] if amp else "32-true"


def gpu_used(output: str) -> bool:
    return re.search(r"GPU available: True \(cuda\), used: True", output) is not None


def last_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


def check_train(check: Check) -> dict:
    run_dir, output = check.train("train", check.sizes.trainer)
    figures = check.trained(run_dir, output)
    check.best_checkpoint = json.loads(metrics_file(run_dir).read_text())["best_model_path"]
    check.test_acc = figures["test/acc"]
    return figures


def check_resume_after_kill(check: Check) -> dict:
    """SIGKILL in the second epoch's second step (tests/faults.py's KillAt), then the same command again."""
    marker = check.work / "killed"
    fault = ["+callbacks.fault._target_=faults.KillAt", "+callbacks.fault.point=train_batch",
             "+callbacks.fault.epoch=1", f"+callbacks.fault.marker={marker}"]  # fmt: skip
    run_dir, _ = check.train("resume_after_kill", check.sizes.trainer, fault, expect_rc=-signal.SIGKILL)
    last = last_checkpoint(run_dir)
    saved_epoch = torch.load(last, map_location="cpu", weights_only=True)["epoch"]
    if saved_epoch != 0:
        raise CheckFailed(f"{last.name} holds epoch {saved_epoch} after a kill in epoch 1, expected 0")
    _, output = check.train("resume_after_kill", check.sizes.trainer, fault)
    figures = check.trained(run_dir, output)
    resumed_from = json.loads(metrics_file(run_dir).read_text())["resumed_from"]
    if resumed_from != str(last):
        raise CheckFailed(f"the rerun resumed from {resumed_from}, not {last}")
    return {"killed_in_epoch": 1, "resumed_from_epoch": saved_epoch, **figures}


def check_train_ddp(check: Check) -> dict:
    run_dir, output = check.train("train_ddp", check.sizes.ddp)
    return {
        "processes": output.count("Initializing distributed: GLOBAL_RANK"),
        **check.trained(run_dir, output),
    }


def check_train_jpeg(check: Check) -> dict:
    run_dir, output = check.train("train_jpeg", check.sizes.trainer, ["data.pipeline=jpeg"])
    return check.trained(run_dir, output)


def trained_checkpoint(check: Check) -> str:
    if not check.best_checkpoint:
        raise CheckFailed("no checkpoint: the train check did not finish")
    return check.best_checkpoint


def check_predict(check: Check) -> dict:
    """The test split's cat photos, as files, through `predict` on the GPU; top-1 against the file names."""
    # Where the training checks' synthetic data is: the configs decide, as they did for those runs.
    cfg = compose_train_config([*check.sizes.training, f"paths.data_dir={check.data_dir}"])
    dataset = OxfordPet(cfg.data.root)
    records = [r for r in dataset.split("test") if r.species == CAT]
    breeds = {str(dataset.image_path(r)): r.breed for r in records}
    device = "cuda" if check.gpu else "cpu"
    args = ["-m", "cats_model.predict", trained_checkpoint(check), *breeds, "--json", "--device", device]
    output = check.python("predict", args, limit_s=180)
    start = re.search(r"^\[$", output, re.MULTILINE)  # the JSON, after whatever was logged before it
    rows, _ = json.JSONDecoder().raw_decode(output, start.start()) if start else ([], 0)
    if len(rows) != len(breeds) or any("predictions" not in row for row in rows):
        raise CheckFailed(f"{len(rows)} rows for {len(breeds)} images, or some without predictions")
    right = sum(row["predictions"][0]["label"] == breeds[row["path"]] for row in rows)
    return {
        "device": device,
        "images": len(rows),
        "top1_accuracy": right / len(rows),
        "train_test/acc": check.test_acc,
    }


def check_export(check: Check) -> dict:
    onnx = check.work / "export" / "cats.onnx"
    check.python("export", ["-m", "cats_model.export", trained_checkpoint(check), "--out", str(onnx)], 240)
    sidecar = json.loads(onnx.with_suffix(".json").read_text())  # written only once the parity check passed
    return {
        "max_abs_logit_diff": sidecar["max_abs_logit_diff"],
        "max_abs_logit": sidecar["max_abs_logit"],
        "onnx_mb": round(onnx.stat().st_size / 2**20, 1),
        "classes": len(sidecar["class_names"]),
    }


def check_bench(check: Check) -> dict:
    out = check.work / "bench" / "bench.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    check.python("bench", ["-m", "cats_model.bench", *check.sizes.bench, "--json", str(out)], limit_s=360)
    results = json.loads(out.read_text())
    if check.gpu and "accelerator" not in results:
        raise CheckFailed("the bench wrote no GPU rows")
    keys = ("machine", "setup_s", "cache_built", "input_pipeline", "framework")
    return {**{key: results[key] for key in keys}, "accelerator": results.get("accelerator", NOT_MEASURED)}


# Most telling first: a time budget spent cuts the bench short before anything else.
CHECKS = {
    "train": check_train,
    "resume_after_kill": check_resume_after_kill,
    "train_ddp": check_train_ddp,
    "train_jpeg": check_train_jpeg,
    "predict": check_predict,
    "export": check_export,
    "bench": check_bench,
}


def describe_machine(gpu: bool) -> dict:
    import lightning

    driver = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
        driver = subprocess.run(query, capture_output=True, text=True, timeout=30).stdout.strip() or None
    return {
        "gpu": torch.cuda.get_device_name(0) if gpu else None,
        "compute_capability": ".".join(map(str, torch.cuda.get_device_capability(0))) if gpu else None,
        "driver": driver,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "lightning": lightning.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": available_cpus(),
    }


def output_file(out: Path, machine: dict, day: datetime.date) -> Path:
    """`out` itself if it names a .json file, else <gpu>-<date>.json in that folder (nvidia-h200-2026-12-01.json)."""
    if out.suffix == ".json":
        return out
    name = re.sub(r"[^a-z0-9]+", "-", (machine["gpu"] or "cpu").lower()).strip("-")
    return out / f"{name}-{day.isoformat()}.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bash scripts/gpu_check.sh", description=__doc__.split("\n")[0])
    parser.add_argument("--cpu", action="store_true", help="the dry run: the same checks, small, on the CPU")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks", help="the JSON file, or a folder for it"
    )
    parser.add_argument(
        "--work", type=Path, help="where runs and data go (default: a temporary folder, removed)"
    )
    parser.add_argument("--budget-s", type=int, help="for all checks (default: 420 on a GPU, 900 with --cpu)")
    parser.add_argument(
        "--only",
        type=lambda text: set(text.split(",")),
        default=set(CHECKS),
        help=f"a rerun of some checks, e.g. --only bench,export ({', '.join(CHECKS)}); predict and export bring train",
    )
    args = parser.parse_args(argv)
    if unknown := args.only - set(CHECKS):
        parser.error(f"no check named {', '.join(sorted(unknown))}; the checks: {', '.join(CHECKS)}")
    if {"predict", "export"} & args.only:  # they use the checkpoint that train writes
        args.only |= {"train"}
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    gpu = not args.cpu
    if gpu and not torch.cuda.is_available():
        print("error: no CUDA GPU is visible; the dry run on the CPU is --cpu", file=sys.stderr)
        return 2
    sizes = GPU if gpu else CPU
    started, machine = datetime.datetime.now(datetime.timezone.utc), describe_machine(gpu)
    out = output_file(args.out, machine, started.date())
    out.parent.mkdir(parents=True, exist_ok=True)
    log = out.with_suffix(".log")
    log.write_text(f"gpu_check {'GPU' if gpu else '--cpu'} {started.isoformat()}\n")
    work = args.work or Path(tempfile.mkdtemp(prefix="gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    budget_s = args.budget_s or sizes.budget_s
    check = Check(gpu, sizes, work, log, deadline=time.monotonic() + budget_s)
    outcomes, figures, seconds = {}, {}, {}
    for name, run in CHECKS.items():
        if name not in args.only:
            continue
        start = time.monotonic()
        try:
            figures[name] = run(check)
            outcomes[name] = "passed"
        except Exception as err:
            reason = str(err) if isinstance(err, CheckFailed) else f"{type(err).__name__}: {err}"
            outcomes[name] = "failed: " + " ".join(reason.split())[:400]
        seconds[name] = round(time.monotonic() - start, 1)
        print(f"{name}: {outcomes[name]} ({seconds[name]:.0f} s)", flush=True)
    report = {
        "mode": "gpu" if gpu else "cpu (dry run: small sizes, GPU-only figures not measured)",
        "started": started.isoformat(timespec="seconds"),
        "budget_s": budget_s,
        "machine": machine,
        "training_overrides": [*sizes.trainer, *sizes.training],
        "checks": outcomes,
        "check_seconds": seconds,
        "figures": figures,
        "log": log.name,
    }
    atomic_write_text(out, json.dumps(report, indent=2) + "\n")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {out} (every command's output: {log})")
    return 0 if all(outcome == "passed" for outcome in outcomes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
