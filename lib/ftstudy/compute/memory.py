"""Memory of this process, measured where training and evaluation each report their own: peak
resident memory, and anonymous resident memory sampled while a block runs (what the process
really holds, without the file pages of memory-mapped weights)."""
from __future__ import annotations

import resource


def peak_rss_mb() -> float:
    """Peak resident memory of this process (the cell's kernel) so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def anon_rss_mb() -> float:
    """Anonymous resident memory of this process now, in MiB: what it really holds, without
    file pages of memory-mapped weights (counted in RSS when touched, reclaimable)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


class AnonPeak:
    """Samples `anon_rss_mb` in a background thread (every `every_s`) while a block runs;
    `.peak_mb` is the highest value seen, `.start_mb` the value at the start (Linux; NaN elsewhere). While `.paused` is set (an
    in-training evaluation) samples are not taken."""

    def __init__(self, every_s: float = 0.02):
        self.every_s, self.paused = every_s, False
        self.start_mb = self.peak_mb = anon_rss_mb()

    def __enter__(self):
        import threading

        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(self.every_s):
            if not self.paused:
                self.peak_mb = max(self.peak_mb, anon_rss_mb())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, anon_rss_mb())
