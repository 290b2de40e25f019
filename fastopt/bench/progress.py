"""A progress bar: tqdm when installed, else one plain line per item on stderr."""
import sys


class Progress:
    def __init__(self, total, enabled=True):
        self._bar = None
        self._total, self._done, self._enabled = total, 0, enabled
        self._label = ""
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                return
            self._bar = tqdm(total=total, unit="case", file=sys.stderr,
                             dynamic_ncols=True)

    def describe(self, label):
        self._label = label
        if self._bar is not None:
            self._bar.set_description_str(label)
        elif self._enabled:
            print(f"[{self._done + 1}/{self._total}] {label}", file=sys.stderr,
                  flush=True)

    def advance(self, count=1):
        self._done += count
        if self._bar is not None:
            self._bar.update(count)

    def close(self):
        if self._bar is not None:
            self._bar.close()
