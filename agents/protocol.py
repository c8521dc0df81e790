"""Which algorithm ran: the method as published (`paper`) or Longform's length-controlled one.

Every kind that implements a published method takes `protocol` in its params and records
a `ProtocolRecord` in its result, so a number is never read as the paper's when it is not:

- `paper`: the method as its paper and reference code run it, with the reference's defaults,
  and no length controller of any kind (a target length is only stated the way the paper
  states it). Safety properties stay on: limits come from the server, decisions are
  structured output, generated code runs sandboxed.
- `controlled` (the default): Longform's improvements, including its length controller.

`differs_from_paper` lists each knob of the run that differs from the published method, as
"knob: this run (paper: the published value)". `comparable_to_paper` is true only when the
paper protocol ran with no such difference and with prompt texts that do not come from
Longform's bundled paraphrases (a user who overlays the papers' own prompt files gets it).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from agents.context import JobContext

Protocol = Literal["paper", "controlled"]
PROTOCOL_FIELD_DESCRIPTION = (
    "paper: the method as published, reference defaults, no length controller; "
    "controlled: Longform's length-controlled version (the default)"
)

class ProtocolRecord(BaseModel):
    """What ran, as recorded in a result."""

    model_config = ConfigDict(extra="forbid")

    name: Protocol = Field(description="the protocol that ran")
    differs_from_paper: list[str] = Field(
        description='each knob of this run that differs from the published method, "knob: ours (paper: theirs)"'
    )
    prompt_set: str | None = Field(None, description="the job's named prompt set, if any")
    prompts: dict[str, str] = Field(
        default_factory=dict,
        description='each template rendered, by name, and where it came from: "bundled" (Longform\'s own '
        'wording), "PROMPTS_DIR" or "set:<name>" (an overlay)',
    )
    comparable_to_paper: bool = Field(
        description="paper protocol, no knob differing, and no bundled (paraphrased) prompt used"
    )


def protocol_record(ctx: "JobContext", name: Protocol, differs_from_paper: list[str], templates: Iterable[str]) -> dict:
    """The record of a run that rendered `templates` (their partials are found here). Where
    each came from is read from the job's overlay, so a replayed run records the same."""
    import prompts

    used: dict[str, str] = {}
    for template in templates:
        used.update(prompts.source_origins(template, ctx.prompt_overlay))
    comparable = name == "paper" and not differs_from_paper and prompts.BUNDLED not in used.values()
    return ProtocolRecord(
        name=name,
        differs_from_paper=list(differs_from_paper),
        prompt_set=ctx.prompt_set,
        prompts=dict(sorted(used.items())),
        comparable_to_paper=comparable,
    ).model_dump()
