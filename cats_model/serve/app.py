"""The web app over one model: a page, `POST /predict`, `GET /model`, `GET /health`; requests batched."""

import asyncio
import io
import json
import time
from contextlib import asynccontextmanager
from dataclasses import asdict

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from cats_model.cat_or_not import verdict
from cats_model.data.images import pixels_to_decode
from cats_model.errors import UserError
from cats_model.inference import (
    Model,
    check_top_k,
    decode_side,
    describe,
    image_error,
    read_image,
    sidecar_path,
    top_k,
)
from cats_model.run_layout import metrics_file, run_of_checkpoint
from cats_model.serve import PAGE_DIR
from cats_model.serve.batcher import Batcher
from cats_model.serve.body_limit import BodyLimit
from cats_model.serve.memory import return_large_blocks_when_freed
from cats_model.serve.options import DEFAULTS, ServeOptions
from cats_model.serve.token import TokenCheck, configured_token
from cats_model.system import available_cpus

RUN_METRICS = ("val/acc_best", "test/acc", "test/acc_macro", "test/f1", "epoch", "test/cat_recall",
               "test/dog_rejection", "test/negative_rejection", "test/cat_auroc")  # fmt: skip


# Images decoded at once, across requests: decoding takes up to a few bytes per pixel (0.5 GiB for 89 Mpx).
DECODERS = 2


def model_threads() -> int:
    """CPU threads for the model of a server: all but one, left to the event loop and JPEG decoding (on 2 cores,
    a 2-thread PyTorch model competing with them was slower one request at a time and under load alike)."""
    return max(1, available_cpus() - 1)


def known_metrics(model: Model) -> dict | None:
    """What is known of the model's accuracy: its run's metrics, or the int8 guard's numbers."""
    if model.kind == "checkpoint":
        try:
            metrics = json.loads(metrics_file(run_of_checkpoint(model.path)).read_text())
        except (OSError, ValueError):
            return None
        return {key: metrics[key] for key in RUN_METRICS if key in metrics}
    sidecar = json.loads(sidecar_path(model.path).read_text())
    guard = sidecar.get("int8")
    kept = ("accuracy_fp32", "accuracy_int8", "agreement", "cat_agreement")
    return {key: guard[key] for key in kept if key in guard} if guard else None


def answer_batch(model: Model, images: list[torch.Tensor]) -> list[tuple[np.ndarray, float | None]]:
    """One forward pass for the batcher: per image, the breeds' probabilities and P(cat) (None: no cat head)."""
    breeds, cats = model.answers(torch.stack(images))
    return list(zip(breeds, [None] * len(breeds) if cats is None else cats.tolist()))


def create_app(model: Model, options: ServeOptions = DEFAULTS, token: str | None = None) -> FastAPI:
    """The app over `model`; with a `token` (by default CATS_MODEL_SERVE_TOKEN's, if set), only for those who
    send it (cats_model.serve.token)."""
    return_large_blocks_when_freed()
    token = token or configured_token()
    batcher = Batcher(lambda images: answer_batch(model, images), options.max_batch_size, options.max_wait_ms)
    about = {**describe(model), "metrics": known_metrics(model), "limits": asdict(options)}
    decoding = asyncio.Semaphore(DECODERS)

    @asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        yield
        await batcher.stop()

    # No /docs: its page loads scripts from a CDN, and this app fetches nothing from the internet.
    app = FastAPI(title="tiny-cats-model", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.add_middleware(BodyLimit, max_bytes=int(options.max_megabytes * 2**20), idle_s=options.idle_timeout_s)
    app.mount("/page", StaticFiles(directory=PAGE_DIR), name="page")
    if token:
        app.add_middleware(TokenCheck, token=token)  # added last: checked first, before any body is read

    @app.exception_handler(HTTPException)
    async def one_sentence(request: Request, err: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(err.detail)}, status_code=err.status_code, headers=err.headers)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(PAGE_DIR / "index.html")

    @app.get("/model")
    def model_info() -> dict:
        return about

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "batches": batcher.batches, "images": batcher.images}

    @app.post("/predict")
    async def predict(request: Request) -> dict:
        """Multipart: one or more image files (any field name), `top_k` as a field or query parameter."""
        started = time.perf_counter()
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise HTTPException(
                415, "send the images as multipart/form-data, e.g. curl -F file=@photo.jpg URL/predict"
            )
        async with request.form() as form:  # its files are closed when the answer is ready
            files = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
            if not files:
                raise HTTPException(
                    400, "the request holds no image: attach one or more files, e.g. -F file=@photo.jpg"
                )
            if len(files) > options.max_files:
                raise HTTPException(
                    413, f"{len(files)} files in one request; at most {options.max_files} are allowed"
                )
            k = requested_top_k(request.query_params.get("top_k") or form.get("top_k"), options.top_k)
            names = [file.filename or f"file {i + 1}" for i, file in enumerate(files)]
            images = [await file.read() for file in files]
            # In a thread: reading headers is quick, but a crafted one could still hold up the event loop.
            await run_in_threadpool(
                refuse_over_pixel_budget, images, decode_side(model.info), options.max_megapixels
            )

            async def classify(data: bytes, name: str):
                with batcher.coming():  # a batch that starts meanwhile waits for this image (briefly)
                    async with decoding:
                        image = await decode(data, name, model)
                return await batcher(image)

            answers = await asyncio.gather(*(classify(d, name) for d, name in zip(images, names)))
        rows = top_k(np.stack([breeds for breeds, _ in answers]), model.info.class_names, k)
        results = [{"name": name, "predictions": row} for name, row in zip(names, rows)]
        for result, (_, cat) in zip(results, answers):
            if cat is not None:
                result.update(verdict(cat, model.info.cat_threshold))
        return {
            "model": {key: about[key] for key in ("backbone", "kind", "file")},
            "elapsed_ms": round((time.perf_counter() - started) * 1000, 1),
            "results": results,
        }

    return app


def refuse_over_pixel_budget(images: list[bytes], min_side: int, max_megapixels: float) -> None:
    """A 413 when decoding the request's images would take more than its pixel budget, judged from their
    headers; an image whose header cannot be read is left to decoding, which says what is wrong with it."""
    pixels = 0
    for data in images:
        try:
            pixels += pixels_to_decode(io.BytesIO(data), min_side)
        except Exception:
            continue
    if pixels > max_megapixels * 1e6:
        raise HTTPException(
            413,
            f"the images hold {pixels / 1e6:.0f} megapixels to decode; at most {max_megapixels:g} are allowed per "
            "request: send fewer or smaller images",
        )


async def decode(data: bytes, name: str, model: Model) -> torch.Tensor:
    try:  # Pillow decodes without holding the GIL: other requests go on meanwhile
        return await run_in_threadpool(read_image, io.BytesIO(data), model.info)
    except Exception as err:
        raise HTTPException(422, f"{name} {image_error(err)}") from err


def requested_top_k(value, default: int) -> int:
    if value is None or value == "":
        return default
    try:
        return check_top_k(value, "top_k")
    except UserError as err:
        raise HTTPException(422, str(err)) from None
