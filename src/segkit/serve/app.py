"""The ``segkit serve`` HTTP API and web page (FastAPI).

Endpoints:

- ``POST /predict``: an image (multipart field ``file`` or raw body) -> the index
  mask as a palette PNG, ``?format=json`` (class shares + base64 mask PNG) or
  ``?format=overlay`` (JPEG of the image blended with the colour mask, ``alpha``);
- ``GET /info``: model, classes, palette, preprocessing; ``GET /health``;
- ``GET /``: the web page (``static/``); ``/docs``: OpenAPI.

The model is loaded once when the app is built. Decoding, inference and
encoding run in Starlette's threadpool so the event loop keeps answering.
Inference is serialised by an :class:`asyncio.Lock`: one request at a time uses
the model (safe on CPU and GPU; torch's own threads already use the cores),
waiting requests are served first come, first served, and they wait on the event
loop rather than holding threadpool threads.
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image

import segkit
from segkit.checkpoint import Checkpoint
from segkit.errors import SegkitError
from segkit.prediction.predictor import Predictor
from segkit.serve.uploads import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_UPLOAD_BYTES,
    UploadLimits,
    UploadRejected,
    decode_image,
    read_upload,
)
from segkit.visualize import overlay

STATIC_DIR = Path(__file__).with_name("static")
OVERLAY_JPEG_QUALITY = 90

# Environment read by :func:`app_from_env` (uvicorn workers import the app by name).
ENV_CHECKPOINT = "SEGKIT_SERVE_CHECKPOINT"
ENV_DEVICE = "SEGKIT_SERVE_DEVICE"
ENV_MAX_UPLOAD_BYTES = "SEGKIT_SERVE_MAX_UPLOAD_BYTES"
ENV_MAX_PIXELS = "SEGKIT_SERVE_MAX_PIXELS"

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
    413: {"description": "Upload over the byte limit, or image over the pixel limit"},
    415: {"description": "Content type is not an image"},
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


@dataclass
class ServedModel:
    """A predictor with what the API reports about it, and the lock that serialises inference."""

    predictor: Predictor
    lock: asyncio.Lock

    @classmethod
    def load(cls, source: str | Path | Checkpoint | Predictor, device: str = "auto") -> ServedModel:
        """Load a checkpoint (path or :class:`~segkit.checkpoint.Checkpoint`) once, or wrap a ready :class:`Predictor`."""
        predictor = source if isinstance(source, Predictor) else Predictor.from_checkpoint(source, device=device)
        return cls(predictor, asyncio.Lock())

    @property
    def class_colors(self) -> list[list[int]]:
        return self.predictor.palette[: len(self.predictor.classes)].tolist()

    def info(self, limits: UploadLimits) -> dict[str, Any]:
        """The ``GET /info`` document."""
        predictor = self.predictor
        preprocess = predictor.preprocess.to_dict()
        preprocess.pop("augment", None)  # training-only
        return {
            "model": predictor.card.model.name,
            "model_options": predictor.card.model.kwargs,
            "classes": predictor.classes,
            "palette": self.class_colors,
            "background": predictor.background,
            "binary": predictor.binary,
            "threshold": predictor.threshold,
            "input_size": list(predictor.preprocess.img_size),
            "preprocess": preprocess,
            "device": str(predictor.device),
            "max_upload_bytes": limits.max_bytes,
            "max_pixels": limits.max_pixels,
            "segkit_version": segkit.__version__,
        }

    async def predict(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """The index mask of an RGB image and the inference time in milliseconds, one call at a time."""
        async with self.lock:
            start = time.perf_counter()
            mask = await run_in_threadpool(self.predictor.predict, image)
            return mask, (time.perf_counter() - start) * 1000


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
    served: ServedModel, image: np.ndarray, mask: np.ndarray, elapsed_ms: float, output: OutputFormat, alpha: float
) -> Response:
    """The response for one predicted image in the requested format."""
    headers = {"Server-Timing": f"inference;dur={elapsed_ms:.1f}"}
    palette = served.predictor.palette
    if output == "overlay":
        buffer = io.BytesIO()
        Image.fromarray(overlay(image, mask, alpha, palette, served.predictor.background)).save(
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
            "classes": class_summary(mask, served.predictor.classes, served.class_colors),
            "mask_png_base64": base64.b64encode(png).decode("ascii"),
        }
        return JSONResponse(document, headers=headers)
    return Response(
        png, media_type="image/png", headers={**headers, "Content-Disposition": 'inline; filename="mask.png"'}
    )


def create_app(
    checkpoint_or_predictor: str | Path | Checkpoint | Predictor,
    *,
    device: str = "auto",
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> FastAPI:
    """Build the app around one model, loaded now.

    Args:
        checkpoint_or_predictor: a checkpoint path, a loaded :class:`~segkit.checkpoint.Checkpoint`, or a Predictor.
        device: ``auto``, ``cpu``, ``cuda[:N]`` or ``mps`` (ignored for a Predictor).
        max_upload_bytes: largest accepted image file; larger bodies get 413.
        max_pixels: largest accepted ``width * height``; checked before decoding (413).

    Raises:
        SegkitError: unreadable checkpoint or invalid limits.
    """
    limits = UploadLimits(max_bytes=max_upload_bytes, max_pixels=max_pixels)
    served = ServedModel.load(checkpoint_or_predictor, device)
    app = FastAPI(
        title="segkit",
        version=segkit.__version__,
        description="Semantic segmentation of uploaded images with a segkit checkpoint.",
    )
    app.state.model = served
    app.state.limits = limits

    @app.exception_handler(UploadRejected)
    async def rejected(request: Request, error: UploadRejected) -> JSONResponse:
        return JSONResponse({"detail": error.problem}, status_code=error.status_code)

    @app.exception_handler(SegkitError)
    async def invalid(request: Request, error: SegkitError) -> JSONResponse:
        return JSONResponse({"detail": error.problem}, status_code=400)

    @app.post("/predict", openapi_extra=PREDICT_REQUEST_BODY, responses=PREDICT_RESPONSES)
    async def predict(
        request: Request,
        output: Annotated[OutputFormat, Query(alias="format", description="png, json or overlay")] = "png",
        alpha: Annotated[float, Query(ge=0.0, le=1.0, description="mask opacity of the overlay")] = 0.5,
    ) -> Response:
        """Segment one image."""
        data = await read_upload(request, limits)
        image = await run_in_threadpool(decode_image, data, limits.max_pixels)
        mask, elapsed_ms = await served.predict(image)
        return await run_in_threadpool(render, served, image, mask, elapsed_ms, output, alpha)

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Liveness check."""
        return {"status": "ok"}

    @app.get("/info")
    async def info() -> dict[str, Any]:
        """The model, its classes and colours, and the upload limits."""
        return served.info(limits)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def app_from_env() -> FastAPI:
    """App factory for uvicorn workers: settings from ``SEGKIT_SERVE_*`` environment variables."""
    checkpoint = os.environ.get(ENV_CHECKPOINT)
    if not checkpoint:
        raise SegkitError(None, f"{ENV_CHECKPOINT} is not set; start the server with `segkit serve CHECKPOINT`")
    return create_app(
        checkpoint,
        device=os.environ.get(ENV_DEVICE, "auto"),
        max_upload_bytes=int(os.environ.get(ENV_MAX_UPLOAD_BYTES, DEFAULT_MAX_UPLOAD_BYTES)),
        max_pixels=int(os.environ.get(ENV_MAX_PIXELS, DEFAULT_MAX_PIXELS)),
    )


def serve(
    checkpoint: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    device: str = "auto",
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> None:
    """Run the app with uvicorn until interrupted; ``workers > 1`` starts that many processes.

    Each worker process loads its own copy of the model (through :func:`app_from_env`).
    """
    import uvicorn

    if workers < 1:
        raise SegkitError(None, f"--workers must be >= 1, got {workers}")
    if workers == 1:
        app = create_app(checkpoint, device=device, max_upload_bytes=max_upload_bytes, max_pixels=max_pixels)
        uvicorn.run(app, host=host, port=port)
        return
    Predictor.from_checkpoint(checkpoint, device="cpu")  # fail here with a clear message, not in every worker
    os.environ.update(
        {
            ENV_CHECKPOINT: str(Path(checkpoint).resolve()),
            ENV_DEVICE: device,
            ENV_MAX_UPLOAD_BYTES: str(max_upload_bytes),
            ENV_MAX_PIXELS: str(max_pixels),
        }
    )
    uvicorn.run("segkit.serve.app:app_from_env", factory=True, host=host, port=port, workers=workers)
