"""The ``segkit serve`` HTTP API and web page (FastAPI).

Endpoints:

- ``POST /predict``: an image (multipart field ``file`` or raw body) -> the index
  mask as a palette PNG, ``?format=json`` (class shares + base64 mask PNG) or
  ``?format=overlay`` (JPEG of the image blended with the colour mask, ``alpha``);
- ``GET /info``: model, classes, palette, preprocessing; ``GET /health``;
- ``GET /``: the web page (``static/``); ``/docs``: OpenAPI.

The model is loaded once when the app is built. A request goes through: admission
(at most ``max_queue`` requests at once, else 503 with ``Retry-After``), the body read
within its limits (:mod:`segkit.serving.uploads`), the image header checked, a share of
the decoded-pixel budget, decoding on a small thread pool, the micro-batcher's
inference thread, and encoding the answer (:mod:`segkit.serving.batching`). With an API
key, ``/predict`` and ``/info`` need it (:mod:`segkit.serving.security`).

Importing this module does not import PyTorch: the predictor is loaded when an app is built.
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image

from segkit.checkpoint import Checkpoint
from segkit.errors import SegkitError
from segkit.serving.batching import MicroBatcher, PixelBudget, release_freed_memory
from segkit.serving.options import ServeOptions
from segkit.serving.security import add_access_middleware, api_key_dependency
from segkit.serving.uploads import RequestBodyGuard, UploadRejected, decode_upload, open_upload, read_upload
from segkit.version import __version__
from segkit.visualize import overlay

if TYPE_CHECKING:
    from segkit.prediction.predictor import Predictor

STATIC_DIR = Path(__file__).with_name("static")
OVERLAY_JPEG_QUALITY = 90
# After an image this large, freed memory is handed back to the OS (see release_freed_memory).
RELEASE_MEMORY_PIXELS = 4_000_000

# Read by :func:`app_from_env` (uvicorn's worker processes import the app by name).
ENV_CHECKPOINT = "SEGKIT_SERVE_CHECKPOINT"
ENV_OPTIONS = "SEGKIT_SERVE_OPTIONS"

# The web page loads only its own files; the API's /docs page keeps FastAPI's defaults.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

# /predict reads the body itself (to bound it while streaming), so its schema is declared here for /docs.
PREDICT_REQUEST_BODY = {
    "requestBody": {
        "required": True,
        "description": "The image: multipart form field `file`, or the raw bytes with an image/* content type.",
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "Not an image, corrupt or truncated, or a malformed body"},
    401: {"description": "The server has an API key and the request does not carry it"},
    408: {"description": "The body did not arrive in time"},
    413: {"description": "Upload over the byte limit, or image over the pixel limit"},
    415: {"description": "Content type is not an image"},
    503: {"description": "Too many requests queued; retry after `Retry-After` seconds"},
}
PREDICT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "format=png: palette PNG index mask; format=json: class shares and the mask; "
        "format=overlay: JPEG of the image blended with the colour mask",
        "content": {"image/png": {}, "image/jpeg": {}, "application/json": {}},
    },
    **ERROR_RESPONSES,
}

OutputFormat = Literal["png", "json", "overlay"]
T = TypeVar("T")


def predictor_to_serve(source: str | Path | Checkpoint | Predictor, options: ServeOptions) -> Predictor:
    """A checkpoint path (``.pt`` or ``.onnx``) or :class:`~segkit.checkpoint.Checkpoint` loaded once, or a ready Predictor."""
    if not isinstance(source, (str, Path, Checkpoint)):
        return source
    from segkit.prediction.predictor import Predictor  # PyTorch or ONNX Runtime is loaded here, not at import

    return Predictor.from_checkpoint(source, device=options.device, batch_size=options.batch_size)


def model_info(predictor: Predictor, options: ServeOptions) -> dict[str, Any]:
    """The ``GET /info`` document: the model card's description and the server's limits."""
    card = predictor.card
    preprocess = card.preprocess.to_dict()
    preprocess.pop("augment", None)  # training-only
    return {
        "model": card.model.name,
        "model_options": card.model.kwargs,
        "classes": list(card.classes),
        "palette": class_colors(predictor),
        "background": card.background,
        "binary": card.binary,
        "threshold": card.threshold,
        "input_size": list(card.preprocess.img_size),
        "preprocess": preprocess,
        "device": str(predictor.device),
        "max_upload_bytes": options.max_upload_bytes,
        "max_pixels": options.max_pixels,
        "batch_size": options.batch_size,
        "segkit_version": __version__,
    }


def class_colors(predictor: Predictor) -> list[list[int]]:
    return predictor.palette[: len(predictor.classes)].tolist()


def encode_mask_png(mask: np.ndarray, palette: np.ndarray) -> bytes:
    """A uint8 index mask as palette PNG bytes (pixel values are the class indices)."""
    image = Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8))  # 2-D uint8 -> mode L
    image.putpalette(np.asarray(palette, dtype=np.uint8)[:256].reshape(-1).tolist())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def class_summary(mask: np.ndarray, classes: list[str], colors: list[list[int]]) -> list[dict[str, Any]]:
    """Pixels and share of the image per class, in index order."""
    counts = np.bincount(mask.ravel(), minlength=len(classes))
    total = max(mask.size, 1)
    return [
        {
            "index": index,
            "name": name,
            "color": color,
            "pixels": int(counts[index]),
            "share": round(int(counts[index]) / total, 6),
        }
        for index, (name, color) in enumerate(zip(classes, colors, strict=True))
    ]


def render(
    predictor: Predictor, image: np.ndarray, mask: np.ndarray, elapsed_ms: float, output: OutputFormat, alpha: float
) -> Response:
    """The response for one predicted image in the requested format."""
    headers = {"Server-Timing": f"inference;dur={elapsed_ms:.1f}"}
    palette = predictor.palette
    if output == "overlay":
        buffer = io.BytesIO()
        Image.fromarray(overlay(image, mask, alpha, palette, predictor.background)).save(
            buffer,
            format="JPEG",
            quality=OVERLAY_JPEG_QUALITY,
            subsampling=0,  # 4:4:4 keeps class edges crisp
        )
        return Response(buffer.getvalue(), media_type="image/jpeg", headers=headers)
    png = encode_mask_png(mask, palette)
    if output == "json":
        document = {
            "width": int(mask.shape[1]),
            "height": int(mask.shape[0]),
            "classes": class_summary(mask, predictor.classes, class_colors(predictor)),
            "mask_png_base64": base64.b64encode(png).decode("ascii"),
        }
        return JSONResponse(document, headers=headers)
    return Response(
        png, media_type="image/png", headers={**headers, "Content-Disposition": 'inline; filename="mask.png"'}
    )


class Admission:
    """At most ``limit`` requests inside ``/predict`` at once; the next one gets 503 with ``Retry-After``."""

    def __init__(self, limit: int, batcher: MicroBatcher) -> None:
        self.limit = limit
        self.batcher = batcher
        self.count = 0

    @contextmanager
    def slot(self) -> Iterator[None]:
        if self.count >= self.limit:
            wait = max(1, round(self.count * self.batcher.seconds_per_image + 0.5))
            raise HTTPException(
                503,
                f"the server is busy ({self.count} requests queued); retry in {wait} s",
                headers={"Retry-After": str(wait)},
            )
        self.count += 1
        try:
            yield
        finally:
            self.count -= 1


def create_app(
    source: str | Path | Checkpoint | Predictor, options: ServeOptions | None = None, **settings: Any
) -> FastAPI:
    """Build the app around one model, loaded now.

    Args:
        source: a checkpoint path (``.pt``, or ``.onnx`` from ``segkit export``), a loaded
            :class:`~segkit.checkpoint.Checkpoint`, or a Predictor.
        options: the server's settings (default: :class:`~segkit.serving.options.ServeOptions` defaults).
        **settings: ``ServeOptions`` fields that replace those of ``options`` (``device``,
            ``max_upload_bytes``, ``max_pixels``, ``api_key``, ``batch_size`` ...).

    Raises:
        SegkitError: unreadable checkpoint or invalid settings.
    """
    options = replace(options or ServeOptions(), **settings)
    predictor = predictor_to_serve(source, options)
    batcher = MicroBatcher(predictor.predict_batch, max_batch=options.batch_size, wait_s=options.batch_wait_ms / 1000)
    budget = PixelBudget(options.max_pixels)
    admission = Admission(options.max_queue, batcher)
    # Decoding and encoding run here: few threads bound the work (and glibc's per-thread heaps).
    workers = ThreadPoolExecutor(options.decode_threads, thread_name_prefix="segkit-decode")

    async def in_workers(function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(workers, function, *args)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await asyncio.to_thread(batcher.close)  # the queued images are finished first

    app = FastAPI(
        title="segkit",
        version=__version__,
        description="Semantic segmentation of uploaded images with a segkit checkpoint.",
        lifespan=lifespan,
    )
    app.state.predictor = predictor
    app.state.options = options
    app.state.batcher = batcher
    app.state.budget = budget
    app.state.admission = admission
    protected = [Depends(api_key_dependency(options.api_key))] if options.api_key else []

    @app.exception_handler(UploadRejected)
    async def rejected(request: Request, error: UploadRejected) -> JSONResponse:
        return JSONResponse({"detail": error.problem}, status_code=error.status_code, headers=error.headers)

    @app.exception_handler(SegkitError)
    async def invalid(request: Request, error: SegkitError) -> JSONResponse:
        return JSONResponse({"detail": error.problem}, status_code=400)

    @app.post("/predict", openapi_extra=PREDICT_REQUEST_BODY, responses=PREDICT_RESPONSES, dependencies=protected)
    async def predict(
        request: Request,
        output: Annotated[OutputFormat, Query(alias="format", description="png, json or overlay")] = "png",
        alpha: Annotated[float, Query(ge=0.0, le=1.0, description="mask opacity of the overlay")] = 0.5,
    ) -> Response:
        """Segment one image."""
        with admission.slot():
            data = await read_upload(request, options.max_upload_bytes)
            upload = await in_workers(open_upload, data, options.max_pixels)
            pixels = upload.width * upload.height
            async with budget.hold(pixels):
                image = await in_workers(decode_upload, upload)
                mask, elapsed_ms = await batcher.predict(image)
                response = await in_workers(render, predictor, image, mask, elapsed_ms, output, alpha)
                del image, mask  # free the full-size arrays before the memory is released
            if pixels >= RELEASE_MEMORY_PIXELS:
                await in_workers(release_freed_memory)
            return response

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Liveness check (open without the API key)."""
        return {"status": "ok"}

    @app.get("/info", responses={401: ERROR_RESPONSES[401]}, dependencies=protected)
    async def info() -> dict[str, Any]:
        """The model, its classes and colours, and the upload limits."""
        return model_info(predictor, options)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    add_access_middleware(app, options.allowed_hosts, options.cors_origins)
    app.add_middleware(RequestBodyGuard, discard_bytes=options.discard_bytes, body_timeout_s=options.body_timeout_s)
    return app


def app_from_env() -> FastAPI:
    """App factory for uvicorn's worker processes: the checkpoint and options from the environment."""
    checkpoint = os.environ.get(ENV_CHECKPOINT)
    if not checkpoint:
        raise SegkitError(None, f"{ENV_CHECKPOINT} is not set; start the server with `segkit serve CHECKPOINT`")
    return create_app(checkpoint, ServeOptions.from_json(os.environ.get(ENV_OPTIONS, "{}")))
