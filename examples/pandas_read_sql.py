"""pandas over an rs_iam engine: one URL, no password anywhere.

python examples/pandas_read_sql.py [URL]
"""

from __future__ import annotations

import pandas as pd
import sqlalchemy as sa
from _common import engine_url

import sqlalchemy_rs_iam


def main(url: str) -> pd.DataFrame:
    engine = sa.create_engine(url)
    # read_sql_query (not read_sql): read_sql on a bare string asks the Redshift dialect for has_table().
    df = pd.read_sql_query(
        sa.text("select region, sum(amount) as total from sales group by region order by 1"), engine
    )
    print(df.to_string(index=False))
    print("plugin counters:", dict(sqlalchemy_rs_iam.stats(engine)))
    return df


if __name__ == "__main__":
    with engine_url(lambda rs: rs.url()) as url:
        main(url)
