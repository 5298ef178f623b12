"""The journal's writes: balanced ledger transactions, posted once per reference, in a
transaction the caller owns. The account row's ``cash`` moves with its cash postings."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from app import ledger, schema
from app.database import insert_id, update_row

ZERO = Decimal(0)


async def record_deposit(
    connection: AsyncConnection, account_id: int, *, amount: Decimal, reference: str, now: datetime
) -> bool:
    """Post a deposit (or, negative, a withdrawal) once per ``reference``.

    Looked up before the account lock is taken, so that a start-up finding its opening
    deposit posted never waits for another process's trading; looked up again under the
    lock, so that concurrent posts of one reference post it once."""
    if await is_posted(connection, reference):
        return False
    await lock_account(connection, account_id)
    if await is_posted(connection, reference):
        return False
    await post(
        connection,
        account_id,
        reference=reference,
        kind="deposit",
        postings=ledger.deposit(amount),
        now=now,
    )
    return True


async def post(
    connection: AsyncConnection,
    account_id: int,
    *,
    reference: str,
    kind: str,
    postings: Sequence[ledger.Posting],
    now: datetime,
    fill_id: int | None = None,
    trade: ledger.Trade | None = None,
) -> None:
    if not ledger.is_balanced(postings):
        raise ValueError(f"unbalanced ledger transaction {reference}: {postings}")
    current = await lock_account(connection, account_id)  # held already for a fill
    transactions = schema.ledger_transactions
    transaction_id = await insert_id(
        connection,
        transactions,
        account_id=account_id,
        reference=reference,
        kind=kind,
        at=now,
        fill_id=fill_id,
        ticker=trade.ticker if trade else None,
        side=trade.side if trade else None,
        quantity=trade.quantity if trade else None,
        price=trade.price if trade else None,
        fee=trade.fee if trade else None,
    )
    await connection.execute(
        schema.postings.insert(),
        [
            {
                "transaction_id": transaction_id,
                "account_id": account_id,
                "ledger_account": posting.ledger_account,
                "amount": posting.amount,
                "ticker": posting.ticker,
                "quantity": posting.quantity,
            }
            for posting in postings
        ],
    )
    cash = sum((p.amount for p in postings if p.ledger_account == "cash"), ZERO)
    if cash:
        # ``current`` was read under the row lock: two processes posting at once must not
        # both add to the same old balance. (``cash = cash + x`` in SQL needs no read, but
        # SQLite keeps the amount as exact text, where SQL arithmetic is floating point.)
        account = schema.accounts
        await update_row(connection, account, account_id, cash=current + cash)


async def lock_account(connection: AsyncConnection, account_id: int) -> Decimal:
    """The account's cash, its row locked (``FOR UPDATE``) to the end of the transaction.

    Every transaction that changes an account's trading state (funds checks, order intents,
    fills, ledger posts, deposits) takes this lock first, so on PostgreSQL they run one at a
    time per account and always lock in the same order: taken later, after an insert's
    foreign key had share-locked the row, it deadlocked against a funds check waiting for
    the row. On SQLite every write transaction holds the database's one write lock.
    """
    account = schema.accounts
    query = select(account.c.cash).where(account.c.id == account_id).with_for_update()
    cash: Decimal = (await connection.execute(query)).scalar_one()
    return cash


async def is_posted(connection: AsyncConnection, reference: str) -> bool:
    """Whether a transaction with this reference is in the journal."""
    transactions = schema.ledger_transactions
    found = await connection.scalar(
        select(transactions.c.id).where(transactions.c.reference == reference)
    )
    return found is not None
