"""Load test of ``segkit serve``: micro-batching against one request at a time, side by side in one run.

Each arm starts ``segkit serve`` as a subprocess on 127.0.0.1 (so client and server do
not share a GIL) with ``--checkpoint`` or, by default, the default U-Net with random
weights (speed does not depend on the weights):

- ``one at a time``: ``--batch-size 1``, each request its own forward pass;
- ``micro-batched``: ``--batch-size N --batch-wait-ms W`` (the server's defaults unless given).

Per arm: warm-up requests, the server's resident memory, ``--requests`` requests from
``--concurrency`` clients (each with its own connection), the resident memory again,
then SIGTERM (the server must exit 0). The arms take turns (``--repeats``). Prints a
JSON report and appends the figures with their targets (micro-batched >= 1.3x the
req/s of one at a time; resident memory growing <= 10 % after warm-up; 0 errors) to
benchmarks/README.md. Exits 1 when any request failed.

    python benchmarks/serve_load.py                        # 2,000 requests per arm, 8 clients, 256x256
    python benchmarks/serve_load.py --quick --no-report    # smoke run
    python benchmarks/serve_load.py --device cuda --batch-size 16 --checkpoint runs/exp/best.pt
"""

from __future__ import annotations

import argparse
import io
import json
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import Target, append_targets, machine_info  # noqa: E402  (sibling module of this script)

SECTION = "segkit serve: micro-batching under load (benchmarks/serve_load.py)"
MAX_REQUESTS = 20_000
STARTUP_TIMEOUT_S = 120
TARGET_SPEEDUP = 1.3
TARGET_MEMORY_GROWTH_PERCENT = 10.0
ONE_AT_A_TIME = "one at a time"
MICRO_BATCHED = "micro-batched"


@dataclass
class ArmResult:
    """One arm's run: throughput, latency, errors, the server's memory and exit code."""

    arm: str
    requests: int
    seconds: float
    requests_per_s: float
    p50_ms: float
    p95_ms: float
    max_ms: float
    errors: int
    rss_after_warmup_mb: float
    rss_at_end_mb: float
    memory_growth_percent: float
    exit_code: int | None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, help="checkpoint to serve (default: random-weight U-Net)")
    parser.add_argument("--model", default="unet", help="model of the random-weight checkpoint (default unet)")
    parser.add_argument("--classes", type=int, default=3, help="classes of the random-weight checkpoint (default 3)")
    parser.add_argument("--requests", type=int, default=2000, help="timed requests per arm and repeat (default 2000)")
    parser.add_argument("--warmup", type=int, default=100, help="requests before the memory baseline (default 100)")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--size", type=int, default=256, help="side of the square test image in pixels (default 256)")
    parser.add_argument("--format", default="png", choices=["png", "json", "overlay"], help="response format")
    parser.add_argument("--device", default="auto", help="server device: auto, cpu, cuda (default auto)")
    parser.add_argument("--workers", type=int, default=1, help="server processes (segkit serve --workers, default 1)")
    parser.add_argument("--batch-size", type=int, help="micro-batched arm's --batch-size (default: the server's)")
    parser.add_argument(
        "--batch-wait-ms", type=float, help="micro-batched arm's --batch-wait-ms (default: the server's)"
    )
    parser.add_argument("--repeats", type=int, default=1, help="runs per arm, the arms taking turns (default 1)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 40 requests, 10 warm-up, 64x64")
    parser.add_argument("--no-report", action="store_true", help="print the JSON only; do not append to the README")
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.warmup, args.size = 40, 10, 64
    if not 1 <= args.requests <= MAX_REQUESTS or not 1 <= args.concurrency <= 64 or not 8 <= args.size <= 4096:
        parser.error(f"--requests 1..{MAX_REQUESTS}, --concurrency 1..64, --size 8..4096")
    if not 1 <= args.workers <= 32 or args.repeats < 1 or args.warmup < 0:
        parser.error("--workers 1..32, --repeats >= 1, --warmup >= 0")
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


def arm_options(arm: str, args: argparse.Namespace) -> list[str]:
    """The ``segkit serve`` options that make an arm."""
    if arm == ONE_AT_A_TIME:
        return ["--batch-size", "1"]
    options = [] if args.batch_size is None else ["--batch-size", str(args.batch_size)]
    return options + ([] if args.batch_wait_ms is None else ["--batch-wait-ms", str(args.batch_wait_ms)])


def start_server(
    checkpoint: Path, port: int, args: argparse.Namespace, options: list[str], log: Path
) -> subprocess.Popen:
    """``segkit serve`` on the loopback interface; its messages go to ``log``."""
    command = [sys.executable, "-m", "segkit", "serve", str(checkpoint), "--host", "127.0.0.1", "--port", str(port)]
    command += ["--device", args.device, "--workers", str(args.workers), *options]
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


def resident_mb(pid: int) -> float:
    """Resident memory of a process and its children in MB (Linux /proc; 0 elsewhere)."""
    status = Path(f"/proc/{pid}/status")
    if not status.is_file():
        return 0.0
    line = next(line for line in status.read_text().splitlines() if line.startswith("VmRSS:"))
    children = Path(f"/proc/{pid}/task/{pid}/children")
    child_ids = children.read_text().split() if children.is_file() else []
    return int(line.split()[1]) / 1024 + sum(resident_mb(int(child)) for child in child_ids)


def send_load(url: str, image: bytes, requests: int, concurrency: int, output_format: str) -> list[float | None]:
    """``requests`` uploads from ``concurrency`` threads, each with its own connection; latencies in ms (None: failed)."""
    import httpx

    def client_share(share: int) -> list[float | None]:
        latencies: list[float | None] = []
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

    shares = [requests // concurrency + (i < requests % concurrency) for i in range(concurrency)]
    with ThreadPoolExecutor(concurrency) as pool:
        return [latency for part in pool.map(client_share, shares) for latency in part]


def run_arm(arm: str, checkpoint: Path, image: bytes, args: argparse.Namespace, folder: Path) -> tuple[ArmResult, dict]:
    """Start the arm's server, warm it up, measure, stop it with SIGTERM."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = folder / f"server-{arm.replace(' ', '-')}.log"
    server = start_server(checkpoint, port, args, arm_options(arm, args), log)
    try:
        info = wait_until_up(url, server, log)
        send_load(url, image, max(args.warmup, 1), args.concurrency, args.format)
        rss_warm = resident_mb(server.pid)
        start = time.perf_counter()
        latencies = send_load(url, image, args.requests, args.concurrency, args.format)
        seconds = time.perf_counter() - start
        rss_end = resident_mb(server.pid)
        server.send_signal(signal.SIGTERM)
        exit_code = server.wait(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    times = np.array([latency for latency in latencies if latency is not None] or [np.nan])
    result = ArmResult(
        arm=arm,
        requests=args.requests,
        seconds=round(seconds, 2),
        requests_per_s=round(args.requests / seconds, 2),
        p50_ms=round(float(np.percentile(times, 50)), 1),
        p95_ms=round(float(np.percentile(times, 95)), 1),
        max_ms=round(float(times.max()), 1),
        errors=sum(latency is None for latency in latencies),
        rss_after_warmup_mb=round(rss_warm, 1),
        rss_at_end_mb=round(rss_end, 1),
        memory_growth_percent=round(100 * (rss_end - rss_warm) / rss_warm, 2) if rss_warm else float("nan"),
        exit_code=exit_code,
    )
    print(
        f"  {arm}: {result.requests_per_s} req/s, p50 {result.p50_ms} ms, errors {result.errors}, "
        f"memory {rss_warm:.0f} -> {rss_end:.0f} MB, exit {exit_code}",
        file=sys.stderr,
        flush=True,
    )
    return result, info


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    arms = (ONE_AT_A_TIME, MICRO_BATCHED)
    results: dict[str, list[ArmResult]] = {arm: [] for arm in arms}
    with tempfile.TemporaryDirectory(prefix="segkit-serve-load-") as name:
        folder = Path(name)
        checkpoint = args.checkpoint or random_checkpoint(args.model, args.classes, args.size, folder / "random.pt")
        image = bench_image(args.size)
        for repeat in range(args.repeats):
            for arm in arms if repeat % 2 == 0 else reversed(arms):  # taking turns spreads a busy phase over both
                result, info = run_arm(arm, checkpoint, image, args, folder)
                results[arm].append(result)

    def med(arm: str, field: str) -> float:
        return float(statistics.median(getattr(result, field) for result in results[arm]))

    errors = sum(result.errors for runs in results.values() for result in runs)
    unclean = sum(result.exit_code != 0 for runs in results.values() for result in runs)
    speedup = med(MICRO_BATCHED, "requests_per_s") / med(ONE_AT_A_TIME, "requests_per_s")
    targets = [
        Target("micro-batched / one at a time (req/s)", speedup, TARGET_SPEEDUP),
        *(
            Target(
                f"resident memory growth after warm-up, {arm}",
                max(r.memory_growth_percent for r in results[arm]),
                TARGET_MEMORY_GROWTH_PERCENT,
                at_least=False,
                unit="%",
            )
            for arm in arms
        ),
        Target("failed requests", errors, 0, at_least=False, unit=""),
        Target("exits other than 0 after SIGTERM", unclean, 0, at_least=False, unit=""),
        *(Target(f"{arm} speed", med(arm, "requests_per_s"), unit="req/s") for arm in arms),
        *(Target(f"{arm} p50 latency", med(arm, "p50_ms"), unit="ms") for arm in arms),
    ]
    batching = " ".join(arm_options(MICRO_BATCHED, args)) or "server defaults"
    settings = (
        f"{info['model']} {'x'.join(map(str, info['input_size']))}, {args.size}x{args.size} {args.format}, "
        f"{args.requests} requests x {args.concurrency} clients after {args.warmup} warm-up, "
        f"micro-batched: {batching} (batch {info['batch_size']}), {info['device']}, workers {args.workers}, "
        f"{args.repeats} repeats"
    )
    machine = machine_info()
    report = {
        "benchmark": "serve_load",
        "arms": {arm: [asdict(result) for result in runs] for arm, runs in results.items()},
        "settings": settings,
        "targets": [target.as_dict() for target in targets],
        "machine": machine,
    }
    print(json.dumps(report, indent=2, default=str))
    if not args.no_report:
        append_targets(SECTION, targets, settings, machine)
    return 1 if errors or unclean else 0


if __name__ == "__main__":
    raise SystemExit(main())
