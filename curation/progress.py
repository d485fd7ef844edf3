"""Progress bars over Dask futures, so long stages show how far they are."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from tqdm.auto import tqdm


def track(futures: Sequence, desc: str) -> None:
    """Block until every future is done, with a progress bar on stderr."""
    from dask.distributed import as_completed

    with tqdm(total=len(futures), desc=desc, unit="part", file=sys.stderr, leave=True,
              dynamic_ncols=True, disable=None) as bar:
        for _ in as_completed(futures):
            bar.update(1)
