"""Plain SQL for the statements that run on every answer, on PostgreSQL and SQLite.

Storing an answer and issuing the next trial takes about ten statements. Built by the ORM,
each costs roughly a millisecond of Python before it reaches the database, and at fifty
participants answering at once on a small server that was most of the time spent per answer
(bench/study_load.py). These statements are written once instead, with table and column names
taken from the models and every value adapted by its own field (JSON, datetimes), so the same
text runs on both backends. On PostgreSQL the writes of one step (store an answer; claim an
item and issue its trial) are further joined into one statement each: every round trip to
the database, BEGIN and COMMIT included, costs CPU on both sides.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, TypeVar

from django.db import connection, models, transaction

M = TypeVar("M", bound=models.Model)
C = TypeVar("C", bound=models.Model)


def table(model: type[models.Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def execute(sql: str, params: list[Any]) -> int:
    """Run one statement; the number of rows it changed."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def fetch_one(sql: str, params: list[Any]) -> tuple[Any, ...] | None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()


def insert(model: type[models.Model], values: dict[str, Any]) -> int:
    """Insert one row (field name -> Python value); its new primary key."""
    columns, params = insert_parts(model, values)
    placeholders = ", ".join(["%s"] * len(params))
    row = fetch_one(
        f"INSERT INTO {table(model)} ({columns}) VALUES ({placeholders}) RETURNING id", params
    )
    assert row is not None
    return int(row[0])


def insert_parts(model: type[models.Model], values: dict[str, Any]) -> tuple[str, list[Any]]:
    """The column list and the parameters (each adapted by its field) of an INSERT."""
    fields = [_concrete_field(model, name) for name in values]
    columns = ", ".join(_quoted_column(f) for f in fields)
    params = [
        f.get_db_prep_save(value, connection)
        for f, value in zip(fields, values.values(), strict=True)
    ]
    return columns, params


def savepoint_if_nested() -> contextlib.AbstractContextManager[Any]:
    """Around one statement that may fail: a savepoint when a transaction is open (so that
    it can go on after the error), nothing otherwise (the statement is atomic by itself and
    BEGIN/COMMIT would be two more round trips)."""
    return transaction.atomic() if connection.in_atomic_block else contextlib.nullcontext()


def single_statement_writes() -> bool:
    """Whether several writes can go to the database as one statement (PostgreSQL's
    data-modifying WITH clauses): atomic without BEGIN and COMMIT round trips. SQLite has no
    such clauses; there the same writes run as a transaction of separate statements."""
    return connection.vendor == "postgresql"


def select(model: type[M], where: str, params: list[Any]) -> list[M]:
    """Model instances for the rows matching a WHERE clause, each value converted as the ORM
    would (JSON, datetimes on SQLite), without compiling an ORM query."""
    columns, _, _ = _layout(model, connection.vendor)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {columns} FROM {table(model)} WHERE {where}", params)
        return [_instance(model, row) for row in cursor.fetchall()]


def select_with(model: type[M], related: str, where: str, params: list[Any]) -> list[M]:
    """Like select, with the row that the foreign key ``related`` points to read in the same
    statement (one round trip instead of two) and cached on each instance, as the ORM's
    select_related does. Columns in ``where`` are qualified: ``m.`` the model, ``r.`` the
    related row."""
    return [found for found, _ in select_with_child(model, related, where, params)]


def select_with_child(
    model: type[M],
    related: str,
    where: str,
    params: list[Any],
    child: tuple[type[C], str, int] | None = None,
) -> list[tuple[M, C | None]]:
    """select_with, and optionally one child row in the same statement: ``child`` is (model,
    the name of its foreign key to ``model``, primary key), read only if its foreign key points
    to the row found (None otherwise)."""
    target = model._meta.get_field(related).related_model
    assert isinstance(target, type) and issubclass(target, models.Model)
    columns, attnames, _ = _layout(model, connection.vendor, "m")
    related_columns, related_attnames, _ = _layout(target, connection.vendor, "r")
    fk_column = _column(model, related)
    statement = f"SELECT {columns}, {related_columns}"
    joins = f"FROM {table(model)} m JOIN {table(target)} r ON r.id = m.{fk_column}"
    if child is not None:
        child_model, child_fk, child_pk = child
        statement += ", " + _layout(child_model, connection.vendor, "c")[0]
        joins += (
            f" LEFT JOIN {table(child_model)} c"
            f" ON c.id = %s AND c.{_column(child_model, child_fk)} = m.id"
        )
        params = [child_pk, *params]
    with connection.cursor() as cursor:
        cursor.execute(f"{statement} {joins} WHERE {where}", params)
        rows = cursor.fetchall()
    found = []
    split = len(attnames) + len(related_attnames)
    for row in rows:
        instance = _instance(model, row[: len(attnames)])
        setattr(instance, related, _instance(target, row[len(attnames) : split]))
        child_row = row[split:]
        found.append(
            (
                instance,
                _instance(child[0], child_row) if child and child_row[0] is not None else None,
            )
        )
    return found


def _column(model: type[models.Model], field: str) -> str:
    return _quoted_column(_concrete_field(model, field))


def _concrete_field(model: type[models.Model], name: str) -> models.Field[Any, Any]:
    """A field with a column of its own (never the reverse side of a relation)."""
    field = model._meta.get_field(name)
    assert isinstance(field, models.Field)
    return field


def _quoted_column(field: models.Field[Any, Any]) -> str:
    assert field.column is not None  # a concrete field always has its column
    return connection.ops.quote_name(field.column)


def _instance(model: type[M], row: tuple[Any, ...]) -> M:
    _, attnames, converters = _layout(model, connection.vendor)
    values = list(row)
    for index, expression, functions in converters:
        for convert in functions:
            values[index] = convert(values[index], expression, connection)
    return model.from_db(connection.alias, attnames, values)


def by_pk(model: type[M], pks: list[int]) -> dict[int, M]:
    """Rows by primary key, as model instances."""
    if not pks:
        return {}
    placeholders = ", ".join(["%s"] * len(pks))
    return {row.pk: row for row in select(model, f"id IN ({placeholders})", list(pks))}


@functools.cache
def _layout(
    model: type[models.Model], vendor: str, alias: str = ""
) -> tuple[str, list[str], list[Any]]:
    """The column list (qualified by ``alias`` if given), attribute names and per-column
    converters of a model (per backend: the converters differ)."""
    fields = model._meta.concrete_fields
    prefix = f"{alias}." if alias else ""
    columns = ", ".join(prefix + _quoted_column(f) for f in fields)
    converters = []
    for index, f in enumerate(fields):
        expression = f.get_col(model._meta.db_table)
        functions = connection.ops.get_db_converters(expression)
        functions += expression.get_db_converters(connection)
        if functions:
            converters.append((index, expression, functions))
    return columns, [f.attname for f in fields], converters
