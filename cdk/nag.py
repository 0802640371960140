"""cdk-nag wiring: the AWS Solutions rule pack runs on every synth, and acknowledgments must explain themselves.

cdk-nag 3.x is a CDK policy-validation plugin: a finding that is not acknowledged fails ``app.synth()`` (and
``cdk synth``) with a report in ``cdk.out/validation-report.json``. Acknowledgments go through CDK's own
``Validations.of(construct).acknowledge``; this module adds one rule on top — a reason a security reviewer could
accept, not "not needed" — and a way to list every acknowledgment for the tests and the docs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from aws_cdk import Acknowledgment, Validations

if TYPE_CHECKING:
    from constructs import IConstruct

#: Shorter than this and a "reason" cannot say what compensates for the rule.
MIN_REASON_LENGTH = 60


@dataclass(frozen=True)
class Acknowledged:
    path: str
    rule: str
    reason: str


def acknowledge(construct: IConstruct, rule: str, reason: str) -> None:
    """Acknowledge one cdk-nag finding (``AwsSolutions-IAM5[Resource::*]`` for one finding of a rule).

    The id is the bare rule id: the ``AwsSolutions::`` prefix that the validation report suggests does not match.
    """
    if len(reason.strip()) < MIN_REASON_LENGTH:
        raise ValueError(f"acknowledging {rule} on {construct.node.path} needs a reason of at least "
                         f"{MIN_REASON_LENGTH} characters that says what compensates for it")
    Validations.of(construct).acknowledge(Acknowledgment(id=rule, reason=reason))


def apply_checks(app: IConstruct) -> None:
    """Run the AWS Solutions pack over the whole app at synth; unacknowledged errors stop the synth."""
    from cdk_nag import AwsSolutionsChecks

    Validations.of(app).add_plugins(AwsSolutionsChecks(app, verbose=True))


def acknowledgments(root: IConstruct) -> list[Acknowledged]:
    """Every acknowledgment under ``root``, read back from construct metadata."""
    key = Validations.ACKNOWLEDGED_RULES_METADATA_KEY
    found: list[Acknowledged] = []
    for construct in root.node.find_all():
        for entry in construct.node.metadata:
            if entry.type != key:
                continue
            # recorded as {"Annotation::RULE": reason}; the prefix is CDK's, the plugin matches the bare rule id
            for rule, reason in dict(entry.data).items():
                found.append(Acknowledged(construct.node.path, rule.split("::", 1)[-1], str(reason)))
    return found
