"""``filterdb analyze DB --by COLUMN ... -o OUTDIR``: distribution shift between groups."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from ..errors import FilterDBError
from .outputs import output_folder

NAME = "analyze"
HELP = ("Distribution shift between groups of filters: PCA of the peak-scaled filters, "
        "coefficient histograms, drift matrices and figures, streamed over the database.")
DEFAULT_BY = ("Task", "Visual Category", "depth")


def add_arguments(parser) -> None:
    parser.add_argument("database", type=Path)
    parser.add_argument("--by", action="append", metavar="COLUMN",
                        help="grouping: a model or layer column (Task, 'Visual Category', "
                             "Framework, producer, model, ...) or depth (conv_depth_norm in "
                             "0.1 bins); repeat for several (default: Task, Visual Category, "
                             "depth)")
    parser.add_argument("--where", action="append", default=[], metavar="COLUMN=VALUE",
                        help="analyse only filters of layers with COLUMN=VALUE; LOW..HIGH is an "
                             "inclusive range; repeating a column means any of the values, "
                             "different columns must all hold")
    parser.add_argument("--bins", type=int, default=70, help="histogram bins (default 70)")
    parser.add_argument("--basis", type=Path, metavar="FILE",
                        help="measure in this PCA basis (a pca.json written before) instead of "
                             "fitting one on the selection")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUTDIR")
    parser.add_argument("--balanced", type=int, metavar="M",
                        help="at most M filters per model (see --balance-by), seeded")
    parser.add_argument("--balance-by", choices=("model", "layer"), default="model")
    parser.add_argument("--bootstrap", type=int, default=0, metavar="B",
                        help="B model-bootstrap replicates: intervals_<grouping>.csv")
    parser.add_argument("--level", type=float, default=0.95,
                        help="confidence level of the bootstrap intervals (default 0.95)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunk-rows", type=int, default=1 << 20, metavar="N",
                        help="filters per chunk; sets the memory (default 1048576)")
    parser.add_argument("--shape", default="3x3", help="kernel shape (default 3x3)")
    cluster = parser.add_mutually_exclusive_group()
    cluster.add_argument("--scheduler", metavar="ADDRESS",
                       help="run the chunks on an existing dask.distributed scheduler")
    cluster.add_argument("--dask-workers", type=int, metavar="N",
                       help="run the chunks on a local dask cluster of N worker processes")
    parser.add_argument("--no-figures", action="store_true", help="write the tables only")


def parse_where(db, items: list[str]) -> dict:
    """``["Task=Classification", "conv_depth_norm=0..0.5"]`` -> select() conditions.

    Values are converted to the column's type; ``LOW..HIGH`` gives an inclusive range;
    a column given more than once matches any of its values.
    """
    import pandas as pd

    dtypes = {**db.models.dtypes.to_dict(), **db.layers.dtypes.to_dict()}
    conditions: dict = {}
    for item in items:
        column, sep, text = item.partition("=")
        if not sep or not column:
            raise FilterDBError(f"--where {item!r}: expected COLUMN=VALUE")
        if column not in dtypes:
            raise FilterDBError(f"--where: no column {column!r}; choose from: "
                                + ", ".join(sorted(map(str, dtypes))))
        dtype = dtypes[column]
        low, dots, high = text.partition("..")
        if dots and pd.api.types.is_numeric_dtype(dtype) \
                and not pd.api.types.is_bool_dtype(dtype):
            value = (_convert(column, low, dtype), _convert(column, high, dtype))
        elif dots and _is_number(low) and _is_number(high):  # a text column of numbers
            value = (float(low), float(high))
        else:
            value = _convert(column, text, dtype)
        if column in conditions:
            previous = conditions[column]
            if isinstance(previous, tuple) or isinstance(value, tuple):
                raise FilterDBError(f"--where {column}: a range cannot be combined with "
                                    "other values")
            conditions[column] = [*(previous if isinstance(previous, list) else [previous]),
                                  value]
        else:
            conditions[column] = value
    return conditions


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _convert(column: str, text: str, dtype):
    import pandas as pd

    try:
        if pd.api.types.is_bool_dtype(dtype):
            lowered = text.strip().lower()
            if lowered not in ("true", "false", "1", "0"):
                raise ValueError(text)
            return lowered in ("true", "1")
        if pd.api.types.is_integer_dtype(dtype):
            return int(text)
        if pd.api.types.is_float_dtype(dtype):
            return float(text)
    except ValueError:
        raise FilterDBError(f"--where {column}: {text!r} is not a {dtype} value") from None
    return text


def run(args) -> int:
    from .. import open as open_db
    from ..analysis import preload
    from ..store.layout import parse_shape

    try:
        shape = parse_shape(args.shape)
    except ValueError as error:
        raise FilterDBError(str(error)) from None
    output_folder(args.output, args.database)
    scheduler = (args.scheduler if args.scheduler
                 else f"local:{args.dask_workers}" if args.dask_workers else None)
    if scheduler is None:  # the kernels run here: load them while the tables are read
        preload.start(shape[0] * shape[1], skip_blas_probe=args.no_figures)
    from ..analysis.groups import slug

    by = args.by or list(DEFAULT_BY)
    db = open_db(args.database)
    if not args.by:  # the default groupings: those the database has columns for
        columns = {*db.models.columns, *db.layers.columns, "depth"}
        for name in [name for name in by if name not in columns]:
            print(f"analyze: no column {name!r} in {args.database}: grouping skipped "
                  "(--by chooses the groupings)", file=sys.stderr)
            by.remove(name)
    slugs = [slug(name) for name in by]
    if len(set(slugs)) != len(slugs):
        raise FilterDBError(f"--by: groupings {by} give the same file names")
    where = parse_where(db, args.where)
    plots = None
    if not args.no_figures:
        if importlib.util.find_spec("filterdb.analysis.plots") is None:
            raise FilterDBError("figures need filterdb.analysis.plots, which is not "
                                "installed; use --no-figures for the tables only")
        from ..analysis import plots
    from ..analysis import analyze

    try:
        result = analyze(db, by=by, where=where, bins=args.bins,
                         basis=args.basis, chunk_rows=args.chunk_rows, balanced=args.balanced,
                         balance_by=args.balance_by, bootstrap=args.bootstrap, seed=args.seed,
                         level=args.level, scheduler=scheduler, progress=True, shape=shape,
                         # the c0-c1 density is for the figures only
                         **({} if plots is not None else {"density_bins": None}))
    except ValueError as error:
        raise FilterDBError(str(error)) from None
    from ..csvsafe import to_csv

    out = args.output
    out.mkdir(parents=True, exist_ok=True)
    written = [result.basis.save(out / "pca.json")]
    for name, part in zip(by, slugs, strict=True):
        grouping = result.groupings[name]
        written.append(out / f"drift_{part}.csv")
        to_csv(grouping.drift, written[-1])
        written.append(out / f"groups_{part}.csv")
        to_csv(grouping.counts, written[-1], index=False)
        if grouping.intervals is not None:
            written.append(out / f"intervals_{part}.csv")
            to_csv(grouping.intervals, written[-1], index=False)
    if plots is not None:
        figures = plots.write_figures(result, out, density=result.density)
        written.extend(Path(p) for p in (figures or []))
    _summary(result, by, written)
    return 0


def _summary(result, by, written) -> None:
    import numpy as np

    ratio = result.basis.explained_variance_ratio
    print(f"filters analysed: {result.n_filters:,}"
          + (f" ({result.n_nonfinite:,} non-finite skipped)" if result.n_nonfinite else ""))
    print("explained variance ratio: " + " ".join(f"{r:.3f}" for r in ratio))
    for name in by:
        grouping = result.groupings[name]
        matrix = grouping.drift.to_numpy()
        n = len(matrix)
        if n < 2:
            print(f"{name}: 1 group, no drift")
            continue
        rows, columns = np.triu_indices(n, 1)
        upper = matrix[rows, columns]
        top = int(upper.argmax())  # a pair of two groups, even when every drift is 0
        print(f"{name}: {n} groups, drift median {np.median(upper):.4g}, "
              f"max {upper[top]:.4g} ({grouping.drift.index[rows[top]]} vs "
              f"{grouping.drift.columns[columns[top]]})")
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
