"""The promotion gate: a staging version goes to production on evidence from live traffic.

``promotion_gate`` reads the evidence (how the candidate answered the requests it shadowed,
beside production); ``model_version_promote_gated`` promotes through it and records every
decision, allowed, refused or forced, as a PromotionDecision with that evidence. The
``promote_model`` command and the registry's admin both promote through it.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction

from classification.models import ModelVersion
from classification.registry.services import model_version_promote
from classification.selectors import model_version_production
from ground_truth.models import PromotionDecision
from ground_truth.selectors import Proportion, shadow_comparison


@dataclass(frozen=True)
class PromotionGate:
    """The gate's verdict on one candidate, its reasons, and the figures it saw."""

    model_version: ModelVersion
    allowed: bool
    reasons: list[str]
    evidence: dict = field(default_factory=dict)

    def summary(self) -> str:
        """The figures in one sentence, for the command's output and the admin."""
        evidence = self.evidence
        if "shadowed" not in evidence:
            return "; ".join(self.reasons)
        parts = [
            f"{evidence['shadowed']} shadowed request(s) (at least {evidence['min_shadowed']})",
            f"agreement with production {_percent(evidence['agreement'])}"
            f" (at least {evidence['min_agreement']:.0%})",
        ]
        shadow, production = evidence["shadow_accuracy"], evidence["production_accuracy"]
        if shadow["n"]:
            parts.append(
                f"accuracy on {shadow['n']} with feedback {_percent(shadow)} against "
                f"production's {_percent(production)} (at most "
                f"{evidence['max_accuracy_drop']:.0%} lower)"
            )
        else:
            parts.append("no feedback on shadowed requests yet")
        return "; ".join(parts)


class PromotionRefused(Exception):
    """The gate refused the candidate (the refusal is recorded); ``gate`` says why."""

    def __init__(self, gate: PromotionGate) -> None:
        super().__init__(
            f"{gate.model_version} was not promoted: {'; '.join(gate.reasons)}. "
            f"Figures: {gate.summary()}."
        )
        self.gate = gate


def promotion_gate(*, model_version: ModelVersion) -> PromotionGate:
    """Whether ``model_version`` may go to production, on PROMOTION_MIN_SHADOWED,
    PROMOTION_MIN_AGREEMENT and PROMOTION_MAX_ACCURACY_DROP; reads only."""
    production = model_version_production(name=model_version.name)
    if production is None:
        return PromotionGate(
            model_version, True, [f"the first production version of {model_version.name}"]
        )
    if production.pk == model_version.pk:
        return PromotionGate(model_version, True, ["already in production"])
    if model_version.promoted_at is not None:
        # It served production before: a rollback, which must not wait for new evidence.
        return PromotionGate(model_version, True, ["a rollback to a version that served before"])
    comparison = shadow_comparison(shadow_version=model_version)
    evidence = {
        "production_version": production.version,
        "shadowed": comparison.shadowed,
        "agreement": _proportion(comparison.agreement),
        "mean_latency_seconds": comparison.mean_latency_seconds,
        "shadow_accuracy": _proportion(comparison.shadow_accuracy),
        "production_accuracy": _proportion(comparison.production_accuracy),
        "min_shadowed": settings.PROMOTION_MIN_SHADOWED,
        "min_agreement": settings.PROMOTION_MIN_AGREEMENT,
        "max_accuracy_drop": settings.PROMOTION_MAX_ACCURACY_DROP,
    }
    reasons = []
    if comparison.shadowed < settings.PROMOTION_MIN_SHADOWED:
        reasons.append(
            f"{comparison.shadowed} shadowed request(s), fewer than "
            f"PROMOTION_MIN_SHADOWED={settings.PROMOTION_MIN_SHADOWED}"
        )
    agreement = comparison.agreement.value
    if agreement is not None and agreement < settings.PROMOTION_MIN_AGREEMENT:
        reasons.append(
            f"agreement with production {agreement:.1%}, below "
            f"PROMOTION_MIN_AGREEMENT={settings.PROMOTION_MIN_AGREEMENT}"
        )
    shadow_accuracy = comparison.shadow_accuracy.value
    production_accuracy = comparison.production_accuracy.value
    if shadow_accuracy is not None and production_accuracy is not None:
        drop = production_accuracy - shadow_accuracy
        # A hair of tolerance: equal counts must not be refused by float rounding.
        if drop > settings.PROMOTION_MAX_ACCURACY_DROP + 1e-9:
            reasons.append(
                f"accuracy on requests with feedback {shadow_accuracy:.1%}, "
                f"{drop:.1%} below production's {production_accuracy:.1%} (more than "
                f"PROMOTION_MAX_ACCURACY_DROP={settings.PROMOTION_MAX_ACCURACY_DROP})"
            )
    if reasons:
        return PromotionGate(model_version, False, reasons, evidence)
    return PromotionGate(
        model_version, True, ["the shadow evidence meets the thresholds"], evidence
    )


def model_version_promote_gated(
    *,
    model_version: ModelVersion,
    force: bool = False,
    decided_by: str = "",
    before_promotion: Callable[[], object] | None = None,
) -> PromotionDecision:
    """Promote ``model_version`` if the gate allows it (or ``force``), recording the decision.

    A refusal is recorded and raised as PromotionRefused. ``before_promotion`` (building a
    reference profile, say) runs once the gate has passed; what it raises promotes nothing and
    records nothing.
    """
    gate = promotion_gate(model_version=model_version)
    if not gate.allowed and not force:
        _decision_record(gate, forced=False, decided_by=decided_by)
        raise PromotionRefused(gate)
    if before_promotion is not None:
        before_promotion()
    with transaction.atomic():
        model_version_promote(model_version=model_version)
        return _decision_record(gate, forced=not gate.allowed, decided_by=decided_by)


def _decision_record(gate: PromotionGate, *, forced: bool, decided_by: str) -> PromotionDecision:
    decision = PromotionDecision(
        model_version=gate.model_version,
        allowed=gate.allowed,
        forced=forced,
        evidence={**gate.evidence, "reasons": gate.reasons},
        decided_by=decided_by[:150],
    )
    decision.full_clean()
    decision.save()
    return decision


def _proportion(proportion: Proportion) -> dict:
    interval = proportion.interval
    return {
        "successes": proportion.successes,
        "n": proportion.n,
        "value": proportion.value,
        "interval": list(interval) if interval is not None else None,
    }


def _percent(figures: dict) -> str:
    value = figures.get("value")
    return "-" if value is None else f"{value:.1%} ({figures['successes']}/{figures['n']})"
