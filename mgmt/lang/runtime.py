"""The function graph: a checked program run as a reactive graph of cells.

A cell is a binding (`$x = ...`), a statement (resource, edge, if), the root (the whole
program's resources and edges), or a stream instance (one per call site of a function that
changes over time, and per set of its key arguments). Cells record which cells they read
while computing (dependencies are dynamic: the branch an `if` did not take is not evaluated,
and a stream called only from there is stopped).

When a stream emits, its dependents are marked dirty; the next pass pulls the root. A dirty
cell first brings its dependencies up to date, in the order it read them, and recomputes only
if one of them really changed (early cut-off: a value recomputed equal stops the wave). So an
input event recomputes only what is downstream of it, and an unchanged output is not re-sent.

A function's run-time error (a missing file, a bad number) is the value of its cell and of
everything that depends on it: the root then has no graph, and the agent keeps the last good
one. When the input recovers, so does the graph; streams keep running meanwhile (a stream is
stopped only after a pass without errors no longer reads it), so their state survives.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import operator
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from engine import hangfs
from engine.limits import max_resources, too_many
from engine.tasks import TaskSet
from mgmt.lang import ast
from mgmt.lang.checker import Checked
from mgmt.lang.clock import Clock, LoopClock
from mgmt.lang.errors import NOWHERE, FuncError, GraphLimitError, LangError, NotReady, Pos
from mgmt.lang.funcs import Builtin, Context
from mgmt.lang.streams import Readers, Stream
from mgmt.lang.values import (
    INT_MIN,
    UNBOUNDED,
    Closure,
    FrozenDict,
    Struct,
    budget,
    exceeded,
    int64,
    sized_str,
    sort_key,
    spend,
)

log = logging.getLogger("lang")

EMPTY = FrozenDict()
_RECURSION = 20_000  # deep chains of bindings recurse (a cell pulls the cells it reads)


class ResSpec(NamedTuple):
    """One resource the program declares (params as language values)."""

    kind: str
    name: str
    params: tuple[tuple[str, Any], ...]
    meta: tuple[tuple[str, Any], ...]
    pos: Pos


class CollectSpec(NamedTuple):
    """A collect statement: exported resources of a kind, by name (and host: None = any)."""

    kind: str
    targets: tuple[tuple[str, str | None], ...]
    params: tuple[tuple[str, Any], ...]
    meta: tuple[tuple[str, Any], ...]
    pos: Pos


class EdgeSpec(NamedTuple):
    src: tuple[str, str]
    dst: tuple[str, str]
    notify: bool
    sendrecv: tuple[tuple[str, str], ...]
    pos: Pos


class _Iteration(NamedTuple):
    """One iteration of a top-level loop: what it declared, the cells it read, and when."""

    declared: tuple[Any, ...]
    deps: tuple[Cell, ...]
    at: int  # the rev it was evaluated at


class _Loop:
    """A top-level loop's last pass: its list, each element's iteration in the list's order,
    where the declarations of each start in its output, and which elements read each cell."""

    def __init__(self, value: Any, iterations: dict[tuple[Any, Any], _Iteration], at: int) -> None:
        self.value = value
        self.iterations = iterations
        self.at = at  # every iteration was valid at this rev
        self.readers: dict[Cell, set[tuple[Any, Any]]] = {}
        self.starts: dict[tuple[Any, Any], int] = {}
        out: list[Any] = []
        for key, done in iterations.items():
            self.starts[key] = len(out)
            out += done.declared
            for dep in done.deps:
                self.readers.setdefault(dep, set()).add(key)
        self.out = tuple(out)

    def stale(self, refresh: Callable[[Cell], None]) -> list[tuple[Any, Any]]:
        """The elements that read a cell changed (or failed) since, in the list's order."""
        found: set[tuple[Any, Any]] = set()
        for dep, keys in self.readers.items():
            refresh(dep)
            if dep.changed_at > self.at or dep.error is not None:
                found |= keys
        return sorted(found, key=self.starts.__getitem__)

    def replace(self, key: tuple[Any, Any], done: _Iteration) -> bool:
        """`done` is the element's iteration now; False if its output changed size (the
        loop's state must then be made again)."""
        old = self.iterations[key]
        self.iterations[key] = done
        for dep in old.deps:
            keys = self.readers[dep]
            keys.discard(key)
            if not keys:
                del self.readers[dep]
        for dep in done.deps:
            self.readers.setdefault(dep, set()).add(key)
        if len(done.declared) != len(old.declared):
            return False
        start = self.starts[key]
        self.out = (*self.out[:start], *done.declared, *self.out[start + len(old.declared) :])
        return True


class Cell:
    """A node of the function graph."""

    __slots__ = (
        "changed_at",
        "compute",
        "computed",
        "dependents",
        "deps",
        "dirty",
        "error",
        "label",
        "value",
        "verified_at",
    )

    def __init__(self, label: str, compute: Callable[[], Any] | None = None) -> None:
        self.label = label
        self.compute = compute  # None: a stream's cell, set by emit()
        self.value: Any = None
        self.error: LangError | None = None
        self.computed = False
        self.dirty = False
        self.changed_at = -1
        self.verified_at = -1
        self.deps: list[Cell] = []
        self.dependents: set[Cell] = set()

    def __repr__(self) -> str:
        return f"<Cell {self.label}>"


class Runtime:
    """Runs one checked program; `evaluate()` brings the root up to date."""

    def __init__(
        self,
        checked: Checked,
        *,
        ctx: Context,
        clock: Clock | None = None,
        base_dir: Path | None = None,
        notify: Callable[[], None] = lambda: None,
    ) -> None:
        self.checked = checked
        self.ctx = ctx
        self.world = ctx.world  # the streams' Host: world.* functions wait for it
        self.local = ctx.local  # the streams' Host: value.* functions read it
        self.clock: Clock = clock or LoopClock()
        self.base_dir = base_dir or Path.cwd()
        self.notify = notify
        self.rev = 0
        self.pending = True  # something changed since the last evaluate()
        self._budget = UNBOUNDED  # what the running pass may still spend (values.budget)
        self.recomputed = 0  # cells recomputed so far (tests and benchmarks read it)
        self.iterations = 0  # loop bodies evaluated so far (the same)
        self.revisited = 0  # kept loop iterations checked one by one so far (the same)
        self._stack: list[list[Cell]] = []
        self._in_pass = False
        self._reshaped = False  # some cell's dependencies changed: collect garbage
        self._kept: set[Cell] = set()  # the stream cells the last full pass read
        self._last_root = -2
        self.streams: dict[Any, tuple[Stream, Cell]] = {}
        # Each top-level loop's iterations, by element (Runtime._for).
        self._iterations: dict[int, dict[tuple[Any, Any], _Iteration]] = {}
        self._loops: dict[int, _Loop] = {}  # each top-level loop's last pass, by id(loop)
        self._stream_cells: dict[int, Cell] = {}
        self._tasks = TaskSet("lang", log)
        self._closing: list[Stream] = []
        self._readers = Readers()  # the threads its files are read in (os.readfile...)
        self._bind_cells: dict[int, Cell] = {}
        self._call_names: dict[int, frozenset[str]] = {}  # see _env_names
        self._cells: list[Cell] = []  # every cell but the streams' (for garbage collection)
        for b in checked.bindings:
            if isinstance(b, ast.Bind) and not b.in_loop:
                self._bind_cells[id(b)] = self._cell(f"${b.name}", self._binder(b))
        self.root = Cell("program", self._fragments(checked.program.body, "program"))
        self._eval: dict[type, Callable[[Any, FrozenDict], Any]] = {
            ast.Lit: lambda e, env: e.value,
            ast.Interp: self._interp,
            ast.Var: self._var,
            ast.Resolved: lambda e, env: self.eval(e.inner, env),
            ast.Call: self._call,
            ast.Lambda: lambda e, env: Closure(e, env, self._apply),
            ast.If: self._if,
            ast.ListLit: lambda e, env: tuple(self._all(e.items, env)),
            ast.MapLit: lambda e, env: FrozenDict(
                (self.eval(k, env), self.eval(v, env)) for k, v in e.pairs
            ),
            ast.StructLit: lambda e, env: Struct(
                zip([n for n, _ in e.fields], self._all([v for _, v in e.fields], env), strict=True)
            ),
            ast.Field: lambda e, env: self.eval(e.obj, env)[e.name],
            ast.Index: self._index,
            ast.BinOp: self._binop,
            ast.UnOp: self._unop,
            ast.Except: self._except,
        }

    # the pass -------------------------------------------------------------------------------

    def evaluate(self) -> tuple[bool, Any, LangError | None]:
        """Bring the root up to date: (changed since the last call, value, error)."""
        self.pending = False
        self._in_pass = True
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(max(limit, _RECURSION))
        try:
            with budget() as self._budget:
                self._refresh(self.root)
        finally:
            sys.setrecursionlimit(limit)
            self._budget = UNBOUNDED
            self._in_pass = False
        # A cell that failed read only part of what it reads when it succeeds: a full collection
        # now would stop streams still in use (a debounce would forget its state at a glitch of
        # its input). Errors propagate to the root, so a root without one means a full pass;
        # after a failed one, only streams neither read now nor by the last full pass stop.
        if self._reshaped:
            if self.root.error is None:
                self._collect_garbage()
            else:
                self._stop_streams(self._live() | self._kept)
        changed = self.root.changed_at != self._last_root
        self._last_root = self.root.changed_at
        return changed, self.root.value, self.root.error

    def get(self, cell: Cell) -> Any:
        """The up-to-date value of a cell, recorded as a dependency of the computing cell."""
        self._refresh(cell)
        if self._stack:
            self._stack[-1].append(cell)
        if cell.error is not None:
            raise cell.error
        return cell.value

    def _refresh(self, cell: Cell) -> None:
        if cell.compute is None or (cell.computed and not cell.dirty):
            return
        if cell.computed:
            for dep in cell.deps:
                self._refresh(dep)
                if dep.changed_at > cell.verified_at:
                    break
            else:
                cell.dirty = False
                cell.verified_at = self.rev
                return
        self._recompute(cell)

    def _recompute(self, cell: Cell) -> None:
        assert cell.compute is not None
        deps: list[Cell] = []
        self._stack.append(deps)
        error: LangError | None = None
        value: Any = None
        try:
            value = cell.compute()
        except LangError as err:
            error = err
        except RecursionError:
            error = FuncError(f"{cell.label}: too deeply nested")
        except Exception as err:  # a bug in a function must not stop the agent
            log.exception("%s: internal error", cell.label)
            error = FuncError(f"{cell.label}: internal error: {err!r}")
        finally:
            self._stack.pop()
        self.recomputed += 1
        unique = list(dict.fromkeys(deps))
        if unique != cell.deps:
            for old in cell.deps:
                old.dependents.discard(cell)
            for new in unique:
                new.dependents.add(cell)
            cell.deps = unique
            self._reshaped = True
        if not cell.computed or not _same(cell.value, cell.error, value, error):
            cell.changed_at = self.rev
        cell.value, cell.error = value, error
        cell.computed = True
        cell.dirty = False
        cell.verified_at = self.rev

    def _live(self) -> set[Cell]:
        """Every cell the root reads, as of its last computation."""
        live: set[Cell] = set()
        todo = [self.root]
        while todo:
            cell = todo.pop()
            if cell not in live:
                live.add(cell)
                todo.extend(cell.deps)
        return live

    def _collect_garbage(self) -> None:
        """Forget the dependencies of cells the root no longer reads; stop unused streams."""
        self._reshaped = False
        live = self._live()
        for cell in self._cells:
            if cell not in live and cell.computed:
                for dep in cell.deps:
                    dep.dependents.discard(cell)
                cell.deps = []
                cell.computed = False
        self._stop_streams(live)
        self._kept = {cell for _, cell in self.streams.values()}

    def _stop_streams(self, keep: set[Cell]) -> None:
        for key, (stream, cell) in list(self.streams.items()):
            if cell not in keep:
                self._iterations.clear()  # none may keep reading a stopped stream's last value
                self._loops.clear()
                del self.streams[key]
                del self._stream_cells[id(stream)]
                stream.close()
                self._closing.append(stream)

    # streams --------------------------------------------------------------------------------

    @property
    def waiting(self) -> bool:
        """Some running stream has produced no value yet (a world.* function, say)."""
        return any(isinstance(cell.error, NotReady) for _, cell in self.streams.values())

    def waited_for(self) -> list[str]:
        """The running streams that have produced no value yet, as `name(args) at FILE:LINE:COL`
        (an argument that is a path on a file system that can stop answering says so)."""
        return [
            f"{stream.name}({', '.join(_arg(arg) for arg in stream.args)}) at {stream.pos}"
            for stream, cell in self.streams.values()
            if isinstance(cell.error, NotReady)
        ]

    def emit(self, stream: Stream, value: Any, error: FuncError | None = None) -> None:
        """A stream has a new value (or error); called by the streams."""
        cell = self._stream_cells.get(id(stream))
        if cell is None:
            return  # closed
        if error is not None and error.pos is None and stream.pos is not NOWHERE:
            error = FuncError(error.message, stream.pos)  # where the call is: FILE:LINE:COL
        if cell.computed and _same(cell.value, cell.error, value, error):
            return
        cell.value, cell.error, cell.computed = value, error, True
        if self._in_pass:  # its caller is computing right now and reads it next
            cell.changed_at = self.rev
            return
        self.rev += 1
        cell.changed_at = self.rev
        todo = list(cell.dependents)
        while todo:
            dependent = todo.pop()
            if not dependent.dirty:
                dependent.dirty = True
                todo.extend(dependent.dependents)
        if not self.pending:
            self.pending = True
            self.notify()

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        return self._tasks.spawn(coro, name)

    async def reap(self) -> None:
        """Wait for the tasks of stopped streams to end."""
        closing, self._closing = self._closing, []
        for stream in closing:
            await stream.wait_closed()

    async def close(self) -> None:
        """Stop every stream and task."""
        for stream, _cell in self.streams.values():
            stream.close()
            self._closing.append(stream)
        self.streams.clear()
        self._stream_cells.clear()
        await self._tasks.close()
        await self.reap()
        await self._readers.close()  # a read cancelled with its stream: ended, not left

    @property
    def readers(self) -> Readers:
        return self._readers

    def deploy_dir(self, file: str) -> Path:
        """The directory deploy.* paths of code in `file` start at (Checked.deploy_dirs)."""
        return self.checked.deploy_dirs.get(file, self.base_dir)

    def _stream(self, call: ast.Call, builtin: Builtin, args: list[Any], env: FrozenDict) -> Any:
        cls = builtin.stream
        assert cls is not None
        if cls.RUNS_COMMANDS and not self.ctx.commands:
            raise NotReady(f"{call.pos}: {builtin.name}: no command is run by a check")
        picked = tuple(args) if cls.KEY_ARGS is None else tuple(args[i] for i in cls.KEY_ARGS)
        # One instance per call site and per value of the loop or lambda names its arguments
        # read (not of every name around: reordering a loop's list keeps its streams).
        used = FrozenDict({k: env[k] for k in self._env_names(call) if k in env})
        key = (id(call), used, picked)
        entry = self.streams.get(key)
        if entry is None:
            stream = cls(self, tuple(args), builtin.name)
            stream.result_type = call.type
            stream.pos = call.pos
            cell = Cell(f"{builtin.name} at {call.pos}")
            cell.error = NotReady(f"{call.pos}: {builtin.name} has no value yet")
            cell.computed = True
            self.streams[key] = (stream, cell)
            self._stream_cells[id(stream)] = cell
            self._reshaped = True
            stream.start()
        else:
            stream, cell = entry
        stream.update(tuple(args))
        return self.get(cell)

    # statements -----------------------------------------------------------------------------

    def _cell(self, label: str, compute: Callable[[], Any]) -> Cell:
        cell = Cell(label, compute)
        self._cells.append(cell)
        return cell

    def _binder(self, b: ast.Bind) -> Callable[[], Any]:
        return lambda: self.eval(b.expr, EMPTY)

    def _fragments(self, stmts: list[ast.Stmt], label: str) -> Callable[[], Any]:
        """A compute returning every resource and edge the statements declare."""
        cells = [c for c in (self._stmt_cell(s) for s in stmts) if c is not None]

        def compute() -> tuple[Any, ...]:
            out: list[Any] = []
            for cell in cells:
                out.extend(self.get(cell))
            return tuple(out)

        return compute

    def _stmt_cell(self, stmt: ast.Stmt) -> Cell | None:
        if isinstance(stmt, ast.Resource):
            return self._cell(f"{stmt.kind} at {stmt.pos}", lambda: self._resource(stmt))
        if isinstance(stmt, ast.Edge):
            return self._cell(f"edge at {stmt.pos}", lambda: self._edge(stmt))
        if isinstance(stmt, ast.Include):
            return self._cell(
                f"include {stmt.name} at {stmt.pos}", self._fragments(stmt.expanded, stmt.name)
            )
        if isinstance(stmt, ast.IfStmt):
            then = self._cell(f"if at {stmt.pos}", self._fragments(stmt.then, "then"))
            other = self._cell(f"else at {stmt.pos}", self._fragments(stmt.other, "else"))

            def compute() -> Any:
                return self.get(then if self.eval(stmt.cond, EMPTY) else other)

            return self._cell(f"if at {stmt.pos}", compute)
        if isinstance(stmt, ast.For):
            return self._cell(f"for at {stmt.pos}", lambda: self._for(stmt, EMPTY))
        if isinstance(stmt, ast.Panic):
            return self._cell(f"panic at {stmt.pos}", lambda: self._panic(stmt, EMPTY))
        return None

    def _panic(self, stmt: ast.Panic, env: FrozenDict) -> tuple[Any, ...]:
        value = self.eval(stmt.expr, env)
        if value:
            raise FuncError(f"panic: {value}" if isinstance(value, str) else "panic", stmt.pos)
        return ()

    def _for(self, loop: ast.For, env: FrozenDict) -> tuple[Any, ...]:
        """The body's declarations once per element, with the loop's names bound (in env).

        A loop at the top (not inside another loop or an included class's loop) keeps what
        each iteration declared and the cells it read, by the element (index and value, or key
        and value): an iteration whose element is the same and none of whose cells changed is
        not evaluated again. So a change that one element's body reads re-evaluates that body
        only (the rest costs a lookup each)."""
        value = self.eval(loop.expr, env)
        pairs = (
            sorted(value.items(), key=lambda kv: sort_key(kv[0])) if loop.kv else enumerate(value)
        )
        out: list[Any] = []
        bound = 2 * max_resources()  # resources and edges: a runaway loop stops at it
        if env:  # nested: evaluated again with its enclosing iteration
            spend(len(value), loop.pos)  # nested loops multiply (values.budget: --max-steps)
            for first, second in pairs:
                inner = FrozenDict({**env, loop.first.env_key: first, loop.second.env_key: second})
                out += self._declare(loop.body, inner)
                if len(out) > bound:
                    raise _runaway(loop.pos)
            return tuple(out)
        reads = self._stack[-1] if self._stack else []
        last = self._loops.pop(id(loop), None)
        if last is not None and (value is last.value or value == last.value):
            return self._for_again(loop, last, reads)
        old = self._iterations.get(id(loop), {})
        new: dict[tuple[Any, Any], _Iteration] = {}
        try:
            for first, second in pairs:
                done = old.get((first, second))
                if done is None or not self._still_valid(done):
                    done = self._iteration(loop, first, second, reads)
                else:
                    reads += done.deps
                    self.revisited += 1
                new[first, second] = done
                out += done.declared
                if len(out) > bound:
                    raise _runaway(loop.pos)
        except LangError:
            self._iterations[id(loop)] = {**old, **new}  # those that did not fail are kept
            raise
        self._iterations[id(loop)] = new
        state = self._loops[id(loop)] = _Loop(value, new, self.rev)
        return state.out

    def _for_again(self, loop: ast.For, last: _Loop, reads: list[Cell]) -> tuple[Any, ...]:
        """A top-level loop over the same list as last time: only the elements that read a
        cell that changed are evaluated again, and their declarations replaced in the last
        output; the others cost nothing (per change, not per element). After an error, the
        next pass goes through every element (_for)."""
        resized = False
        try:
            for first, second in last.stale(self._refresh):
                done = self._iteration(loop, first, second, reads)
                resized = not last.replace((first, second), done) or resized
        except LangError:
            self._iterations[id(loop)] = last.iterations
            raise
        reads.extend(last.readers)
        if resized:
            last = _Loop(last.value, last.iterations, self.rev)
        last.at = self.rev
        self._loops[id(loop)] = last
        return last.out

    def _iteration(self, loop: ast.For, first: Any, second: Any, reads: list[Cell]) -> _Iteration:
        """One top-level loop iteration evaluated: what it declares and the cells it read (also
        added to `reads`, the loop's cell's, even when it fails: they make it recover)."""
        self.iterations += 1
        spent = self._budget
        spent.left -= 1
        if spent.left < 0:
            raise exceeded(loop.pos)
        inner = FrozenDict({loop.first.env_key: first, loop.second.env_key: second})
        deps: list[Cell] = []
        self._stack.append(deps)
        try:
            declared = self._declare(loop.body, inner)
        finally:
            self._stack.pop()
            reads += deps
        return _Iteration(tuple(declared), tuple(dict.fromkeys(deps)), self.rev)

    def _still_valid(self, done: _Iteration) -> bool:
        """No cell the iteration read changed since (each brought up to date first)."""
        for dep in done.deps:
            self._refresh(dep)
            if dep.changed_at > done.at or dep.error is not None:
                return False
        return True

    def _declare(self, stmts: list[ast.Stmt], env: FrozenDict) -> list[Any]:
        """What statements inside a loop declare (the checker allows only these kinds)."""
        out: list[Any] = []
        for stmt in stmts:
            if isinstance(stmt, ast.Resource):
                out += self._resource(stmt, env)
            elif isinstance(stmt, ast.Edge):
                out += self._edge(stmt, env)
            elif isinstance(stmt, ast.IfStmt):
                out += self._declare(stmt.then if self.eval(stmt.cond, env) else stmt.other, env)
            elif isinstance(stmt, ast.For):
                out += self._for(stmt, env)
            elif isinstance(stmt, ast.Panic):
                out += self._panic(stmt, env)
            elif isinstance(stmt, ast.Include):  # its bindings are per element (in_loop)
                out += self._declare(stmt.expanded, env)
        return out

    def _names(self, expr: ast.Expr, env: FrozenDict) -> tuple[str, ...]:
        value = self.eval(expr, env)
        return (value,) if isinstance(value, str) else tuple(value)

    def _collected(self, expr: ast.Expr, env: FrozenDict) -> tuple[tuple[str, str | None], ...]:
        """What a collect statement names: a name, names, or struct{name; host} values."""
        value = self.eval(expr, env)
        named = (value,) if isinstance(value, str) else value
        return tuple((t, None) if isinstance(t, str) else (t["name"], t["host"]) for t in named)

    def _resource(self, stmt: ast.Resource, env: FrozenDict = EMPTY) -> tuple[Any, ...]:
        params = self._fields(stmt.params, env)
        meta = self._fields(stmt.metas, env)
        if stmt.collect:
            collected = self._collected(stmt.name, env)
            return (CollectSpec(stmt.kind, collected, params, meta, stmt.pos),)
        names = self._names(stmt.name, env)
        if (refused := too_many(len(names))) is not None:
            raise GraphLimitError(f"the resource names {refused}", stmt.pos)
        out: list[Any] = [ResSpec(stmt.kind, n, params, meta, stmt.pos) for n in names]
        for edge in stmt.edges:
            if edge.cond is not None and not self.eval(edge.cond, env):
                continue
            targets = self._names(edge.target.name, env)
            if (refused := too_many(len(names) * len(targets), "edges")) is not None:
                raise GraphLimitError(f"the edge makes {refused}", edge.pos)
            for name in names:
                me = (stmt.kind, name)
                for target in targets:
                    other = (edge.target.kind, target)
                    if edge.name in ("Depend", "Listen"):
                        out.append(EdgeSpec(other, me, edge.name == "Listen", (), edge.pos))
                    else:
                        out.append(EdgeSpec(me, other, edge.name == "Notify", (), edge.pos))
        return tuple(out)

    def _fields(
        self, fields: Sequence[ast.ResParam | ast.ResMeta], env: FrozenDict
    ) -> tuple[tuple[str, Any], ...]:
        """name -> value of each param (or meta) set; `cond ?: value` only while cond is true."""
        return tuple(
            (f.name, self.eval(f.expr, env))
            for f in fields
            if f.cond is None or self.eval(f.cond, env)
        )

    def _edge(self, stmt: ast.Edge, env: FrozenDict = EMPTY) -> tuple[Any, ...]:
        halves = [(h, self._names(h.name, env)) for h in stmt.halves]
        out: list[Any] = []
        for (a, a_names), (b, b_names) in itertools.pairwise(halves):
            pairs = ((a.field, b.field),) if a.field and b.field else ()
            if (refused := too_many(len(a_names) * len(b_names), "edges")) is not None:
                raise GraphLimitError(f"the edge makes {refused}", stmt.pos)
            for x in a_names:
                for y in b_names:
                    out.append(EdgeSpec((a.kind, x), (b.kind, y), False, pairs, stmt.pos))
        return tuple(out)

    # expressions ----------------------------------------------------------------------------

    def eval(self, expr: ast.Expr, env: FrozenDict) -> Any:
        return self._eval[type(expr)](expr, env)

    def _interp(self, e: ast.Interp, env: FrozenDict) -> str:
        return "".join(p if isinstance(p, str) else self.eval(p, env) for p in e.parts)

    def _var(self, e: ast.Var, env: FrozenDict) -> Any:
        if isinstance(e.target, ast.Param):
            return env[e.target.env_key]
        if isinstance(e.target, ast.Lit):  # $const.res...
            return e.target.value
        if isinstance(e.target, ast.ContextVar):  # $hostname
            return getattr(self.ctx, e.target.name)
        if isinstance(e.target, ast.Bind) and e.target.in_loop:  # per element, from env
            return self.eval(e.target.expr, env)
        return self.get(self._bind_cells[id(e.target)])

    def _except(self, e: ast.Except, env: FrozenDict) -> Any:
        """`a <|> b`: b only while a is a run-time error (one still waiting for a stream's
        first value is not: it waits)."""
        try:
            return self.eval(e.left, env)
        except NotReady:
            raise
        except LangError as err:
            log.debug("%s: <|> uses its fallback: %s", e.pos, err)
            return self.eval(e.right, env)

    def _if(self, e: ast.If, env: FrozenDict) -> Any:
        return self.eval(e.then if self.eval(e.cond, env) else e.other, env)

    def _env_names(self, call: ast.Call) -> frozenset[str]:
        """The env keys a call's arguments read, through bindings inside loops (cached)."""
        names = self._call_names.get(id(call))
        if names is None:
            found: set[str] = set()
            seen: set[int] = set()
            todo: list[ast.Expr] = list(call.args)
            while todo:
                expr = todo.pop()
                if isinstance(expr, ast.Resolved):  # an include's argument, in a loop
                    todo.append(expr.inner)
                elif isinstance(expr, ast.Var):
                    target = expr.target
                    if isinstance(target, ast.Param):
                        found.add(target.env_key)
                    elif isinstance(target, ast.Bind) and target.in_loop and id(target) not in seen:
                        seen.add(id(target))
                        todo.append(target.expr)
                else:
                    todo.extend(ast.children(expr))
            names = self._call_names[id(call)] = frozenset(found)
        return names

    def _apply(self, closure: Closure, *args: Any) -> Any:
        lam: ast.Lambda = closure.node
        spent = self._budget  # (spend(), inline: this is the hottest call of a map)
        spent.left -= 1
        if spent.left < 0:
            raise exceeded(lam.pos)
        env = FrozenDict(
            {**closure.env, **{p.env_key: a for p, a in zip(lam.params, args, strict=True)}}
        )
        return self.eval(lam.body, env)

    def _all(self, exprs: Sequence[ast.Expr], env: FrozenDict) -> list[Any]:
        """The values of expressions side by side (a call's arguments, a list's or a struct's
        items). While one waits for a stream's first value, the others are evaluated all the
        same before waiting, so that their streams start together, as every function of mgmt's
        graph does (history($x, 1) and history($x, 3) then count the same values)."""
        try:
            return [self.eval(x, env) for x in exprs]
        except NotReady:
            for x in exprs:
                with contextlib.suppress(LangError):
                    self.eval(x, env)
            raise

    def _call(self, e: ast.Call, env: FrozenDict) -> Any:
        args = self._all(e.args, env)
        if e.callee is not None:
            fn = self.eval(e.callee, env)
            try:
                return fn(*args)
            except FuncError as err:  # a function value: a builtin's error has no position
                if err.pos is None:
                    raise FuncError(err.message, e.pos) from None
                raise
        target = e.target
        if isinstance(target, ast.FuncDef):
            return self._apply(Closure(target.lam, EMPTY, self._apply), *args)
        assert isinstance(target, Builtin)
        if target.stream is not None:
            return self._stream(e, target, args, env)
        assert target.impl is not None
        try:
            result = target.impl(self.ctx, *args) if target.ctx else target.impl(*args)
            if type(result) is int:
                int64(result)
            return result
        except FuncError as err:
            if err.pos is None:  # (a GraphLimitError stays one: `mgmt check` refuses it)
                raise type(err)(f"{target.name}: {err.message}", e.pos) from None
            raise
        except LangError:
            raise
        except (ValueError, TypeError, ArithmeticError, LookupError, OSError) as err:
            raise FuncError(f"{target.name}: {err}", e.pos) from None

    def _index(self, e: ast.Index, env: FrozenDict) -> Any:
        obj = self.eval(e.obj, env)
        index = self.eval(e.index, env)
        if isinstance(obj, tuple):
            if not 0 <= index < len(obj):
                raise FuncError(f"index {index} out of range (the list has {len(obj)})", e.pos)
            return obj[index]
        if index not in obj:
            raise FuncError(f"key {index!r} not in the map", e.pos)
        return obj[index]

    def _binop(self, e: ast.BinOp, env: FrozenDict) -> Any:
        op = e.op
        left = self.eval(e.left, env)
        if op == "and":
            return left and self.eval(e.right, env)
        if op == "or":
            return left or self.eval(e.right, env)
        right = self.eval(e.right, env)
        if op == "/":
            return _divide(left, right, e.pos)
        if op == "in":
            return left in right
        try:
            if op == "+" and isinstance(left, str):
                sized_str(len(left) + len(right))
            result = _OPS[op](left, right)
            return int64(result) if type(result) is int else result
        except (ArithmeticError, ValueError) as err:
            raise FuncError(f"{op}: {err}", e.pos) from None

    def _unop(self, e: ast.UnOp, env: FrozenDict) -> Any:
        value = self.eval(e.operand, env)
        if e.op == "not":
            return not value
        if type(value) is int and value == INT_MIN:
            raise FuncError(f"-: integer overflow: -({value}) does not fit 64 bits", e.pos)
        return -value


_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
    "<=": operator.le,
    ">=": operator.ge,
}


def _runaway(pos: Pos) -> GraphLimitError:
    """A loop that declared more than a graph may hold (--max-resources resources, as many
    edges): stopped there, before its graph is built."""
    limit = max_resources()
    return GraphLimitError(
        f"the loop declares more than {2 * limit:,} resources and edges together "
        f"(--max-resources, MGMT_MAX_RESOURCES: a graph has at most {limit:,} of each)",
        pos,
    )


def _divide(left: Any, right: Any, pos: Pos) -> float:
    """mgmt's `/`: a float, of two ints too; dividing by zero is an error (as mgmt's)."""
    if right == 0:
        raise FuncError("/: can't divide by zero", pos)
    try:
        return float(left / right)
    except OverflowError as err:  # two ints whose quotient does not fit a float
        raise FuncError(f"/: {err}", pos) from None


def _same(a: Any, a_err: LangError | None, b: Any, b_err: LangError | None) -> bool:
    if a_err is not None or b_err is not None:
        return (
            a_err is not None
            and b_err is not None
            and type(a_err) is type(b_err)
            and str(a_err) == str(b_err)
        )
    return type(a) is type(b) and bool(a == b)


def _arg(value: Any) -> str:
    """A stream's argument as waited_for() shows it."""
    text = repr(value)
    if isinstance(value, str) and value.startswith("/") and (kind := hangfs.kind_of(value)):
        return f"{text} (on {kind}: a file system that can stop answering)"
    return text
