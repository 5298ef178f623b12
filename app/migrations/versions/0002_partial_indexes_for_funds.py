"""partial indexes for an open's funds check

Revision ID: 0002
Revises: 0001

An open sums the account's pending orders and its positions not closed. ``orders_status``
indexed every order by its status; on PostgreSQL each order's move from ``pending`` left
an entry that scans still visited until a vacuum. The positions had no index by account:
PostgreSQL read the whole table for each open. Both are now partial indexes over what is
in flight, by account.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PENDING_ORDER = sa.text("status = 'pending'")
OPEN_POSITION = sa.text("status <> 'closed'")


def upgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_index("orders_status")
        batch_op.create_index(
            "orders_pending",
            ["account_id"],
            unique=False,
            sqlite_where=PENDING_ORDER,
            postgresql_where=PENDING_ORDER,
        )
    with op.batch_alter_table("positions", schema=None) as batch_op:
        batch_op.create_index(
            "positions_open_by_account",
            ["account_id"],
            unique=False,
            sqlite_where=OPEN_POSITION,
            postgresql_where=OPEN_POSITION,
        )


def downgrade() -> None:
    with op.batch_alter_table("positions", schema=None) as batch_op:
        batch_op.drop_index(
            "positions_open_by_account",
            sqlite_where=OPEN_POSITION,
            postgresql_where=OPEN_POSITION,
        )
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_index(
            "orders_pending", sqlite_where=PENDING_ORDER, postgresql_where=PENDING_ORDER
        )
        batch_op.create_index("orders_status", ["status"], unique=False)
