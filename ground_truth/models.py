from django.conf import settings
from django.db import models
from django.db.models import Q

from classification.models import ModelVersion
from reporting.models import RequestLog


class Feedback(models.Model):
    """What a caller says of one answered request: it was right, or the right label was another.

    One per request and caller (a second one replaces the first). The answer as given (label,
    confidence, tags) is copied from the request-log row, so accuracy and confusions are read
    from this table alone.
    """

    class Review(models.TextChoices):
        PENDING = "pending", "Pending review"
        TRUSTED = "trusted", "Trusted"
        REJECTED = "rejected", "Rejected"

    request_log = models.ForeignKey(RequestLog, on_delete=models.CASCADE, related_name="feedback")
    model_version = models.ForeignKey(
        ModelVersion, on_delete=models.CASCADE, related_name="feedback"
    )
    # Who gave it: "user:<id>" for a signed-in caller, "anon:<client hash>" otherwise.
    caller = models.CharField(max_length=80)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    correct = models.BooleanField(help_text="Whether the answer's top label was right.")
    predicted_label = models.CharField(max_length=200)
    confidence = models.FloatField(help_text="The answer's top-1 confidence.")
    label = models.CharField(
        max_length=200, help_text="The right label (the predicted one when the answer was right)."
    )
    # A multi-task model's tags: as answered (labels present) and as the caller says they are.
    predicted_tags = models.JSONField(null=True, blank=True)
    tags = models.JSONField(null=True, blank=True)
    review = models.CharField(max_length=10, choices=Review.choices, default=Review.PENDING)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    # The image, when the caller sent it again with the feedback (checked against the row's
    # SHA-256): a path under FEEDBACK_IMAGE_DIR, kept until image_expires_at.
    image = models.CharField(max_length=300, blank=True)
    image_expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "feedback"
        constraints = [
            models.UniqueConstraint(
                fields=["request_log", "caller"], name="one_feedback_per_request_and_caller"
            ),
        ]
        indexes = [
            # Accuracy of one version over time, without rejected feedback.
            models.Index(
                fields=["model_version", "created_at"],
                name="feedback_version_time",
                condition=~Q(review="rejected"),
            ),
        ]

    def __str__(self) -> str:
        verdict = "right" if self.correct else f"wrong, is {self.label}"
        return f"{self.request_log.request_id}: {self.predicted_label} ({verdict})"


class ShadowPrediction(models.Model):
    """A staging version's answer to a live production request, made off the request path.

    Tied to the production answer by request id (its request-log row may not be written yet).
    """

    request_id = models.CharField(max_length=64, db_index=True)
    shadow_version = models.ForeignKey(
        ModelVersion, on_delete=models.CASCADE, related_name="shadow_predictions"
    )
    production_version = models.ForeignKey(
        ModelVersion, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    production_label = models.CharField(max_length=200)
    production_confidence = models.FloatField()
    label = models.CharField(max_length=200)
    confidence = models.FloatField()
    agrees = models.BooleanField()
    latency_seconds = models.FloatField(help_text="The shadow model's decode and inference time.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["request_id", "shadow_version"], name="one_shadow_per_request_and_version"
            ),
        ]
        indexes = [
            models.Index(fields=["shadow_version", "created_at"], name="shadow_version_time")
        ]

    def __str__(self) -> str:
        return f"{self.request_id}: {self.shadow_version} said {self.label}"


class PromotionDecision(models.Model):
    """Each promotion through the gate: the evidence it saw, and whether it was forced."""

    model_version = models.ForeignKey(
        ModelVersion, on_delete=models.CASCADE, related_name="promotion_decisions"
    )
    allowed = models.BooleanField()
    forced = models.BooleanField(default=False)
    # The gate's figures and reasons: shadowed requests, agreement, accuracy against production.
    evidence = models.JSONField(default=dict)
    decided_by = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        verdict = "forced" if self.forced else ("allowed" if self.allowed else "refused")
        return f"{self.model_version}: promotion {verdict}"


class Statistics(Feedback):
    """No table of its own: the admin's ground truth statistics page (live accuracy per model
    version, shadow evaluation), listed in the admin index under this app."""

    class Meta:
        proxy = True
        verbose_name = verbose_name_plural = "statistics"
