"""The batch journal: an append-only, hash-chained event log in SQLite (WAL).

Every transition, command, setpoint written and reading taken is one event
with a sequence number, the batch-clock time, the wall-clock time and the
hash of the previous event. Reports, replay, resume and telemetry read this
file; nothing keeps a second truth. Subscribers (the live display, telemetry)
hear each event as it is appended: one stream, many consumers.

Durability: the database runs with ``synchronous=FULL``. Events are committed
before the engine acts on them: every transition, command and setpoint is
committed at once, and with it every reading before it (so the readings a
control action followed from are durable before the action). Readings nothing
acted on are committed at the end of the scan that took them once the last commit is
``READING_COMMIT_WALL_S`` of wall time old (``commit_lagging``; on the wall, a bench or a
batch waiting on a person, that is every scan: a held batch's readings are in the file for
every reader, and survive a kill, within a poll period), and by any append once they are
``READING_COMMIT_S`` of batch time old and the last commit that old in wall time. A kill
takes at most the readings of the last half second of wall time.

Signed checkpoints: with a site key (``signer``, or ``POC_TWIN_SITE_KEY`` in the
environment) the journal appends a ``checkpoint`` event every
``CHECKPOINT_EVERY`` events and when it is closed, carrying an Ed25519
signature over the chain head before it (see :mod:`twin.signing` and
docs/journal.md for what that does and does not protect against).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import json.encoder
import math
import re
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from twin.clock import wall_monotonic, wall_stamp
from twin.errors import JournalError, JournalWriteFailed

__all__ = [
    "CHECKPOINT",
    "GENESIS",
    "Event",
    "HeadSigner",
    "Journal",
    "VerifyResult",
    "check_new_journal",
    "read_events",
    "require_intact",
    "verify",
]

GENESIS = "0" * 64
#: Longest batch time a reading nothing acted on may wait for its commit (seconds).
READING_COMMIT_S = 600.0
#: Longest wall time since the last commit after which a scan commits what it journalled:
#: half the shortest poll period a recipe may set (1 s), so that on the wall every scan
#: commits, whatever its jitter. Durability only: when a commit happens never changes what
#: an event says.
READING_COMMIT_WALL_S = 0.5
#: Kind of the event that carries a signature over the chain head before it.
CHECKPOINT = "checkpoint"
#: Events between signed checkpoints (about 6 h of batch time on the reference process).
CHECKPOINT_EVERY = 500

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq        INTEGER PRIMARY KEY,
    batch_time REAL    NOT NULL,
    wall_time  TEXT    NOT NULL,
    kind       TEXT    NOT NULL,
    source     TEXT    NOT NULL,
    data       TEXT    NOT NULL,
    prev_hash  TEXT    NOT NULL,
    hash       TEXT    NOT NULL
);
"""


@dataclass(frozen=True)
class Event:
    """One journal entry."""

    seq: int
    batch_time: float
    wall_time: str
    kind: str
    source: str
    data: dict[str, Any]
    prev_hash: str
    hash: str


#: The one canonical JSON form (sorted keys, no spaces, no NaN): built once, not per event.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), allow_nan=False)

#: That encoder's C core, made once: ``JSONEncoder.encode`` makes a new one on every call,
#: twice per event. Same settings, so the same text. It keeps no circular-reference markers
#: (they would go stale after an error); :func:`_canonical` reports a cycle as before.
_make_encoder = getattr(json.encoder, "c_make_encoder", None)
_C_CANONICAL: Callable[[Any, int], list[str]] | None = (
    None
    if _make_encoder is None
    else _make_encoder(
        None,  # no circular-reference markers
        _CANONICAL.default,
        json.encoder.encode_basestring_ascii,
        None,  # no indent
        _CANONICAL.key_separator,
        _CANONICAL.item_separator,
        _CANONICAL.sort_keys,
        _CANONICAL.skipkeys,
        _CANONICAL.allow_nan,
    )
)


def _canonical(value: Any) -> str:
    if _C_CANONICAL is None:
        return _CANONICAL.encode(value)
    try:
        return "".join(_C_CANONICAL(value, 0))
    except RecursionError:
        return _CANONICAL.encode(value)  # names a cycle (ValueError), or recurses too deep again


_SCALARS: frozenset[type] = frozenset({str, bool, type(None)})
_INT_LIMIT = 1 << 64  # far below Python's limit on the digits of an int written out
_PLAIN_DEPTH = 8  # deeper (or a cycle): the encoder decides


def _plain(value: Any, depth: int = 0) -> bool:
    """True if :func:`_canonical` surely takes ``value``: dicts with ``str`` keys, lists,
    strings, booleans, None, ints of modest size and finite floats, exactly these types.
    False means only "not sure" (the encoder then decides, and names what it refuses).

    What a journal in memory without a chain checks instead of writing the text out: the
    text is kept nowhere, and writing a reading's floats is ~8 us of each event."""
    cls = type(value)
    if cls is dict:
        if depth >= _PLAIN_DEPTH:
            return False
        for k, v in value.items():
            if type(k) is not str:
                return False
            t = type(v)
            if t is float:
                if v - v != 0.0:  # NaN or infinite
                    return False
            elif t not in _SCALARS and not (
                (t is int and -_INT_LIMIT < v < _INT_LIMIT) or _plain(v, depth + 1)
            ):
                return False
        return True
    if cls is list:
        return depth < _PLAIN_DEPTH and all(_plain(v, depth + 1) for v in value)
    if cls is float:
        return value - value == 0.0
    if cls is int:
        return -_INT_LIMIT < value < _INT_LIMIT
    return cls in _SCALARS


def event_hash(
    prev_hash: str, seq: int, batch_time: float, wall_time: str, kind: str, source: str, data: str
) -> str:
    """The chain link: covers the previous hash and every field of the event."""
    body = _canonical([prev_hash, seq, batch_time, wall_time, kind, source, data])
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def _journal_file(path: Path) -> Path:
    """``path`` if it is a regular file (a journal); else JournalError saying what it is."""
    try:
        exists, is_file, is_dir = path.exists(), path.is_file(), path.is_dir()
    except OSError as exc:  # a name too long for the file system, a loop of links
        raise JournalError(f"{path}: not a journal file ({exc.strerror})") from None
    if not exists:
        raise JournalError(f"{path}: no such journal file")
    if not is_file:
        what = "a directory" if is_dir else "not a regular file"
        raise JournalError(f"{path}: {what}, not a journal file")
    return path


#: The first bytes of every SQLite database file.
_SQLITE_HEADER = b"SQLite format 3\x00"


def check_new_journal(path: Path) -> Path:
    """``path`` if a new batch may write its journal there; else JournalError.

    Only a missing or empty file, or an SQLite journal without events, is taken: never a
    directory, a device (/dev/null), another file's contents or another batch's journal.
    """
    try:
        exists, is_file = path.exists(), path.is_file()
        size = path.stat().st_size if is_file else 0
    except OSError as exc:  # a name too long for the file system, a path through a file
        raise JournalError(f"{path} cannot be a journal file ({exc.strerror})") from None
    if exists and not is_file:
        raise JournalError(f"{path} is not a regular file: a journal is a file of its own")
    if size > 0:
        try:
            # SQLite takes a file too short for its header (a byte or two) for an empty
            # database and would write over it: only a file that starts as SQLite is opened.
            with path.open("rb") as f:
                if f.read(len(_SQLITE_HEADER)) != _SQLITE_HEADER:
                    raise sqlite3.DatabaseError("not SQLite")
            holds_batch = _has_events(path)
        except OSError as exc:
            raise JournalError(f"{path} cannot be a journal file ({exc.strerror})") from None
        except sqlite3.DatabaseError:
            raise JournalError(
                f"{path} is not a journal (not SQLite); choose a new journal file, "
                "nothing there is overwritten"
            ) from None
        if holds_batch:
            raise JournalError(
                f"{path} already holds a batch; choose a new journal file "
                "(or use 'poc-twin resume' to continue that batch)"
            )
    return path


def _has_events(path: Path) -> bool:
    """Whether the journal at ``path`` holds events; JournalError if it is an SQLite file
    that is not a journal (its tables are someone else's)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
        if tables - {"events"}:
            raise JournalError(
                f"{path} is an SQLite database but not a journal (tables: "
                f"{', '.join(sorted(tables))}); choose a new journal file, nothing there is "
                "overwritten"
            )
        return bool(tables and db.execute("SELECT 1 FROM events LIMIT 1").fetchone())
    finally:
        db.close()


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    return db


Subscriber = Callable[[Event], None]


class HeadSigner(Protocol):
    """Signs a chain head for a checkpoint event (a site key, see :mod:`twin.signing`)."""

    @property
    def source(self) -> str:
        """The checkpoint event's source, e.g. ``site:<name>``."""
        ...

    def checkpoint(self, seq: int, head: str) -> dict[str, Any]:
        """The checkpoint event's data: which head, signed by whom, the signature."""
        ...


class _FromEnvironment:
    """Default signer: the site key named by ``POC_TWIN_SITE_KEY``, if any."""


FROM_ENVIRONMENT: Any = _FromEnvironment()


def _resolve_signer(signer: HeadSigner | _FromEnvironment | None) -> HeadSigner | None:
    if isinstance(signer, _FromEnvironment):
        from twin.signing import site_key_from_env

        return site_key_from_env()
    return signer


class Journal:
    """Appends events to one batch's journal file and tells subscribers."""

    def __init__(
        self,
        path: Path | str,
        batch_time: Callable[[], float],
        *,
        signer: HeadSigner | None = FROM_ENVIRONMENT,
        checkpoint_every: int = CHECKPOINT_EVERY,
    ) -> None:
        path = check_new_journal(Path(path))
        try:
            self._open(path, batch_time, _resolve_signer(signer), checkpoint_every)
        except (OSError, sqlite3.Error) as exc:
            raise JournalError(f"{path}: cannot be written as a journal ({exc})") from None

    def _open(
        self,
        path: Path,
        batch_time: Callable[[], float],
        signer: HeadSigner | None,
        checkpoint_every: int,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._start(_connect(path), path, batch_time, signer, checkpoint_every)

    def _start(
        self,
        db: sqlite3.Connection | None,
        path: Path | None,
        batch_time: Callable[[], float],
        signer: HeadSigner | None,
        checkpoint_every: int,
    ) -> None:
        self.signer = signer
        self.checkpoint_every = checkpoint_every
        self.path = path
        #: None for a journal kept in memory: its events live in its subscribers only.
        self._db = db
        if db is not None:
            db.executescript(_SCHEMA)
        self._batch_time = batch_time
        #: Whether events are hash-chained: on file, or where a site key signs the head.
        self._chained = db is not None or signer is not None
        self._seq = 0
        self._head = GENESIS if self._chained else ""
        self._in_tx = False
        self._subscribers: list[Subscriber] = []
        self._oldest_pending: float | None = None
        self._committed_wall = wall_monotonic()
        self._last_kind = ""
        #: Inside :meth:`together`: nothing is committed and no checkpoint signed until it ends.
        self._together = 0
        self._checkpoint_due = False
        #: Set by the first write that failed: nothing more is written, every append raises.
        self.failure: JournalWriteFailed | None = None
        self._failure_listeners: list[Callable[[JournalWriteFailed], None]] = []

    @classmethod
    def in_memory(
        cls, batch_time: Callable[[], float], *, signer: HeadSigner | None = None
    ) -> Journal:
        """A journal kept in this process's memory: the same events and sequence, stored
        nowhere. For ensemble batches, whose events their subscribers keep; ``path`` is
        None, so such a batch has no command address (nobody can reach it).

        No database at all, not even SQLite's memory one: nothing ever read its rows back,
        and its inserts and commits cost an ensemble batch a few per cent (issue 17). No
        hash chain either (``prev_hash`` and ``hash`` are empty) unless a site key signs its
        head: a chain proves a kept record was not changed, and nothing here is kept; the
        second canonical encoding and SHA-256 of every event cost an ensemble batch ~4 %.
        Each event's data is still checked (:func:`_plain`, else encoded), so what a file
        journal refuses (NaN, a value JSON cannot hold) is refused here too."""
        journal = cls.__new__(cls)
        journal._start(None, None, batch_time, signer, CHECKPOINT_EVERY)
        return journal

    @classmethod
    def reopen(
        cls,
        path: Path | str,
        batch_time: Callable[[], float],
        *,
        signer: HeadSigner | None = FROM_ENVIRONMENT,
        checkpoint_every: int = CHECKPOINT_EVERY,
    ) -> Journal:
        """Continue an interrupted batch's journal from its last committed event.

        The journal must verify: a batch is never continued on a chain that was
        tampered with. New events link to the recorded head.
        """
        path = Path(path)
        require_intact(path, "a batch is not continued on a broken journal")
        journal = cls.__new__(cls)
        journal._open(path, batch_time, _resolve_signer(signer), checkpoint_every)
        assert journal._db is not None
        row = journal._db.execute("SELECT seq, hash, kind FROM events ORDER BY seq DESC LIMIT 1")
        last = row.fetchone()
        if last is not None:
            journal._seq, journal._head, journal._last_kind = last
        return journal

    @property
    def head(self) -> str:
        """Hash of the last event: what a site signs and anchors."""
        return self._head

    @property
    def last_seq(self) -> int:
        return self._seq

    def as_written(self, event: Event) -> Event:
        """``event`` as the file holds it: itself (a resume's replay of the record hands back
        events it derived past the record's end before writing them: they get their seq
        then)."""
        return event

    def subscribe(self, subscriber: Subscriber) -> None:
        """Hear every event after it is in the journal."""
        self._subscribers.append(subscriber)

    def append(
        self,
        kind: str,
        source: str,
        data: dict[str, Any],
        *,
        durable: bool = True,
        at: float | None = None,
    ) -> Event:
        """Add one event; ``durable`` commits it before returning (do so for anything acted on).

        ``at`` stamps a batch time other than now: only for events a resumed batch
        re-derived for a moment before its interruption.
        """
        if self.failure is not None:
            raise self.failure.again()
        seq = self._seq + 1
        batch_time = self._batch_time() if at is None else at
        wall_time = wall_stamp()
        db = self._db
        # Writing the text also refuses what no journal can hold (NaN, a set). In memory
        # without a chain it is kept nowhere: surely writable data is not written out.
        unwritten = db is None and not self._chained and _plain(data)
        payload = "" if unwritten else _canonical(data)
        if self._chained:
            digest = event_hash(self._head, seq, batch_time, wall_time, kind, source, payload)
        else:
            digest = ""
        if db is not None:
            try:
                if not self._in_tx:
                    db.execute("BEGIN")
                    self._in_tx = True
                db.execute(
                    "INSERT INTO events VALUES (?,?,?,?,?,?,?,?)",
                    (seq, batch_time, wall_time, kind, source, payload, self._head, digest),
                )
            except (sqlite3.Error, OSError) as exc:
                raise self._failed(exc, seq) from exc
        event = Event(seq, batch_time, wall_time, kind, source, data, self._head, digest)
        self._seq, self._head = seq, digest
        if self._oldest_pending is None:
            self._oldest_pending = batch_time
        if not self._together and (durable or self._readings_due(batch_time)):
            self.commit()
        self._last_kind = kind
        for subscriber in self._subscribers:
            subscriber(event)
        if kind != CHECKPOINT and self.signer is not None and seq % self.checkpoint_every == 0:
            if self._together:
                self._checkpoint_due = True  # signed once the events together are in
            else:
                self.sign_head()
        return event

    def _readings_due(self, batch_time: float) -> bool:
        """Whether readings nothing acted on are due for their commit: 600 s of batch time
        old, and the last commit half a second of wall time old. A kill happens at an
        instant of the wall, so what it can take is bounded in wall time; on a twin running
        ~45,000x, 600 s of batch time is 13 ms of wall, and committing that often was 1,120
        fsyncs (~0.6-1 s) of a 10-day batch that protected nothing a wall-time bound does
        not. On the wall (a bench, a batch waiting on a person) nothing changes: every scan
        commits what it took (:meth:`commit_lagging`)."""
        assert self._oldest_pending is not None
        return (
            batch_time - self._oldest_pending >= READING_COMMIT_S
            and wall_monotonic() - self._committed_wall >= READING_COMMIT_WALL_S
        )

    @contextlib.contextmanager
    def together(self) -> Iterator[None]:
        """Events appended inside reach the file in one commit when it ends (an act and its
        signature: no kill leaves one without the other). Nothing in between commits them,
        neither a durable append, nor the 600 s rule, nor a checkpoint (signed after)."""
        self._together += 1
        try:
            yield
        except BaseException as exc:
            # Something between the act and its signature failed (a subscriber, an
            # interrupt): the act must not reach the file alone. A file journal takes it as
            # a failed write (rolled back, nothing more written: the batch is stopped and
            # ``resume`` goes on from the last commit).
            self._together -= 1
            if self.failure is None and self._db is not None and self._in_tx:
                raise self._failed(exc, self._seq) from exc
            raise
        else:
            self._together -= 1
            if not self._together and self.failure is None:
                self.commit()
                if self._checkpoint_due:
                    self._checkpoint_due = False
                    self.sign_head()

    def sign_head(self) -> Event | None:
        """Append a signed checkpoint over the current head (committed); None without a key."""
        if self.signer is None or self._seq == 0 or self._last_kind == CHECKPOINT:
            return None
        data = self.signer.checkpoint(self._seq, self._head)
        return self.append(CHECKPOINT, self.signer.source, data, durable=True)

    def commit(self) -> None:
        """Make every appended event durable (fsync through SQLite's WAL)."""
        if self.failure is not None:
            raise self.failure.again()
        if self._in_tx:
            assert self._db is not None  # a transaction is only ever begun on a database
            try:
                self._db.execute("COMMIT")
            except (sqlite3.Error, OSError) as exc:
                raise self._failed(exc, self._seq) from exc
            self._in_tx = False
        self._oldest_pending = None
        self._committed_wall = wall_monotonic()

    def commit_lagging(self, wall_s: float = READING_COMMIT_WALL_S) -> None:
        """Commit what is pending if the last commit is ``wall_s`` of wall time old.

        The control modules call it after each scan: running fast on the twin that is about
        twice a second of wall time (a few dozen commits a batch); waiting on a person, or
        on a bench whose clock is the wall's, scans come a poll period (at least a second)
        apart, and every one commits.
        """
        if self._together:
            return  # an act and its signature go in together
        if self._oldest_pending is not None and wall_monotonic() - self._committed_wall >= wall_s:
            self.commit()

    def on_failure(self, listener: Callable[[JournalWriteFailed], None]) -> None:
        """Be told (once) when a write fails: whoever runs the batch must stop it then."""
        self._failure_listeners.append(listener)

    def _failed(self, exc: BaseException, seq: int) -> JournalWriteFailed:
        """Latch the first failed write: what was committed stays, nothing more is written.

        A batch must not go on unrecorded, and a journal that failed once (a full disk, an
        I/O error, a file removed under it) is not trusted to take the next event: events
        after a gap would chain on as if nothing were missing."""
        assert self.path is not None
        # event 1 is batch_started: a journal without it holds no batch to resume
        failure = JournalWriteFailed(self.path, exc, seq, started=seq > 1)
        self.failure = failure
        if self._in_tx and self._db is not None:
            with contextlib.suppress(sqlite3.Error, OSError):
                self._db.execute("ROLLBACK")
        self._in_tx = False
        for listener in self._failure_listeners:
            listener(failure)
        return failure

    def close(self) -> None:
        """Sign the final head (when a site key is set), commit and close."""
        if self.failure is None:
            self.sign_head()
            self.commit()
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()


_COLUMNS = "seq, batch_time, wall_time, kind, source, data, prev_hash, hash"
_TEXT_FIELDS = ("wall_time", "kind", "source", "data", "prev_hash", "hash")
#: Data text that may hold a non-finite number (NaN, Infinity, 1e999): parsed strictly.
_MAYBE_NONFINITE = re.compile(r"NaN|Infinity|[0-9][eE][+-]?[0-9]{3}")
#: Data text with a \\uD800-\\uDFFF escape: must be a surrogate pair (one character).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _rows(
    path: Path, order: str, after: int | None = None, *, rowid: bool = False
) -> Iterator[tuple[tuple[Any, ...], bool]]:
    """Every row of the events table in ``order``, streamed (a journal may hold millions),
    each with whether its text may hold bytes that are not UTF-8; JournalError if the table
    cannot be read.

    Text that is not UTF-8 (no writer stores it) stops SQLite's decoding: the query is then
    run again with bad bytes kept as surrogates, from the row it stopped at, so the row
    fails its checks and is named instead of failing the read.
    """
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    where = "" if after is None else f" WHERE seq > {int(after)}"
    columns = f"{_COLUMNS}, rowid" if rowid else _COLUMNS  # rowid last: where it is stored
    query = f"SELECT {columns} FROM events{where} ORDER BY {order}"
    done = 0
    try:
        try:
            for row in db.execute(query):
                done += 1
                yield row, False
            return
        except sqlite3.OperationalError as exc:
            if "decode" not in str(exc):
                raise
        db.text_factory = lambda raw: raw.decode("utf-8", "surrogateescape")
        for index, row in enumerate(db.execute(query)):
            if index >= done:
                yield row, True
    except (sqlite3.DatabaseError, MemoryError) as exc:
        raise JournalError(f"{path}: not a readable journal ({exc})") from None
    finally:
        db.close()


def _not_utf8(row: tuple[Any, ...]) -> str:
    """The first text field of ``row`` that holds bytes which are not UTF-8, "" if none."""
    for name, value in zip(_TEXT_FIELDS, row[2:], strict=True):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"{name} is not UTF-8 text"
    return ""


def _malformed(row: tuple[Any, ...]) -> str:
    """What is wrong with a row's types, "" if nothing: what no journal writer stores."""
    seq, batch_time = row[0], row[1]
    if type(seq) is not int:
        return f"seq {repr(seq)[:40]} is not an integer"
    if type(batch_time) not in (int, float) or not math.isfinite(batch_time):
        return f"batch_time {repr(batch_time)[:40]} is not a finite number"
    for name, value in zip(_TEXT_FIELDS, row[2:], strict=True):
        if not isinstance(value, str):
            return f"{name} is {type(value).__name__}, not text"
    return ""


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def _not_a_number(text: str) -> Any:
    raise ValueError(f"{text} is not a number")


def _data(text: str) -> dict[str, Any]:
    """An event's data: a JSON object of finite numbers and text (as the journal writes it)."""
    if _MAYBE_NONFINITE.search(text):
        value = json.loads(text, parse_float=_finite, parse_constant=_not_a_number)
    else:
        value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError(f"data is a JSON {type(value).__name__}, not an object")
    if _SURROGATE_ESCAPE.search(text):  # a pair is a character; a lone one is no text
        json.dumps(value, ensure_ascii=False).encode("utf-8")  # UnicodeEncodeError names it
    return value


def read_events(path: Path | str, after: int | None = None) -> Iterator[Event]:
    """Every event in sequence order, or those after seq ``after`` (a reader following a
    running batch); read-only and safe while a batch is writing.

    JournalError, naming the event, for a row no journal writer stores: a field of the
    wrong type, data that is not a JSON object of finite numbers, or nested too deep.
    """
    path = _journal_file(Path(path))
    for row, lossy in _rows(path, "seq", after):
        seq, bt, wt, kind, source, data, prev, digest = row
        problem = _malformed(row) or (_not_utf8(row) if lossy else "")
        if not problem:
            try:
                yield Event(seq, bt, wt, kind, source, _data(data), prev, digest)
                continue
            except (ValueError, RecursionError) as exc:
                problem = f"data is not a JSON object ({str(exc)[:200]})"
        where = f"event {seq}" if type(seq) is int else "an event"
        raise JournalError(f"{path}: not a readable journal ({where}: {problem})")


def require_intact(path: Path | str, consequence: str) -> VerifyResult:
    """Verify, or raise JournalError naming the first bad event and what is refused."""
    result = verify(path)
    if not result.ok:
        raise JournalError(
            f"{path} does not verify (event {result.first_bad_seq}: {result.reason}); "
            + consequence
        )
    return result


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of checking a journal's chain."""

    ok: bool
    events: int
    head: str
    first_bad_seq: int | None = None
    reason: str = ""


def verify(path: Path | str) -> VerifyResult:
    """Recompute the chain; name the first event that was edited, removed, inserted or moved.

    One order: events are read by ``seq``, which must run 1, 2, 3... without a gap and
    be the order the rows are stored in (a table rebuilt in another order is named, so no
    reader of any order sees a different record). A journal without events is no record.
    """
    prev = GENESIS
    expected_seq = 1
    count = 0
    path = _journal_file(Path(path))
    for stored, _ in _rows(path, "seq", rowid=True):  # text that is not UTF-8 fails its hash
        row, position = stored[:-1], stored[-1]
        seq, bt, wt, kind, source, data, prev_hash, digest = row
        problem = _malformed(row)
        if problem:
            return VerifyResult(False, count, prev, expected_seq, problem)
        if seq == expected_seq and position != seq:
            why = f"is stored as row {position}, out of sequence order (rows rebuilt or moved)"
            return VerifyResult(False, count, prev, seq, why)
        if seq != expected_seq:
            why = (
                "is missing"
                if seq > expected_seq
                else f"is missing: seq {seq} found instead (duplicated or out of order)"
            )
            return VerifyResult(False, count, prev, expected_seq, f"event {expected_seq} {why}")
        if prev_hash != prev:
            return VerifyResult(False, count, prev, seq, "does not link to the event before it")
        if event_hash(prev, seq, bt, wt, kind, source, data) != digest:
            return VerifyResult(False, count, prev, seq, "content does not match its hash")
        prev = digest
        expected_seq += 1
        count += 1
    if count == 0:
        return VerifyResult(False, 0, prev, 1, "event 1 is missing: the journal holds no events")
    return VerifyResult(True, count, prev)
