"""An ORM application whose pooled connections each log in with cached IAM credentials.

python examples/orm_app.py [URL]
"""

from __future__ import annotations

from decimal import Decimal

import sqlalchemy as sa
from _common import engine_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column


class Base(DeclarativeBase):
    pass


class Sale(Base):
    __tablename__ = "sales"

    id: Mapped[int] = mapped_column(primary_key=True)
    region: Mapped[str]
    amount: Mapped[Decimal]


def main(url: str) -> dict[str, Decimal]:
    # pool_pre_ping: a pooled connection whose server went away is replaced, and the replacement logs in
    # with whatever credentials are current - nothing expires inside the pool.
    engine = sa.create_engine(url, pool_size=5, pool_pre_ping=True)
    totals: dict[str, Decimal] = {}
    with Session(engine) as session:
        for sale in session.scalars(sa.select(Sale).order_by(Sale.id)):
            totals[sale.region] = totals.get(sale.region, Decimal(0)) + sale.amount
    for region, total in sorted(totals.items()):
        print(f"{region:10} {total}")
    return totals


if __name__ == "__main__":
    with engine_url(lambda rs: rs.url()) as url:
        main(url)
