"""Error budgets: how many rejects an import may give before it stops (pure).

Judged as chunks are decided, in file order, on the rows decided so far: `max_rejects`
rows at most, or a share of at most `max_reject_rate` once `min_rows` rows are read (a
small start says little about a file, as Greenplum's `SEGMENT REJECT LIMIT ... PERCENT`
waits for its first rows).
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.parameters import LoadControl


@dataclass(frozen=True)
class RejectBudget:
    max_rejects: int | None = None
    max_reject_rate: float | None = None
    min_rows: int = 1000

    @classmethod
    def of(cls, control: LoadControl) -> RejectBudget:
        return cls(control.max_rejects, control.max_reject_rate, control.budget_min_rows)

    @property
    def is_set(self) -> bool:
        return self.max_rejects is not None or self.max_reject_rate is not None

    def spent(self, rows_read: int, rejected: int) -> str | None:
        """Why the budget is spent after `rows_read` rows with `rejected` of them rejected,
        or None while it holds."""
        if self.max_rejects is not None and rejected > self.max_rejects:
            return (
                f"{rejected:,} of the {rows_read:,} rows read so far were rejected, "
                f"over the budget of {self.max_rejects:,} rejects"
            )
        rate = self.max_reject_rate
        if rate is not None and rows_read >= self.min_rows and rows_read and rejected / rows_read > rate:
            return (
                f"{_percent(rejected / rows_read)} of the rows read so far were rejected, "
                f"over the budget of {_percent(rate, exact=True)}"
            )
        return None


def _percent(share: float, *, exact: bool = False) -> str:
    """0.051 -> 5.1%; a budget as given: 0.02 -> 2%, 0.005 -> 0.5%."""
    return f"{share * 100:g}%" if exact else f"{share * 100:.1f}%"
