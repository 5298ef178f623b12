"""The journal's writes: balanced ledger transactions, posted once per reference, in a
transaction the caller owns. The account row's ``cash`` moves with its cash postings."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Numeric, bindparam, select, type_coerce, update

from app import ledger, schema, sql
from app.columns import ExactDecimal
from app.sql import Tx

ZERO = Decimal(0)


async def record_deposit(
    tx: Tx, account_id: int, *, amount: Decimal, reference: str, now: datetime
) -> bool:
    """Post a deposit (or, negative, a withdrawal) once per ``reference``.

    Looked up before the account lock is taken, so that a start-up finding its opening
    deposit posted never waits for another process's trading; looked up again under the
    lock, so that concurrent posts of one reference post it once."""
    if await is_posted(tx, reference):
        return False
    await lock_account(tx, account_id)
    if await is_posted(tx, reference):
        return False
    postings = ledger.deposit(amount)
    await post(tx, account_id, reference=reference, kind="deposit", postings=postings, now=now)
    await move_cash(tx, account_id, cash_moved(postings))
    return True


async def post(
    tx: Tx,
    account_id: int,
    *,
    reference: str,
    kind: str,
    postings: Sequence[ledger.Posting],
    now: datetime,
    fill_id: int | None = None,
    trade: ledger.Trade | None = None,
) -> None:
    """Post a balanced transaction. The caller moves the account's cash by its cash
    postings (:func:`move_cash`), once for all it posts, as its last write."""
    if not ledger.is_balanced(postings):
        raise ValueError(f"unbalanced ledger transaction {reference}: {postings}")
    transaction_id = await sql.insert_id(
        tx,
        schema.ledger_transactions,
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
    await tx.run_many(
        _POSTING,
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


def cash_moved(postings: Sequence[ledger.Posting]) -> Decimal:
    return sum((p.amount for p in postings if p.ledger_account == "cash"), ZERO)


async def move_cash(
    tx: Tx, account_id: int, amount: Decimal, *, cash: Decimal | None = None
) -> None:
    """Add ``amount`` to the account row's ``cash``, which moves with the journal's cash.

    On PostgreSQL one ``UPDATE ... SET cash = cash + amount`` (``NUMERIC`` arithmetic is
    exact): the row is locked from there to the commit, so callers move cash last and
    trading on one account waits for that commit only. SQLite keeps the amount as exact
    text, where SQL arithmetic is floating point: it is read (or ``cash``, read earlier in
    this transaction, is used) and written back, which its single writer makes safe.
    """
    if not amount:
        return
    if tx.dialect.name == "postgresql":
        await tx.run(_ADD_CASH, account_id=account_id, amount=amount)
        return
    if cash is None:
        cash = await lock_account(tx, account_id)
    await sql.update_row(tx, schema.accounts, account_id, cash=cash + amount)


async def lock_account(tx: Tx, account_id: int) -> Decimal:
    """The account's cash, its row locked to the end of the transaction.

    What reads the cash to decide (a funds check, a withdrawal) takes this lock first, so
    decisions on one account run one at a time and see every reservation committed
    before them. On PostgreSQL it is ``FOR NO KEY UPDATE``: the key-share locks that
    inserts referencing the account take (orders, postings) do not wait for it, nor it for
    them. On SQLite every write transaction holds the database's one write lock.
    """
    cash: Decimal = (await tx.one(_LOCK, account_id=account_id))[0]
    return cash


async def is_posted(tx: Tx, reference: str) -> bool:
    """Whether a transaction with this reference is in the journal."""
    return await tx.first(_POSTED, reference=reference) is not None


_LOCK = sql.Statement(
    select(schema.accounts.c.cash)
    .where(schema.accounts.c.id == bindparam("account_id"))
    .with_for_update(key_share=True)
)
_ADD_CASH = sql.Statement(
    update(schema.accounts)
    .where(schema.accounts.c.id == bindparam("account_id"))
    # NUMERIC arithmetic: ExactDecimal's own type (text on SQLite) would make + concatenate.
    .values(
        cash=type_coerce(schema.accounts.c.cash, Numeric(asdecimal=True))
        + bindparam("amount", type_=ExactDecimal())
    )
)
_POSTED = sql.Statement(
    select(schema.ledger_transactions.c.id).where(
        schema.ledger_transactions.c.reference == bindparam("reference")
    )
)
_POSTING = sql.Statement(
    schema.postings.insert().values(
        {
            name: bindparam(name, type_=schema.postings.c[name].type)
            for name in (
                "transaction_id",
                "account_id",
                "ledger_account",
                "amount",
                "ticker",
                "quantity",
            )
        }
    )
)
