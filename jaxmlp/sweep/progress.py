"""Progress display of a running sweep: one bar for the sweep (variants done), one for the
group that trains (epochs, busy slots, best validation loss), on stderr."""
from __future__ import annotations

import sys

from jaxmlp.sweep.plan import Group


class ProgressBars:
    """One progress bar for the sweep (variants) and one for the current group (epochs)."""

    def __init__(self, total: int, enabled: bool):
        from tqdm import tqdm

        self._tqdm = tqdm
        self.enabled = enabled
        self.sweep = tqdm(total=total, desc="sweep", unit="variant", position=0, file=sys.stderr,
                          disable=not enabled or None, dynamic_ncols=True)
        self.group = None

    def start_group(self, group: Group, n: int, epochs: int | None, initial: int = 0, slots: int | None = None) -> None:
        """A group's bar (`epochs` None: the program's epochs are not known ahead, its slots are
        fed by a queue); `initial`: epochs trained before (a chunk resumed from its snapshot)."""
        self.n = min(n, slots or n)
        self.group = self._tqdm(total=epochs, initial=initial, desc=f"{group.id} ({n} variants, {self.n} slots)",
                                unit="ep", position=1, leave=False, file=sys.stderr,
                                disable=not self.enabled or None, dynamic_ncols=True)

    def epoch(self, record: dict) -> None:
        best = record["val_loss"][record["trained"]] if "val_loss" in record else ()
        self.group.set_postfix(busy=f"{int(record['trained'].sum())}/{self.n}",
                               best_val_loss=f"{best.min():.4f}" if len(best) else "-")
        self.group.update()

    def end_group(self) -> None:
        if self.group is not None:
            self.group.close()

    def variant_done(self) -> None:
        self.sweep.update(1)

    def close(self) -> None:
        self.sweep.close()
