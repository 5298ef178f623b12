"""Statements built once with SQLAlchemy Core and run straight on the driver's connection.

A delivery's write path runs a few dozen small statements. Through SQLAlchemy's async
layer each one costs tens of microseconds of Python (the greenlet bridge, the compiled
cache's key, parameter and result processing); SQLite runs it in one or two. So the write
path keeps SQLAlchemy for what it is best at, the schema and the SQL text of each dialect,
and runs the statements itself:

- a :class:`Statement` is a Core statement compiled once per dialect, with the schema's
  own bind and result processors (``ExactDecimal``, ``UTCDateTime``), so values are stored
  and read exactly as through SQLAlchemy;
- a :class:`Tx` runs statements on the raw connection: ``sqlite3`` inline on the loop's
  thread, ``asyncpg`` natively (its prepared-statement cache keeps each statement parsed);
- an INSERT that answers its new row's id (:func:`returning_id`) says ``RETURNING id`` on
  PostgreSQL only: on SQLite the id is the one ``sqlite3`` reports (``lastrowid``), since
  SQLite's RETURNING runs as a trigger that stores the rows in a temporary b-tree first:
  about 30,000 instructions an insert (callgrind), 7 % of a delivery's.

Both databases' unique violations arrive as :class:`UniqueViolation`.
"""

from __future__ import annotations

import contextlib
import functools
import operator
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, Dialect, Insert, Table, bindparam, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

from app.values import value

if TYPE_CHECKING:  # imported when a PostgreSQL database is used: SQLite-only servers stay small
    import asyncpg

Row = tuple[Any, ...]
_SQLITE_UNIQUE = frozenset({sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY})
_NO_DEFAULT = object()


class UniqueViolation(Exception):
    """A unique constraint or unique index refused the row."""


@value
class _Compiled:
    sql: str
    names: frozenset[str]
    required: frozenset[str]  # the names without a value of their own in the statement
    # The result columns that have a processor: (position, processor).
    processed_results: tuple[tuple[int, Callable[[Any], Any]], ...]
    # Binding runs for every statement: when the names given (with the statement's own
    # values) are exactly its names, they are taken in one C call and only the processed
    # positions are rewritten; anything else goes the long way, to its error.
    defaults: Mapping[str, Any]
    take: Callable[[Mapping[str, Any]], tuple[Any, ...]]
    processed: tuple[tuple[int, Callable[[Any], Any]], ...]
    # On SQLite, an INSERT whose one row is the id of the row it inserted (returning_id).
    rowid: bool

    def bind(self, values: Mapping[str, Any]) -> list[Any]:
        """The parameters in order; a name the statement does not have is refused, not
        ignored (a misspelt one would otherwise leave a column unset, or its default)."""
        complete = values if len(values) == len(self.names) else {**self.defaults, **values}
        if len(complete) == len(self.names):
            try:
                bound = list(self.take(complete))
            except KeyError:  # as many names, not the same ones: refused below
                pass
            else:
                # Every processor (the schema's and SQLAlchemy's) passes None through.
                for index, process in self.processed:
                    bound[index] = process(bound[index])
                return bound
        # Not exactly the statement's names: an unknown one, or a required one missing.
        unknown = sorted(set(values) - self.names)
        if unknown:
            raise KeyError(f"the statement has no parameter {', '.join(unknown)}")
        missing = sorted(self.required - values.keys())
        raise KeyError(f"statement parameter {missing[0]!r} was not given")

    def rows(self, rows: Sequence[Sequence[Any]]) -> list[Row]:
        processed = self.processed_results
        if not processed:
            return [tuple(row) for row in rows]
        result = []
        for row in rows:
            values = list(row)
            for index, process in processed:
                value = values[index]
                if value is not None:
                    values[index] = process(value)
            result.append(tuple(values))
        return result


class Statement:
    """A Core statement (select, insert, update, delete) compiled once per dialect.

    Parameters are ``bindparam`` names; a literal in the statement (``status == "open"``)
    is bound with its own value. Expanding parameters (``IN`` over a list) are refused.
    ``clause`` may also be a function of the dialect's name, for a statement written in
    each dialect's own terms (``INSERT ... ON CONFLICT``).
    """

    __slots__ = ("_compiled", "clause", "rowid")

    def __init__(
        self, clause: ClauseElement | Callable[[str], ClauseElement], *, rowid: bool = False
    ) -> None:
        self.clause = clause
        self.rowid = rowid  # see returning_id
        self._compiled: dict[str, _Compiled] = {}

    def compiled(self, dialect: Dialect) -> _Compiled:
        found = self._compiled.get(dialect.name)
        if found is None:
            clause = self.clause if isinstance(self.clause, ClauseElement) else None
            if clause is None:
                assert callable(self.clause)
                clause = self.clause(dialect.name)
            rowid = self.rowid and dialect.name == "sqlite"
            found = self._compiled[dialect.name] = _compile(clause, dialect, rowid=rowid)
        return found


def returning_id(build: Callable[[str], Insert], table: Table) -> Statement:
    """An INSERT (``build`` of the dialect's name) whose one row is the new row's id, or no
    row when it inserted none (``ON CONFLICT DO NOTHING``): ``RETURNING id`` on PostgreSQL;
    on SQLite the statement as built, and the id from ``sqlite3``'s ``lastrowid`` (every
    table's ``id INTEGER PRIMARY KEY`` is its rowid). A delivery inserts four or five such
    rows: the event's claim, the order, the fill, the ledger transaction, an open's position."""

    def clause(dialect: str) -> ClauseElement:
        insert = build(dialect)
        return insert if dialect == "sqlite" else insert.returning(table.c.id)

    return Statement(clause, rowid=True)


def _compile(clause: ClauseElement, dialect: Dialect, *, rowid: bool = False) -> _Compiled:
    compiled = clause.compile(dialect=dialect)
    assert isinstance(compiled, SQLCompiler)
    params = []
    for name in compiled.positiontup or []:
        bind = compiled.binds[name]
        if bind.expanding:
            raise ValueError(f"expanding parameter {name!r} is not supported here")
        default = _NO_DEFAULT if bind.required else bind.effective_value
        # dialect_impl: the dialect's own type (SQLite's DATETIME text), as SQLAlchemy uses.
        params.append((name, default, bind.type.dialect_impl(dialect).bind_processor(dialect)))
    columns: Sequence[Any] = (
        getattr(clause, "selected_columns", None) or getattr(clause, "exported_columns", None) or ()
    )
    results = tuple(
        column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns
    )
    positional = [name for name, _, _ in params]  # a name used twice is in it twice
    return _Compiled(
        sql=compiled.string,
        names=frozenset(positional),
        required=frozenset(name for name, default, _ in params if default is _NO_DEFAULT),
        processed_results=tuple(
            (index, process) for index, process in enumerate(results) if process is not None
        ),
        defaults={name: default for name, default, _ in params if default is not _NO_DEFAULT},
        take=_taker(positional),
        processed=tuple(
            (index, process) for index, (_, _, process) in enumerate(params) if process
        ),
        rowid=rowid,
    )


def _taker(names: Sequence[str]) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    """The values of ``names`` as a tuple (``itemgetter`` of one name gives a bare value)."""
    if not names:
        return lambda _values: ()
    if len(names) == 1:
        get_one = operator.itemgetter(names[0])
        return lambda values: (get_one(values),)
    return operator.itemgetter(*names)


class Tx:
    """Statements in one transaction the caller owns (or, for reads, each on its own)."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        # PostgreSQL: the account an open's transaction is for (see
        # app.database.Database.transaction): its first statement takes the account's lock
        # (intent_statements.OPENING_LOCKED).
        self.opening_account: int | None = None

    async def rows(self, statement: Statement, **params: Any) -> list[Row]:
        raise NotImplementedError

    async def run(self, statement: Statement, **params: Any) -> int:
        """Run a statement that returns no rows; the number of rows it touched."""
        raise NotImplementedError

    async def run_many(self, statement: Statement, rows: Sequence[Mapping[str, Any]]) -> None:
        raise NotImplementedError

    def savepoint(self) -> contextlib.AbstractAsyncContextManager[None]:
        """A nested transaction: an exception rolls back only what ran inside it."""
        raise NotImplementedError

    async def first(self, statement: Statement, **params: Any) -> Row | None:
        rows = await self.rows(statement, **params)
        return rows[0] if rows else None

    async def one(self, statement: Statement, **params: Any) -> Row:
        return _only(await self.rows(statement, **params))

    async def scalar(self, statement: Statement, **params: Any) -> Any:
        """The first column of the first row; None when there is no row."""
        row = await self.first(statement, **params)
        return None if row is None else row[0]

    async def scalars(self, statement: Statement, **params: Any) -> list[Any]:
        return [row[0] for row in await self.rows(statement, **params)]

    # run and scalar with the parameters in a mapping the caller built: insert_id and
    # update_row pass their own, and a delivery runs a few of each.
    async def run_with(self, statement: Statement, params: Mapping[str, Any]) -> int:
        return await self.run(statement, **params)

    async def scalar_with(self, statement: Statement, params: Mapping[str, Any]) -> Any:
        return await self.scalar(statement, **params)


def _only(rows: list[Row]) -> Row:
    if len(rows) != 1:
        raise LookupError(f"expected one row, found {len(rows)}")
    return rows[0]


class SqliteTx(Tx):
    """On a ``sqlite3`` connection, inline: a statement on a small transaction takes
    microseconds, less than a hop to another thread would."""

    def __init__(self, connection: sqlite3.Connection, dialect: Dialect) -> None:
        super().__init__(dialect)
        self._connection = connection
        self._cursor = connection.cursor()  # one for all its statements, each read at once
        self._depth = 0

    def _execute(self, statement: Statement, params: Mapping[str, Any]) -> tuple[Any, Any]:
        compiled = statement.compiled(self.dialect)
        try:
            return compiled, self._cursor.execute(compiled.sql, compiled.bind(params))
        except sqlite3.IntegrityError as exc:
            if exc.sqlite_errorcode in _SQLITE_UNIQUE:
                raise UniqueViolation(str(exc)) from exc
            raise

    def _fetch(self, statement: Statement, params: Mapping[str, Any]) -> list[Row]:
        compiled, cursor = self._execute(statement, params)
        if compiled.rowid:  # returning_id: the inserted row's id, if a row was inserted
            return [(cursor.lastrowid,)] if cursor.rowcount == 1 else []
        result: list[Row] = compiled.rows(cursor.fetchall())
        return result

    async def rows(self, statement: Statement, **params: Any) -> list[Row]:
        return self._fetch(statement, params)

    # first/one/scalar straight from _fetch, not through rows(): together they run a
    # couple of dozen times per delivery, and each coroutine awaited inside another costs.
    async def first(self, statement: Statement, **params: Any) -> Row | None:
        rows = self._fetch(statement, params)
        return rows[0] if rows else None

    async def one(self, statement: Statement, **params: Any) -> Row:
        return _only(self._fetch(statement, params))

    async def scalar(self, statement: Statement, **params: Any) -> Any:
        rows = self._fetch(statement, params)
        return rows[0][0] if rows else None

    async def run(self, statement: Statement, **params: Any) -> int:
        _, cursor = self._execute(statement, params)
        count: int = cursor.rowcount
        return count

    async def run_with(self, statement: Statement, params: Mapping[str, Any]) -> int:
        _, cursor = self._execute(statement, params)
        count: int = cursor.rowcount
        return count

    async def scalar_with(self, statement: Statement, params: Mapping[str, Any]) -> Any:
        rows = self._fetch(statement, params)
        return rows[0][0] if rows else None

    async def run_many(self, statement: Statement, rows: Sequence[Mapping[str, Any]]) -> None:
        compiled = statement.compiled(self.dialect)
        self._connection.executemany(compiled.sql, [compiled.bind(row) for row in rows])

    @contextlib.asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        self.begin_savepoint()
        try:
            yield
        except BaseException:
            self.end_savepoint(commit=False)
            raise
        self.end_savepoint(commit=True)

    def begin_savepoint(self) -> None:
        self._cursor.execute(f"SAVEPOINT tx{self._depth}")
        self._depth += 1

    def end_savepoint(self, *, commit: bool) -> None:
        """Release the innermost savepoint, its work kept or (``commit=False``) undone."""
        self._depth -= 1
        name = f"tx{self._depth}"
        if not commit:
            self._cursor.execute(f"ROLLBACK TO {name}")
        self._cursor.execute(f"RELEASE {name}")


class PostgresTx(Tx):
    """On an ``asyncpg`` connection."""

    def __init__(self, connection: asyncpg.Connection, dialect: Dialect) -> None:
        import asyncpg  # here, not at the top: see TYPE_CHECKING above

        super().__init__(dialect)
        self._connection = connection
        self._unique_violation: type[Exception] = asyncpg.UniqueViolationError

    async def rows(self, statement: Statement, **params: Any) -> list[Row]:
        compiled = statement.compiled(self.dialect)
        try:
            records = await self._connection.fetch(compiled.sql, *compiled.bind(params))
        except self._unique_violation as exc:
            raise UniqueViolation(str(exc)) from exc
        return compiled.rows(records)

    async def run(self, statement: Statement, **params: Any) -> int:
        compiled = statement.compiled(self.dialect)
        try:
            status = await self._connection.execute(compiled.sql, *compiled.bind(params))
        except self._unique_violation as exc:
            raise UniqueViolation(str(exc)) from exc
        return int(status.rsplit(" ", 1)[-1])  # "UPDATE 1", "INSERT 0 1", ...

    async def run_many(self, statement: Statement, rows: Sequence[Mapping[str, Any]]) -> None:
        compiled = statement.compiled(self.dialect)
        await self._connection.executemany(compiled.sql, [compiled.bind(row) for row in rows])

    @contextlib.asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        async with self._connection.transaction():  # nested: a SAVEPOINT
            yield


def insert_statement(table: Table, columns: Sequence[str]) -> Statement:
    """``INSERT INTO table (columns) VALUES (...)`` answering the new id (:func:`returning_id`),
    built once per column list (in the order given: each caller names its columns in an
    order of its own)."""
    return _insert_statement(table, tuple(columns))


@functools.cache
def _insert_statement(table: Table, columns: tuple[str, ...]) -> Statement:
    values = {name: bindparam(name, type_=table.c[name].type) for name in columns}
    insert = table.insert().values(values)
    return returning_id(lambda _dialect: insert, table)


@functools.cache
def _update_statement(table: Table, columns: tuple[str, ...]) -> Statement:
    values = {name: bindparam(name, type_=table.c[name].type) for name in columns}
    return Statement(update(table).where(table.c.id == bindparam("row_id")).values(values))


def insert_or_ignore(
    table: Table,
    columns: Sequence[str],
    *,
    unique: Sequence[str],
    returning: Sequence[ColumnElement[Any]] = (),
    new_id: bool = False,
) -> Statement:
    """INSERT that does nothing when a row with the same ``unique`` columns exists (both
    databases' ``ON CONFLICT DO NOTHING``), so concurrent creators never collide. With
    ``returning``, those columns of the new row, with ``new_id`` its id
    (:func:`returning_id`); no row when nothing was inserted."""

    def insert(dialect: str) -> Insert:
        module = postgresql if dialect == "postgresql" else sqlite
        values = {name: bindparam(name, type_=table.c[name].type) for name in columns}
        built: Insert = (
            module.insert(table).values(values).on_conflict_do_nothing(index_elements=unique)
        )
        return built

    if new_id:
        assert not returning, "new_id or returning, not both"
        return returning_id(insert, table)

    def build(dialect: str) -> ClauseElement:
        built = insert(dialect)
        return built.returning(*returning) if returning else built

    return Statement(build)


async def tx_on(connection: AsyncConnection) -> Tx:
    """These statements inside a transaction SQLAlchemy opened, for the write path's
    functions called from colder code (start-up, the operator's API)."""
    raw: Any = (await connection.get_raw_connection()).driver_connection
    if connection.dialect.name == "postgresql":
        # asyncpg's transaction begins with SQLAlchemy's first statement: run one.
        await connection.exec_driver_sql("SELECT 1")
        return PostgresTx(raw, connection.dialect)
    return SqliteTx(raw.sqlite, connection.dialect)


async def insert_id(tx: Tx, table: Table, **values: Any) -> int:
    """Insert a row into ``table`` and return its ``id``."""
    return int(await tx.scalar_with(_insert_statement(table, tuple(values)), values))


async def update_row(tx: Tx, table: Table, row_id: int, **values: Any) -> None:
    """Set ``values`` on the row of ``table`` whose ``id`` is ``row_id``."""
    statement = _update_statement(table, tuple(values))
    values["row_id"] = row_id  # values: this call's own dict
    await tx.run_with(statement, values)
