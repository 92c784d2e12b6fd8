"""What one `/metrics` scrape of `hookctl serve` costs on a big database, and what it does to intake.

    python bench/scrape.py [--rows 100000] [--scrapes 10] [--src DIR]

Builds (or reuses) a database of `--rows` deliveries with seed.py's bigdb (3% failed, 2% pending,
the rest succeeded), starts `serve` on it, and times `--scrapes` GETs of /metrics one after
another (the median and the slowest count), then the p99 of 500 posts made by 10 posters while
another client scrapes as fast as it can. Nothing here asserts on timing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve import RULE, body, start

BENCH = Path(__file__).resolve().parent


async def scrape_times(url: str, scrapes: int) -> list[float]:
    import aiohttp

    times = []
    async with aiohttp.ClientSession() as session:
        for _ in range(scrapes):
            started = time.perf_counter()
            async with session.get(url + "/metrics") as response:
                await response.read()
                assert response.status == 200, response.status
            times.append((time.perf_counter() - started) * 1000)
    return times


async def posts_while_scraping(url: str, posts: int) -> tuple[float, int]:
    """p99 (ms) of `posts` posts by 10 posters while one client scrapes back to back; scrapes."""
    import aiohttp

    latencies: list[float] = []
    scrapes = 0
    done = asyncio.Event()
    async with aiohttp.ClientSession() as session:

        async def scraper() -> None:
            nonlocal scrapes
            while not done.is_set():
                async with session.get(url + "/metrics") as response:
                    await response.read()
                scrapes += 1

        queue = iter(range(posts))

        async def poster() -> None:
            for n in queue:
                sent = time.perf_counter()
                async with session.post(url + "/events", data=body(10_000_000 + n)) as response:
                    await response.read()
                    assert response.status == 202, response.status
                latencies.append((time.perf_counter() - sent) * 1000)

        task = asyncio.create_task(scraper())
        await asyncio.gather(*(poster() for _ in range(10)))
        done.set()
        await task
    latencies.sort()
    return latencies[int(len(latencies) * 0.99) - 1], scrapes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--scrapes", type=int, default=10)
    parser.add_argument("--src", type=Path, help="run the hookctl package in this directory")
    args = parser.parse_args()
    env = dict(os.environ, HOOKCTL_ALLOW_NET="127.0.0.1")
    if args.src:
        env["PYTHONPATH"] = str(args.src.resolve()) + os.pathsep + env.get("PYTHONPATH", "")
    with tempfile.TemporaryDirectory() as work:
        db = Path(work) / "big.db"
        subprocess.run(
            [sys.executable, str(BENCH / "seed.py"), "bigdb", "--db", str(db), "--rows",
             str(args.rows)], env=env, check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        rules = Path(work) / "rules.yaml"
        # Sent nowhere that answers: the posts' deliveries just wait (their sends are not timed).
        rules.write_text(RULE.format(url="http://127.0.0.1:9/hook"), encoding="utf-8")
        cmd = [sys.executable, "-m", "hookctl", "serve", "--port", "0", "-r", str(rules),
               "--db", str(db)]  # fmt: skip
        proc, url = start(cmd, env)
        try:
            times = asyncio.run(scrape_times(url, args.scrapes))
            p99, scrapes = asyncio.run(posts_while_scraping(url, 500))
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
    print(
        f"{args.rows} deliveries: /metrics median {statistics.median(times):.1f} ms, "
        f"slowest {max(times):.1f} ms over {len(times)} scrapes; "
        f"500 posts while scraping ({scrapes} scrapes): p99 {p99:.1f} ms"
    )


if __name__ == "__main__":
    main()
