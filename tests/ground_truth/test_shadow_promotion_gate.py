"""promote_model and the registry's admin promote through the gate: enough shadowed requests,
agreement with production, accuracy on feedback no worse than allowed; --force (or the admin's
"Promote anyway") overrides; every decision is recorded with its evidence."""

import io

import pytest
from django.core.management import CommandError, call_command

from classification.models import ModelVersion
from ground_truth.models import Feedback, PromotionDecision, ShadowPrediction
from ground_truth.promotion import promotion_gate
from tests.support.models import TINY_LABELS
from tests.support.reporting import log_row

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/classification/modelversion/"


@pytest.fixture(autouse=True)
def _gate(settings) -> None:
    settings.PROMOTION_MIN_SHADOWED = 10
    settings.PROMOTION_MIN_AGREEMENT = 0.9
    settings.PROMOTION_MAX_ACCURACY_DROP = 0.05


@pytest.fixture
def candidate(register_model, tiny_keras_path, tiny_model) -> ModelVersion:
    """'tiny' v2 in staging, beside v1 in production."""
    return register_model(tiny_keras_path, name="tiny", labels=TINY_LABELS, stage="staging")


def shadowed(
    candidate: ModelVersion,
    production: ModelVersion,
    *,
    n: int,
    disagree: int = 0,
    truth: list[tuple[str, str, str]] = (),
) -> None:
    """``n`` shadowed requests, ``disagree`` of them answered otherwise than production; then
    for each (production label, shadow label, right label) of ``truth`` one more shadowed
    request whose production answer received feedback."""
    for index in range(n):
        ShadowPrediction.objects.create(
            request_id=f"shadow-{index}",
            shadow_version=candidate,
            production_version=production,
            production_label="red",
            production_confidence=0.8,
            label="green" if index < disagree else "red",
            confidence=0.7,
            agrees=index >= disagree,
            latency_seconds=0.01,
        )
    for production_label, shadow_label, right in truth:
        row = log_row(label=production_label)
        ShadowPrediction.objects.create(
            request_id=row.request_id,
            shadow_version=candidate,
            production_version=production,
            production_label=production_label,
            production_confidence=0.8,
            label=shadow_label,
            confidence=0.7,
            agrees=shadow_label == production_label,
            latency_seconds=0.01,
        )
        Feedback.objects.create(
            request_log=row,
            model_version=production,
            caller=f"anon:{row.request_id}",
            correct=production_label == right,
            predicted_label=production_label,
            confidence=0.8,
            label=right,
        )


def promote(name: str, version: int, *options: str) -> str:
    out = io.StringIO()
    call_command("promote_model", name, str(version), *options, stdout=out)
    return out.getvalue()


def stage_of(version: ModelVersion) -> str:
    return ModelVersion.objects.get(pk=version.pk).stage


def test_too_few_shadowed_requests_are_refused_with_the_figures(tiny_model, candidate):
    shadowed(candidate, tiny_model, n=4)
    with pytest.raises(CommandError) as refused:
        promote("tiny", candidate.version)
    assert refused.value.returncode == 1  # manage.py's exit status
    message = str(refused.value)
    assert "4 shadowed request(s), fewer than PROMOTION_MIN_SHADOWED=10" in message
    assert "agreement with production 100.0% (4/4)" in message and "--force" in message
    assert stage_of(candidate) == "staging" and stage_of(tiny_model) == "production"
    (decision,) = PromotionDecision.objects.all()
    assert decision.model_version == candidate and not decision.allowed and not decision.forced
    assert decision.evidence["shadowed"] == 4 and decision.evidence["production_version"] == 1
    assert decision.decided_by.startswith("promote_model")


def test_low_agreement_is_refused(tiny_model, candidate):
    shadowed(candidate, tiny_model, n=20, disagree=3)  # 85 % agreement
    gate = promotion_gate(model_version=candidate)
    assert not gate.allowed
    assert gate.reasons == ["agreement with production 85.0%, below PROMOTION_MIN_AGREEMENT=0.9"]
    assert gate.evidence["agreement"]["successes"] == 17 and gate.evidence["agreement"]["n"] == 20
    with pytest.raises(CommandError, match=r"agreement with production 85\.0%"):
        promote("tiny", candidate.version)


def test_lower_accuracy_on_feedback_is_refused(tiny_model, candidate):
    # 10 judged requests: production right on all, the shadow wrong on one (10 % lower).
    truth = [("red", "red", "red")] * 9 + [("red", "blue", "red")]
    shadowed(candidate, tiny_model, n=30, truth=truth)
    gate = promotion_gate(model_version=candidate)
    assert not gate.allowed
    assert gate.evidence["shadow_accuracy"]["value"] == 0.9
    assert gate.evidence["production_accuracy"]["value"] == 1.0
    (reason,) = gate.reasons
    assert "10.0% below production's 100.0%" in reason
    with pytest.raises(CommandError, match=r"accuracy on requests with feedback 90\.0%"):
        promote("tiny", candidate.version)


def test_enough_agreeing_evidence_promotes_and_is_recorded(tiny_model, candidate):
    # The shadow is right where production was wrong: accuracy higher; agreement 18 of 20,
    # exactly PROMOTION_MIN_AGREEMENT.
    truth = [("red", "blue", "blue"), ("green", "blue", "blue")]
    shadowed(candidate, tiny_model, n=18, truth=truth)
    output = promote("tiny", candidate.version)
    assert "the shadow evidence meets the thresholds" in output
    assert stage_of(candidate) == "production" and stage_of(tiny_model) == "archived"
    (decision,) = PromotionDecision.objects.all()
    assert decision.allowed and not decision.forced
    assert decision.evidence["shadowed"] == 20
    assert decision.evidence["shadow_accuracy"] == {
        "successes": 2,
        "n": 2,
        "value": 1.0,
        "interval": pytest.approx([0.342, 1.0], abs=1e-3),
    }
    assert decision.evidence["production_accuracy"]["successes"] == 0


def test_force_promotes_past_the_gate_and_says_so(tiny_model, candidate):
    output = promote("tiny", candidate.version, "--force")
    assert "Forced past the gate: 0 shadowed request(s)" in output
    assert stage_of(candidate) == "production"
    (decision,) = PromotionDecision.objects.all()
    assert decision.forced and not decision.allowed
    assert decision.evidence["reasons"] == [
        "0 shadowed request(s), fewer than PROMOTION_MIN_SHADOWED=10"
    ]


def test_a_first_promotion_and_a_rollback_pass(register_model, tiny_keras_path, tiny_model):
    first = register_model(tiny_keras_path, name="fresh", labels=TINY_LABELS, stage="staging")
    assert "the first production version of fresh" in promote("fresh", first.version)
    second = register_model(tiny_keras_path, name="fresh", labels=TINY_LABELS, stage="staging")
    promote("fresh", second.version, "--force")
    # Back to the version that served before: no new evidence is asked for.
    assert "a rollback" in promote("fresh", first.version)
    assert stage_of(first) == "production"
    assert list(PromotionDecision.objects.values_list("allowed", "forced")) == [
        (True, False),
        (False, True),
        (True, False),
    ]


def test_an_unknown_version_is_refused_without_a_decision(tiny_model):
    with pytest.raises(CommandError, match="No version 9 of 'tiny'"):
        promote("tiny", 9)
    assert not PromotionDecision.objects.exists()


# --- The admin's "Promote" action ------------------------------------------------------------


@pytest.fixture
def staff_client(client, django_user_model):
    admin = django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-123")
    client.force_login(admin)
    return client


def test_the_admin_shows_the_refusal_and_promotes_only_when_forced(
    staff_client, tiny_model, candidate
):
    shadowed(candidate, tiny_model, n=3)
    form = {"action": "promote", "_selected_action": [candidate.pk]}
    page = staff_client.post(CHANGELIST, form).content.decode()
    assert "The promotion gate refused tiny v2" in page
    assert "3 shadowed request(s), fewer than PROMOTION_MIN_SHADOWED=10" in page
    assert "Promote anyway" in page
    assert stage_of(candidate) == "staging"

    done = staff_client.post(CHANGELIST, {**form, "force": "yes"}, follow=True).content.decode()
    assert "is in production (forced past the gate)" in done
    assert stage_of(candidate) == "production"
    refused, forced = PromotionDecision.objects.order_by("id")
    assert (refused.allowed, refused.forced, refused.decided_by) == (False, False, "root")
    assert (forced.allowed, forced.forced, forced.decided_by) == (False, True, "root")


def test_the_admin_promotes_at_once_when_the_gate_allows(staff_client, tiny_model, candidate):
    shadowed(candidate, tiny_model, n=10)
    form = {"action": "promote", "_selected_action": [candidate.pk]}
    done = staff_client.post(CHANGELIST, form, follow=True).content.decode()
    assert "Tiny v2 is in production; workers switch" in done
    (decision,) = PromotionDecision.objects.all()
    assert decision.allowed and decision.decided_by == "root"
