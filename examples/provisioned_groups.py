"""A provisioned cluster: GetClusterCredentials for DbUser 'alice', joining DbGroups 'analysts' at log-in.

    python examples/provisioned_groups.py [URL]

The URL user is the DbUser: ``redshift+psycopg2://alice@/dev?plugin=rs_iam&cluster=etl-cluster&db_groups=analysts``
"""

from __future__ import annotations

import sqlalchemy as sa
from _common import engine_url


def main(url: str) -> tuple[str, bool]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        user = conn.execute(sa.text("select current_user")).scalar_one()
        member = conn.execute(sa.text("select pg_has_role(current_user, 'analysts', 'member')")).scalar_one()
    print(f"logged in as {user}; member of analysts: {member}")
    return str(user), bool(member)


if __name__ == "__main__":
    with engine_url(
        lambda rs: rs.url("psycopg2", cluster=rs.cluster, user=rs.db_user, db_groups=rs.db_group)
    ) as url:
        main(url)
