"""The checker: everything checked before anything runs, in one pass per statement block.

It composes three parts, each in a module of its own:
- mgmt.lang.scope: scopes, name resolution and binding order (bindings may come in any order;
  a name bound twice in one scope, or a dependency cycle, is an error);
- mgmt.lang.infer: type inference by unification, with deferred constraints (overloads,
  `->field`, `[index]`); builtins that a signature cannot type have rules of their own next to
  them, in mgmt.lang.funcs;
- mgmt.lang.check_resources: resources and edges against the registered kinds.
This module walks the blocks: for each, declare its names, resolve and order its bindings,
type them, then check its statements (resources, edges, ifs, for loops, includes, which
open inner blocks). Every problem is reported as `file:line:col: message`; type errors show
both types.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import resources  # noqa: F401  # lets lookup() load every kind on first use
from engine.params import close_match
from mgmt.lang import ast
from mgmt.lang.check_resources import ResourceChecker
from mgmt.lang.errors import Abort, CompileError, Pos, Problems, plural
from mgmt.lang.infer import Inference
from mgmt.lang.modules import ImportName, Module, ModuleLoader, parse_import
from mgmt.lang.parser import parse
from mgmt.lang.scope import Binding, Orderable, Resolver, Scope
from mgmt.lang.types import BOOL, INT, STR, TList, TMap, TVar, Type, show

# Statements a for loop's body cannot hold (yet). A class defined or included in a loop is
# expanded once and evaluated per element, as its bindings are (mgmt allows both).
LOOP_REFUSED: dict[type, str] = {
    ast.FuncDef: "a func",
    ast.Import: "an import",
}


@dataclass
class Checked:
    """A checked program, ready to run."""

    program: ast.Program
    # Every binding and func statement, in every scope.
    bindings: list[ast.Bind | ast.FuncDef] = field(default_factory=list)
    # Every system module whose functions the program calls, in any scope ("world": the
    # program needs the cluster; a module imported and not called is not listed).
    modules: set[str] = field(default_factory=set)
    # Every file the program is made of: its own, then each local module's (and metadata.yaml)
    # in the order read: what a deploy bundles and what a change of should reload.
    files: list[Path] = field(default_factory=list)
    # The digest of those files as they were read (mgmt.lang.modules.read_again compares).
    digest: str = ""
    # The deploy directory of each file in a directory module (by its name in positions): its
    # innermost module's directory, what mgmt's `deploy.*` paths are relative to. A file
    # outside any (a program run as a file, its `import "x.mcl"`) is not listed: the
    # program's directory is its deploy.
    deploy_dirs: dict[str, Path] = field(default_factory=dict)
    # Each local or remote import: where, its name, its module's entry file (check.outside).
    imports: list[tuple[Pos, str, Path]] = field(default_factory=list)


class Checker:
    def __init__(self, module: Module | None = None, loader: ModuleLoader | None = None) -> None:
        self.problems = Problems()
        self.failed: set[int] = set()  # ids of bindings whose check failed
        self.resolver = Resolver(self.problems, self.failed, self._load_module)
        self.loader = loader or ModuleLoader()
        self._modules = [module] if module is not None else []  # the files being checked
        self._loaded: dict[Path, Scope | None] = {}  # each local module, checked once
        self._checked_modules: list[Module] = []  # in the order loaded
        self.inference = Inference(self.problems)
        self.resources = ResourceChecker(
            self.problems, self.inference, self._check_expr, lambda: not self._branches
        )
        self.bindings: list[Binding] = []
        self._including: list[ast.ClassDef] = []  # the includes being checked, outermost first
        self._loops = 0  # for loops around the block being checked
        self._branches = 0  # if branches and for loops around it (its statements may not run)

    def check(self, program: ast.Program) -> Checked:
        self._block(program.body, Scope())
        self.inference.solve(final=True)
        self.resources.finish()
        if self.problems.lines:
            raise CompileError(self.problems.ordered())
        loader = self.loader
        modules = [*self._modules[:1], *self._checked_modules]
        dirs = {loader.name(m.file): m.metadata[0][0] for m in modules if m.metadata}
        return Checked(
            program,
            self.bindings,
            self.resolver.modules,
            loader.files,
            loader.digest(),
            dirs,
            loader.imports,
        )

    def _load_module(self, stmt: ast.Import, imp: ImportName) -> Scope | None:
        """Read, parse and check a local module (once per file): its scope, or None once its
        problems are reported. A module holds only imports, bindings, funcs and classes."""
        importer = self._modules[-1] if self._modules else Module(Path.cwd() / "<program>", "")
        try:
            module = self.loader.load(imp, importer, stmt.pos)
        except CompileError as err:
            self.problems.extend(err.problems, stmt.pos)
            return None
        chain = [m.file for m in self._modules]
        if module.file in chain:
            cycle = " -> ".join(
                self.loader.name(f) for f in [*chain[chain.index(module.file) :], module.file]
            )
            self.problems.add(stmt.pos, f'import "{stmt.module}": an import cycle ({cycle})')
            return None
        if module.file in self._loaded:
            return self._loaded[module.file]
        self._checked_modules.append(module)
        try:
            program = parse(module.text, self.loader.name(module.file))
        except CompileError as err:
            self.problems.extend(err.problems, stmt.pos)
            self._loaded[module.file] = None
            return None
        body: list[ast.Stmt] = []
        for item in program.body:
            if isinstance(item, ast.Bind | ast.FuncDef | ast.ClassDef | ast.Import):
                body.append(item)
            else:
                self.problems.add(
                    item.pos,
                    "a module holds only imports, bindings, funcs and classes "
                    "(put resources in a class and include it)",
                )
        scope = Scope()
        saved = self._loops, self._including, self._branches
        self._loops, self._including, self._branches = 0, [], 0
        self._modules.append(module)
        try:
            self._block(body, scope)
        finally:
            self._modules.pop()
            self._loops, self._including, self._branches = saved
        self._loaded[module.file] = scope
        return scope

    def _block(self, stmts: list[ast.Stmt], scope: Scope) -> None:
        if self._loops:
            stmts = self._loop_body(stmts, scope)
        binds = self.resolver.declare(stmts, scope)
        self.bindings += binds
        # `include ... as i` is ordered with the bindings: one reading `$i.x` comes after it.
        named = [s for s in stmts if isinstance(s, ast.Include) and s.alias is not None]
        scope.includes = {inc.alias: inc for inc in named if inc.alias is not None}
        nodes: list[Orderable] = [*binds, *named]
        local = {id(n) for n in nodes}
        deps: dict[int, list[Orderable]] = {}
        for node in nodes:
            found: list[Orderable] = []
            try:
                with self._depth_guard(node.pos):
                    self.resolver.uses(node, scope, local, found)
            except Abort:
                self.failed.add(id(node))
            deps[id(node)] = found
        done: set[int] = set()
        for node in self.resolver.order(nodes, deps):
            if id(node) in self.failed or any(id(d) in self.failed for d in deps[id(node)]):
                self.failed.add(id(node))
                continue
            try:
                with self._depth_guard(node.pos):
                    if isinstance(node, ast.Include):
                        done.add(id(node))
                        self._include(node, scope)
                    else:
                        self.resolver.settle()
                        self.inference.binding(node)
            except Abort:
                self.failed.add(id(node))
        self.resolver.settle()
        for stmt in stmts:
            if isinstance(stmt, ast.Bind | ast.FuncDef | ast.Import | ast.ClassDef):
                continue
            if id(stmt) in done:
                continue
            with contextlib.suppress(Abort), self._depth_guard(stmt.pos):
                self._statement(stmt, scope)

    @contextlib.contextmanager
    def _depth_guard(self, pos: Pos) -> Iterator[None]:
        """A RecursionError becomes a problem here. The parser bounds how deeply the syntax
        nests, but types and calls can nest through a long chain of bindings each adding a
        level (`$a2 = [$a1]`): the innermost binding or statement that overflows is named."""
        try:
            yield
        except RecursionError:
            raise self.problems.abort(
                pos, "the program nests too deeply (through its bindings)"
            ) from None

    def _check_expr(self, expr: ast.Expr, scope: Scope) -> Type:
        self.resolver.resolve(expr, scope, set(), [])
        return self.inference.infer(expr)

    # statements -----------------------------------------------------------------------------

    def _statement(self, stmt: ast.Stmt, scope: Scope) -> None:
        if isinstance(stmt, ast.IfStmt):
            t = self._check_expr(stmt.cond, scope)
            self.inference.expect(t, BOOL, stmt.cond.pos, "the condition of an if")
            self._branches += 1
            try:
                self._block(stmt.then, Scope(scope))
                self._block(stmt.other, Scope(scope))
            finally:
                self._branches -= 1
        elif isinstance(stmt, ast.Resource):
            self.resources.resource(stmt, scope)
        elif isinstance(stmt, ast.Edge):
            self.resources.edge(stmt, scope)
        elif isinstance(stmt, ast.Include):
            self._include(stmt, scope)
        elif isinstance(stmt, ast.For):
            self._for(stmt, scope)
        elif isinstance(stmt, ast.Panic):
            t = self._check_expr(stmt.expr, scope)
            self.inference.one_of(
                stmt.expr.pos,
                [t],
                [[BOOL], [STR]],
                lambda: f"type error: panic needs a bool or a str, got {show(t)}",
            )

    def _for(self, loop: ast.For, scope: Scope) -> None:
        """The body once, with the loop's names as parameters: index int and the element type
        (for a list), or the key and value types (for a map, with forkv)."""
        t = self._check_expr(loop.expr, scope)
        first, second = TVar(), TVar()
        if loop.kv:
            self.inference.expect(t, TMap(first, second), loop.expr.pos, "forkv needs a map")
        else:
            self.inference.expect(t, TList(second), loop.expr.pos, "for needs a list")
            self.inference.expect(first, INT, loop.first.pos, "a for index")
        inner = Scope(scope)
        for param, ptype in ((loop.first, first), (loop.second, second)):
            param.type = ptype
            param.env_key = f"{param.name}@{id(loop)}"  # a lambda's $x cannot shadow it
            inner.vars[param.name] = param
        self._loops += 1
        self._branches += 1
        try:
            self._block(loop.body, inner)
        finally:
            self._loops -= 1
            self._branches -= 1

    def _loop_body(self, stmts: list[ast.Stmt], scope: Scope) -> list[ast.Stmt]:
        """What a loop's body (or an if, or a class included, inside it) may hold:
        declarations, bindings and includes, made once per element. Functions and imports are
        made once (refused: their names go in the scope's `refused`, so that a use is not an
        error of its own)."""
        kept: list[ast.Stmt] = []
        for stmt in stmts:
            if isinstance(stmt, ast.Bind):
                stmt.in_loop = True  # evaluated per element, not as a cell of its own
            what = LOOP_REFUSED.get(type(stmt))
            if isinstance(stmt, ast.FuncDef):
                scope.refused.add(stmt.name)
            elif isinstance(stmt, ast.Import):
                with contextlib.suppress(ValueError):
                    scope.refused.add(stmt.alias or parse_import(stmt.module).alias)
            if what is not None:
                self.problems.add(
                    stmt.pos,
                    f"{what} cannot be inside a for loop (yet): use the loop's values directly",
                )
            else:
                kept.append(stmt)
        return kept

    def _include(self, inc: ast.Include, scope: Scope) -> None:
        """Check a copy of the class's body, in a scope of its own under the class's defining
        scope, after one binding per parameter to the argument (typed where it is written)."""
        found = scope.cls(inc.name)
        if found is None:
            prefix = inc.name.rpartition(".")[0]
            space = scope.namespace(prefix) if prefix else None
            if space is not None and space.broken:
                raise Abort()  # its import failed: reported
            names = scope.all_classes()
            raise self.problems.abort(
                inc.pos, f"undefined class {inc.name}{close_match(inc.name, names)}"
            )
        cls, home = found
        if len(inc.args) != len(cls.params):
            raise self.problems.abort(
                inc.pos,
                f"class {inc.name} takes {plural(len(cls.params), 'argument')}, "
                f"got {len(inc.args)}",
            )
        if cls in self._including:  # expanded statically: any self-include never ends
            chain = " -> ".join(c.name for c in [*self._including, cls])
            raise self.problems.abort(
                inc.pos, f"include {inc.name}: a class cannot include itself ({chain})"
            )
        for arg in inc.args:
            self._check_expr(arg, scope)
        params: list[ast.Stmt] = [
            ast.Bind(p.pos, p.name, p.ann, ast.Resolved(arg.pos, arg))
            for p, arg in zip(cls.params, inc.args, strict=True)
        ]
        inc.expanded = params + copy.deepcopy(cls.body)
        if not self._including:
            self.resources.include = inc
        self._including.append(cls)
        problems = self.problems.lines
        before = len(problems)
        inner = Scope(home)
        if inc.alias is not None:
            if inc.alias in scope.namespaces or inc.alias in scope.imports:
                self.problems.add(inc.pos, f"{inc.alias} is already a name of this scope")
            else:
                scope.namespaces[inc.alias] = inner
        try:
            self._block(inc.expanded, inner)
        finally:
            self._including.pop()
            if not self._including:  # say which top-level include it came through
                self.resources.include = None
                where = f" (in include {inc.name} at {inc.pos})"
                problems[before:] = [p + where for p in problems[before:]]
                self.problems.at[before:] = [inc.pos] * (len(problems) - before)


def check(
    program: ast.Program, module: Module | None = None, loader: ModuleLoader | None = None
) -> Checked:
    """Resolve names, order bindings and infer types; CompileError lists every problem.

    `module` is the program's file (its local imports are relative to it), `loader` reads
    them (and lists every file read)."""
    checker = Checker(module, loader)
    try:
        return checker.check(program)
    finally:
        # The checker and its parts refer to each other (callbacks): without the cycle, all
        # of it is freed now, not by the cycle collector (in a big program, a resource
        # built to validate each constant one: 8 objects each, 0.2 s at 25,000).
        del checker.resources
