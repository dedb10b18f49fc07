"""CLI start-up: `kerastl --help` and `kerastl finetune --help` against importing TensorFlow, side by side.

Each command runs in a fresh interpreter several times; the table gives the median wall time and its ratio
to `import tensorflow` (the cost the CLI avoids). Goal: help in <= 0.3 s.

    python tools/bench_cli_startup.py [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "kerastl --help": [sys.executable, "-m", "kerastl.cli", "--help"],
    "kerastl finetune --help": [sys.executable, "-m", "kerastl.cli", "finetune", "--help"],
    "kerastl export --help": [sys.executable, "-m", "kerastl.cli", "export", "--help"],
    "python -c 'import tensorflow'": [sys.executable, "-c", "import tensorflow"],
}


def median_seconds(command, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    results = {name: median_seconds(cmd, args.runs) for name, cmd in COMMANDS.items()}
    tf_time = results["python -c 'import tensorflow'"]
    print("| command | median wall time (s) | ratio to importing TensorFlow | goal <= 0.3 s |")
    print("|---|---|---|---|")
    for name, seconds in results.items():
        goal = "" if "tensorflow" in name else ("met" if seconds <= 0.3 else "MISSED")
        print(f"| `{name}` | {seconds:.3f} | {seconds / tf_time:.2f} | {goal} |")


if __name__ == "__main__":
    main()
