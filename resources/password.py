"""password: a random password, kept across runs, sent as `password` (mgmt's `password`).

Made from the letters and digits with `secrets`, `length` characters long, and kept in the
agent's local state (the resource's private directory under the prefix, a file of mode 0600
written atomically and durably); the next run sends the same one. A stored password that does
not fit (another length, another alphabet: edited by hand) is replaced by a new one, as is the
stored one on a refresh (a notify edge). The password itself is never logged. Watched with
inotify: a stored password deleted or edited is made anew at once.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar

from engine import safefs
from engine.errors import ValidationError
from engine.handle import var_name
from engine.params import SECRET
from engine.resource import Refreshable, Resource, register
from engine.watcher import PathWatcher
from resources._lib import tablefile
from resources._lib.events import pump_events
from resources._lib.plan import Step, apply_steps, in_thread, nothing_to_do

ALPHABET = string.ascii_letters + string.digits
MAX_LENGTH = 65535  # mgmt's uint16
FILE = "password"


@register("password")
@dataclass(kw_only=True, eq=False)
class PasswordRes(Refreshable, Resource):
    SENDS: ClassVar[Mapping[str, Any]] = {"password": Annotated[str, SECRET]}

    # How many characters. Default 64 (mgmt's).
    length: int = 64

    def validate(self) -> None:
        super().validate()
        if not 1 <= self.length <= MAX_LENGTH:
            raise ValidationError(f"expected 1 to {MAX_LENGTH}, got {self.length}", "length")

    async def watch(self) -> None:
        path = await in_thread(self._path)
        async with PathWatcher([path]) as changes:
            await self.handle.event()
            await pump_events(self.handle, [changes])

    async def check_apply(self, apply: bool) -> bool:
        path = await in_thread(self._path)
        stored = await in_thread(lambda: tablefile.read_text(str(path)))
        refresh = self.handle.refresh()
        kept = (stored or "").strip()
        if stored is not None and self._fits(kept) and not refresh:
            self.handle.send(password=kept)
            return nothing_to_do(self.handle, f"a password of {self.length} characters is kept")
        new = "".join(secrets.choice(ALPHABET) for _ in range(self.length))
        if refresh and stored is not None:
            why = "a refresh"
        elif stored is None:
            why = "none is kept"
        else:
            why = f"the kept one is not {self.length} letters and digits"
        step = Step(
            f"make a new password ({why})",
            f"made a new password ({why})",
            lambda: safefs.write_file(str(path), (new + "\n").encode(), 0o600, parents=0o700),
            slow=True,
        )
        await apply_steps(self.handle, [step], apply, errors=(OSError,))
        if apply:
            self.handle.send(password=new)
        elif stored is not None:  # --noop: what runs after sees the kept one
            self.handle.send(password=kept)
        return False

    def _path(self) -> Path:
        return self.handle.var_dir / FILE

    @classmethod
    def validate_together(cls, resources: list[Resource]) -> list[tuple[Resource, ValidationError]]:
        """Two passwords whose names map to one kept file (`a/b` and `a_b`: the var dir's name
        has '_' for '/') would share one password: the second is refused."""
        seen: dict[str, Resource] = {}
        problems: list[tuple[Resource, ValidationError]] = []
        for res in resources:
            other = seen.setdefault(var_name(res.name), res)
            if other is not res:
                problems.append(
                    (
                        res,
                        ValidationError(
                            f"{other} would keep its password in the same place "
                            "(a '/' in a name is kept as '_'): rename one",
                            "name",
                        ),
                    )
                )
        return problems

    def _fits(self, value: str) -> bool:
        return len(value) == self.length and all(c in ALPHABET for c in value)
