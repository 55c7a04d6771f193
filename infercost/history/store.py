"""The history store: one table of points (points.COLUMNS), in a DuckDB file (the default,
results/history/history.duckdb) or as a Parquet dataset, a folder or an object-store prefix
(s3://, gs://, ...) that DuckDB reads directly.

Adding is idempotent and all-or-nothing: a record already stored (same instance, case key and
time, same content) is skipped, one stored with other values refuses the whole add, and the rows
of an add are written in one transaction (DuckDB) or one Parquet file put in place at once.
"""

from __future__ import annotations

import os
import uuid
from datetime import datetime, timezone
from pathlib import Path

from infercost.errors import InputError, RunError
from infercost.redact import control_escaped

from .points import COLUMNS

DEFAULT = Path("results/history/history.duckdb")

SCHEMA = ("id VARCHAR, digest VARCHAR, instance VARCHAR, key VARCHAR, case_name VARCHAR, workload VARCHAR, "
          "backend VARCHAR, device VARCHAR, metric VARCHAR, time TIMESTAMP, value DOUBLE, low DOUBLE, high DOUBLE, "
          "status VARCHAR, reason VARCHAR, git_commit VARCHAR, infercost VARCHAR, versions VARCHAR, host VARCHAR, cpu_model VARCHAR, "
          "price VARCHAR, pricing VARCHAR, usd_per_hour DOUBLE, price_as_of VARCHAR, source VARCHAR, added TIMESTAMP")


def is_remote(where: str) -> bool:
    return "://" in where


def kind_of(where: str) -> str:
    """"duckdb" for a database file, "parquet" for a folder or an object-store prefix."""
    if is_remote(where) or Path(where).is_dir():
        return "parquet"
    return "duckdb" if Path(where).is_file() or Path(where).suffix else "parquet"


class Store:
    """Open with write=True to add (a DuckDB file is created, and locked against other writers)."""

    def __init__(self, where, write: bool = False):
        import duckdb
        if not str(where).strip():
            raise InputError("the history's store is an empty path: give a DuckDB file, a folder or an s3:// prefix")
        self.where, self.kind, self.write = str(where), kind_of(str(where)), write
        shown = control_escaped(self.where)
        if self.kind == "duckdb":
            path = Path(self.where)
            if not write and not path.exists():
                raise InputError(f"no history at {shown} (add records with: infercost history add FILES --store {shown})")
            if write:
                made(path.parent, shown)
            try:
                self.con = duckdb.connect(self.where, read_only=not write)
                self.con.execute(f"CREATE TABLE IF NOT EXISTS points ({SCHEMA})" if write else "SELECT count(*) FROM points").fetchall()
            except duckdb.IOException as e:
                text = str(e)
                if "lock" in text.lower():
                    raise RunError(f"the history at {shown} is open for writing by another process; try again when it ends") from None
                if "not a valid" in text or "corrupt" in text.lower():
                    raise InputError(f"the history at {shown} is not a readable infercost history (a damaged or "
                                     f"foreign file?): {first_line(text)}") from None
                raise InputError(f"cannot open the history at {shown}: {first_line(text)}") from None
            except duckdb.Error as e:
                raise InputError(f"the history at {shown} is not a readable infercost history "
                                 f"(a damaged or foreign file?): {first_line(str(e))}") from None
        else:
            self.con = duckdb.connect()
            if self.where.startswith(("s3://", "gs://", "gcs://", "r2://")):
                try:  # the cloud's own credentials (environment, profile, instance role), where DuckDB finds them
                    kind = "gcs" if self.where.startswith(("gs://", "gcs://")) else "r2" if self.where.startswith("r2://") else "s3"
                    self.con.execute(f"CREATE OR REPLACE SECRET infercost_store (TYPE {kind}, PROVIDER credential_chain)").fetchall()
                except duckdb.Error:
                    pass  # then DuckDB's own settings; a store it cannot reach is refused below in one line
            if not is_remote(self.where):
                if not write and not Path(self.where).is_dir():
                    raise InputError(f"no history at {shown}")
                if write:
                    made(Path(self.where), shown)
            files = self._parquet_files()
            try:
                if files:
                    listed = ", ".join(map(quoted, files))
                    self.con.execute(f"CREATE VIEW points AS SELECT * FROM read_parquet([{listed}], union_by_name=true)")
                    self.con.execute("SELECT count(*) FROM points").fetchall()
                else:
                    self.con.execute(f"CREATE TABLE points ({SCHEMA})")
            except duckdb.Error as e:
                raise InputError(f"the history at {shown} holds a file that is not an infercost history's Parquet: "
                                 f"{first_line(str(e))}") from None

    def _parquet_files(self) -> list[str]:
        if not is_remote(self.where):
            return sorted(str(p) for p in Path(self.where).glob("points-*.parquet"))
        import duckdb
        try:
            return [r[0] for r in self.con.execute("SELECT file FROM glob(?)", [self.where.rstrip("/") + "/points-*.parquet"]).fetchall()]
        except duckdb.Error as e:
            raise InputError(f"cannot list {control_escaped(self.where)}: {first_line(str(e))} "
                             "(DuckDB reads object stores through its httpfs extension and the cloud's credentials: "
                             "see the README's history section)") from None

    def close(self) -> None:
        self.con.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def add(self, rows: list[dict]) -> tuple[int, int]:
        """(records added, records already stored). InputError, with nothing written, where a record
        conflicts with a stored one or with another of the same add."""
        import pandas as pd
        if not self.write:
            raise RuntimeError("a store opened for reading")
        new = pd.DataFrame(rows, columns=list(COLUMNS))
        new["added"] = datetime.now(timezone.utc).replace(tzinfo=None)
        records = new[["id", "digest", "instance", "case_name", "time", "source"]].drop_duplicates(["id", "digest"])
        twice = records[records.duplicated("id", keep=False)]
        if len(twice):
            a, b = twice.iloc[0], twice.iloc[1]
            raise InputError(f"two records of {a['instance']} {a['case_name']} at {a['time']} hold different values "
                             f"({a['source']} and {b['source']}): nothing was added")
        con = self.con
        con.register("new_records", records)
        clash = con.execute("SELECT n.instance, n.case_name, n.time, n.source, s.source FROM new_records n "
                            "JOIN (SELECT DISTINCT id, digest, source FROM points) s ON n.id = s.id AND n.digest <> s.digest "
                            "LIMIT 1").fetchall()
        if clash:
            clash = clash[0]
            raise InputError(f"{clash[3]}: the record of {clash[0]} {clash[1]} at {clash[2]} is already in the history "
                             f"with other values (added from {clash[4]}): nothing was added")
        known = {r[0] for r in con.execute("SELECT DISTINCT n.id FROM new_records n JOIN points p ON n.id = p.id").fetchall()}
        con.unregister("new_records")
        fresh = new[~new["id"].isin(known)] if known else new
        added = records["id"].nunique() - len(known)
        if not len(fresh):
            return 0, len(known)
        con.register("fresh", fresh)
        try:
            if self.kind == "duckdb":
                con.execute("BEGIN TRANSACTION")
                try:
                    con.execute("INSERT INTO points SELECT * FROM fresh")
                    con.execute("COMMIT")
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
            else:
                self._put_parquet()
        finally:
            con.unregister("fresh")
        return added, len(known)

    def _put_parquet(self) -> None:
        """One new Parquet file holding the add: written beside its final name and renamed into
        place (a reader never sees half of it); an object store's put is whole by itself."""
        name = f"points-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}.parquet"
        if is_remote(self.where):
            self.con.execute(f"COPY fresh TO {quoted(self.where.rstrip('/') + '/' + name)} (FORMAT parquet)")
            return
        tmp = Path(self.where) / f".{name}.tmp"
        try:
            self.con.execute(f"COPY fresh TO {quoted(str(tmp))} (FORMAT parquet)")
            os.replace(tmp, Path(self.where) / name)
        finally:
            tmp.unlink(missing_ok=True)

    def frame(self, where: str = "", params: list | None = None):
        """The stored points (with a metric) as a DataFrame, sorted by series and time."""
        sql = f"SELECT * EXCLUDE (added) FROM points WHERE metric IS NOT NULL {('AND ' + where) if where else ''} " \
              "ORDER BY instance, key, metric, time"
        return self.con.execute(sql, params or []).df()

    def failing(self, where: str = "", params: list | None = None) -> list[tuple]:
        """(instance, case name, newest time, its status, its reason, the last valid point's time) of
        each case whose newest record is not valid but an earlier one was."""
        sql = ("SELECT instance, arg_max(case_name, time), max(time), arg_max(status, time), arg_max(reason, time), "
               "max(time) FILTER (WHERE status = 'ok') AS last_ok FROM (SELECT DISTINCT id, instance, key, case_name, "
               f"time, status, reason FROM points {('WHERE ' + where) if where else ''}) GROUP BY instance, key "
               "HAVING arg_max(status, time) <> 'ok' AND last_ok IS NOT NULL ORDER BY 1, 2")
        return self.con.execute(sql, params or []).fetchall()

    def remove(self, where: str, params: list, really: bool) -> int:
        """The records (every row of each) that `where` selects: their count, and with really=True
        removed in one transaction. A Parquet store's files are whole objects: refused."""
        n = self.con.execute(f"SELECT count(DISTINCT id) FROM points WHERE {where}", params).fetchall()[0][0]
        if really and n:
            if self.kind != "duckdb":
                raise InputError(f"{control_escaped(self.where)} is a Parquet store, whose files are never rewritten: "
                                 "copy it into a DuckDB file (history copy), remove there, and copy that into a new prefix")
            self.con.execute("BEGIN TRANSACTION")
            try:
                self.con.execute(f"DELETE FROM points WHERE {where}", params).fetchall()
                self.con.execute("COMMIT")
            except BaseException:
                self.con.execute("ROLLBACK")
                raise
        return n

    def rows(self) -> list[dict]:
        """Every stored row (records without a point included), as `add` takes them."""
        cols = ", ".join(COLUMNS)
        return self.con.execute(f"SELECT {cols} FROM points ORDER BY time, id, metric").df().astype(object) \
            .where(lambda d: d.notna(), None).to_dict("records")


def quoted(text: str) -> str:
    """A path as an SQL string literal (DuckDB's COPY and view statements take no parameters there)."""
    return "'" + text.replace("'", "''") + "'"


def made(folder: Path, shown: str) -> None:
    """The folder, made where absent; InputError where it cannot be (a file in the way, no permission)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot write the history at {shown}: {control_escaped(str(e.strerror or e))}") from None
    if not folder.is_dir():
        raise InputError(f"cannot write the history at {shown}: {control_escaped(str(folder))} is not a folder")


def first_line(text: str) -> str:
    return control_escaped(text.strip().splitlines()[0] if text.strip() else text)[:300]
