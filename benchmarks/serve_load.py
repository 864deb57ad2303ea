"""Load test of ``segkit serve``: N requests from C concurrent clients on the loopback interface.

Starts ``segkit serve`` as a subprocess on 127.0.0.1 (so client and server do not
share a GIL), with ``--checkpoint`` or, by default, the default U-Net with random
weights (no training needed: speed does not depend on the weights). Prints a JSON
report (requests/s, latency percentiles, errors, machine) and appends a row to
benchmarks/README.md. Exits 1 when any request failed.

    python benchmarks/serve_load.py                      # 200 requests, 8 clients, 256x256
    python benchmarks/serve_load.py --size 512 --requests 100 --checkpoint runs/exp/best.pt
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import append_result, machine_info  # noqa: E402  (sibling module of this script)

MAX_REQUESTS = 5000
STARTUP_TIMEOUT_S = 120
WARMUP_REQUESTS = 3


@dataclass
class LoadResult:
    requests: int
    concurrency: int
    image_size: int
    output_format: str
    seconds: float
    requests_per_s: float
    p50_ms: float
    p95_ms: float
    mean_ms: float
    max_ms: float
    errors: int


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, help="checkpoint to serve (default: random-weight U-Net)")
    parser.add_argument("--model", default="unet", help="model of the random-weight checkpoint (default unet)")
    parser.add_argument("--classes", type=int, default=3, help="classes of the random-weight checkpoint (default 3)")
    parser.add_argument(
        "--requests", type=int, default=200, help=f"requests to send, at most {MAX_REQUESTS} (default 200)"
    )
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--size", type=int, default=256, help="side of the square test image in pixels (default 256)")
    parser.add_argument("--format", default="png", choices=["png", "json", "overlay"], help="response format")
    parser.add_argument("--device", default="auto", help="server device: auto, cpu, cuda (default auto)")
    parser.add_argument("--workers", type=int, default=1, help="server processes (segkit serve --workers, default 1)")
    parser.add_argument("--no-readme", action="store_true", help="do not append the result to benchmarks/README.md")
    args = parser.parse_args(argv)
    if not 1 <= args.requests <= MAX_REQUESTS or not 1 <= args.concurrency <= 64 or not 8 <= args.size <= 4096:
        parser.error(f"--requests 1..{MAX_REQUESTS}, --concurrency 1..64, --size 8..4096")
    if not 1 <= args.workers <= 32:
        parser.error("--workers 1..32")
    return args


def random_checkpoint(model: str, classes: int, size: int, path: Path) -> Path:
    """A servable checkpoint of ``model`` with default options and random weights."""
    from segkit.checkpoint import Checkpoint, ModelCard, save_checkpoint
    from segkit.data.transforms import PreprocessConfig

    names = ["background"] + [f"class_{i}" for i in range(1, classes)]
    card = ModelCard.create(model, names, PreprocessConfig(img_size=(size, size)))
    save_checkpoint(Checkpoint(card, card.model.build().state_dict()), path)
    return path


def bench_image(size: int) -> bytes:
    """A PNG photo-like test image: smooth colour gradients plus noise."""
    import io

    from PIL import Image

    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    image = np.stack(
        [ramp[None, :].repeat(size, 0), ramp[:, None].repeat(size, 1), np.full((size, size), 120.0)], axis=2
    )
    image = np.clip(image + rng.normal(0, 10, image.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(checkpoint: Path, port: int, device: str, workers: int, log: Path) -> subprocess.Popen:
    """``segkit serve`` on the loopback interface; its messages go to ``log``."""
    command = [
        sys.executable,
        "-m",
        "segkit",
        "serve",
        str(checkpoint),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--device",
        device,
        "--workers",
        str(workers),
    ]
    with log.open("w") as stream:
        return subprocess.Popen(command, stdout=stream, stderr=subprocess.STDOUT)


def wait_until_up(url: str, server: subprocess.Popen, log: Path) -> dict:
    import httpx

    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"server exited with code {server.returncode}: {log.read_text()[-2000:]}")
        try:
            return httpx.get(f"{url}/info", timeout=2).json()
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError(f"server did not answer within {STARTUP_TIMEOUT_S} s")


def run_load(url: str, image: bytes, requests: int, concurrency: int, output_format: str, size: int) -> LoadResult:
    """Send ``requests`` uploads from ``concurrency`` threads, each with its own connection."""
    import httpx

    def client_share(share: int) -> list[float | None]:
        latencies: list[float | None] = []  # None: failed request
        with httpx.Client(base_url=url, timeout=120) as client:
            for _ in range(share):
                start = time.perf_counter()
                try:
                    response = client.post(
                        f"/predict?format={output_format}", files={"file": ("bench.png", image, "image/png")}
                    )
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append((time.perf_counter() - start) * 1000 if ok else None)
        return latencies

    with httpx.Client(base_url=url, timeout=120) as warm:
        for _ in range(WARMUP_REQUESTS):
            warm.post("/predict", files={"file": ("bench.png", image, "image/png")}).raise_for_status()
    shares = [requests // concurrency + (i < requests % concurrency) for i in range(concurrency)]
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = [latency for part in pool.map(client_share, shares) for latency in part]
    seconds = time.perf_counter() - start
    times = np.array([latency for latency in results if latency is not None] or [np.nan])
    return LoadResult(
        requests=requests,
        concurrency=concurrency,
        image_size=size,
        output_format=output_format,
        seconds=round(seconds, 2),
        requests_per_s=round(requests / seconds, 2),
        p50_ms=round(float(np.percentile(times, 50)), 1),
        p95_ms=round(float(np.percentile(times, 95)), 1),
        mean_ms=round(float(times.mean()), 1),
        max_ms=round(float(times.max()), 1),
        errors=sum(latency is None for latency in results),
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="segkit-serve-load-") as folder:
        checkpoint = args.checkpoint or random_checkpoint(
            args.model, args.classes, args.size, Path(folder) / "random.pt"
        )
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = Path(folder) / "server.log"
        server = start_server(checkpoint, port, args.device, args.workers, log)
        try:
            info = wait_until_up(url, server, log)
            result = run_load(url, bench_image(args.size), args.requests, args.concurrency, args.format, args.size)
        finally:
            server.terminate()
            server.wait(timeout=30)
    machine = machine_info()
    report = {
        **asdict(result),
        "model": info["model"],
        "input_size": info["input_size"],
        "device": info["device"],
        "workers": args.workers,
        "checkpoint": str(args.checkpoint) if args.checkpoint else f"random {args.model} ({args.classes} classes)",
        "machine": machine,
    }
    print(json.dumps(report, indent=2))
    if not args.no_readme:
        append_result(
            "segkit serve: /predict under load (benchmarks/serve_load.py)",
            {
                "date": machine["date"],
                "model": f"{info['model']} {'x'.join(map(str, info['input_size']))}",
                "image": f"{args.size}x{args.size}",
                "format": args.format,
                "device": info["device"],
                "workers": args.workers,
                "requests x clients": f"{result.requests} x {result.concurrency}",
                "req/s": result.requests_per_s,
                "p50 ms": result.p50_ms,
                "p95 ms": result.p95_ms,
                "errors": result.errors,
                "CPU": f"{machine['cpu']} ({machine['cores']} cores)",
                "GPU": machine["gpu"] or "-",
                "torch": machine["torch"],
            },
        )
    return 1 if result.errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
