"""exit: once reached, the agent stops gracefully and exits with `code` (mgmt's `exit`).

Like mgmt's: the resource is never in its desired state; applying it asks the agent to end
(engine.exit), which drains the running work as on a first SIGINT and then exits with the code,
whatever else happened in the run. Under --noop it only says that it would exit.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.errors import ValidationError
from engine.exit import exit_request
from engine.resource import Resource, register
from resources._lib.plan import Step, apply_steps

MAX_CODE = 125  # above, shells use the codes for their own (126, 127, 128 + signal)


@register("exit")
@dataclass(kw_only=True, eq=False)
class ExitRes(Resource):
    # The agent's exit code, 0 to 125. Default 0.
    code: int = 0

    def validate(self) -> None:
        super().validate()
        if not 0 <= self.code <= MAX_CODE:
            raise ValidationError(f"expected 0 to {MAX_CODE}, got {self.code}", "code")

    async def check_apply(self, apply: bool) -> bool:
        request = exit_request(self.handle.shared)
        step = Step(
            f"exit with code {self.code}",
            f"asked the agent to exit with code {self.code}",
            lambda: request.request(self.code),
        )
        await apply_steps(self.handle, [step], apply)
        return False
