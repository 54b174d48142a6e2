"""Read a Redshift table into a Dask DataFrame, each worker process logging in with IAM credentials.

Every worker process opens its own engine from the URL string and keeps its own credential cache, so AWS
sees one GetCredentials call per worker process per refresh window (plus one in the client process, which
reads the index bounds and a few head rows). See docs/recipes.md, "Dask".

python examples/dask_read_sql.py            # against a throwaway local stand-in
python examples/dask_read_sql.py 'redshift+redshift_connector:///dev?plugin=rs_iam&workgroup=analytics&region=us-east-1'
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa


def sales_query() -> sa.Select[Any]:
    """dask's read_sql_query wants a SQLAlchemy Selectable (not a string) to compute partition bounds."""
    sales = sa.table("sales", sa.column("id", sa.Integer), sa.column("region"), sa.column("amount"))
    return sa.select(sales.c.id, sales.c.region, sales.c.amount)


def read_sales(url: str, *, npartitions: int = 3) -> Any:
    """A lazy dask DataFrame over ``sales``, partitioned on ``id``."""
    import dask.dataframe as dd

    return dd.read_sql_query(sales_query(), con=url, index_col="id", npartitions=npartitions)


def main(url: str, workers: int = 2) -> Any:
    from distributed import Client, LocalCluster

    # Worker processes inherit os.environ when they start: AWS settings must be in place before this line.
    with (
        LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster),
    ):
        frame = read_sales(url).compute().sort_index()
    print(frame.to_string())
    return frame


if __name__ == "__main__":
    from _common import engine_url

    with engine_url(lambda rs: rs.url()) as url:
        main(url)
