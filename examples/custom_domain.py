"""A custom domain name in front of a Serverless workgroup: GetCredentials(customDomainName).

    python examples/custom_domain.py [URL]

By default the domain is also the host; an explicit URL host:port wins (the local stand-in needs that,
since its example domains do not resolve)::

    redshift+redshift_connector://sql.analytics.example.com/dev?plugin=rs_iam&custom_domain=sql.analytics.example.com
"""

from __future__ import annotations

import sqlalchemy as sa
from _common import engine_url


def main(url: str) -> str:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        user = str(conn.execute(sa.text("select current_user")).scalar_one())
    print(f"logged in through the custom domain as {user}")
    return user


if __name__ == "__main__":
    with engine_url(lambda rs: rs.url(custom_domain=rs.workgroup_domain)) as url:
        main(url)
