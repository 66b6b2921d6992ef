"""The demo zoo: small CNNs trained on the CPU from data that installed packages ship.

``filterdb demo`` trains them (or loads them from its cache), saves them in the
formats filterdb reads, writes their meta index, builds the database, checks
quality and runs the analysis. Needs torch and scikit-learn (``pip install
'filterdb[dev]'``).

Examples
--------
>>> from filterdb.demo import make_zoo, zoo_specs     # doctest: +SKIP
>>> result = make_zoo(Path("demo"), zoo_specs())      # doctest: +SKIP
>>> result.index                                      # doctest: +SKIP
PosixPath('demo/zoo/index.csv')
"""

from .zoo import ModelSpec, ZooResult, make_zoo, zoo_specs

__all__ = ["ModelSpec", "ZooResult", "make_zoo", "zoo_specs"]
