from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q


class ModelVersion(models.Model):
    """One registered version of a named classifier, and where its served artifact lives."""

    class Stage(models.TextChoices):
        STAGING = "staging", "Staging"
        PRODUCTION = "production", "Production"
        ARCHIVED = "archived", "Archived"

    class Kind(models.TextChoices):
        # Each kind is registered once through classification.registry.pipeline and served once
        # through classification.serving.engine's MODEL_KINDS (docs/adding-a-model-kind.md).
        CLASSIFIER = "classifier", "Classifier (softmax over labels)"
        MULTI_TASK = "multi_task", "Multi-task (category softmax and tag sigmoids)"
        ZERO_SHOT = "zero_shot", "Zero-shot (image embedding against text embeddings)"

    class Format(models.TextChoices):
        KERAS = "keras", "Keras (.keras / .h5)"
        SAVED_MODEL = "saved_model", "TensorFlow SavedModel"
        TFLITE = "tflite", "LiteRT flat buffer"

    name = models.SlugField(max_length=100)
    version = models.PositiveIntegerField()
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.CLASSIFIER)
    source_format = models.CharField(max_length=20, choices=Format.choices)
    # The artifact as registered (Keras, SavedModel archive or .tflite), kept for retraining.
    source_artifact = models.CharField(max_length=300)
    source_sha256 = models.CharField(max_length=64)
    # The LiteRT flat buffer that serving loads; checksum verified on every load.
    artifact = models.CharField(max_length=300)
    artifact_sha256 = models.CharField(max_length=64)
    artifact_size = models.PositiveBigIntegerField()
    labels = models.JSONField(help_text="Class names, in the order of the model's outputs.")
    tag_labels = models.JSONField(
        null=True, blank=True, help_text="Labels of a multi-label head, when the model has one."
    )
    tag_thresholds = models.JSONField(
        null=True, blank=True, help_text="Per tag label, the probability from which it is present."
    )
    input_size = models.PositiveIntegerField(help_text="Square input side in pixels.")
    preprocessing = models.JSONField(help_text="How pixels are prepared: resampling and scaling.")
    stage = models.CharField(max_length=20, choices=Stage.choices, default=Stage.STAGING)
    metrics = models.JSONField(default=dict, blank=True)
    source = models.CharField(
        max_length=1000,
        blank=True,
        help_text="Where the weights came from, their licences, and how pixels are prepared.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    promoted_at = models.DateTimeField(null=True, blank=True)
    # What this version answered on its reference traffic (a reference image set, or its first
    # production requests): the baseline that model monitoring compares recent traffic with.
    # Written by reporting's model monitoring through the registry's services (format in
    # reporting/monitoring/drift.py).
    reference_profile = models.JSONField(null=True, blank=True)
    # A zero-shot version's text side (format in classification/serving/zero_shot.py): the
    # prompt template, the logit scale, and the stored text encoder, tokenizer and label
    # embeddings. Empty for classifiers.
    zero_shot = models.JSONField(null=True, blank=True)
    # A staging version is shadowed on this share (0-1) of live production requests of its name:
    # it answers them too, off the request path, for comparison before a promotion (ground_truth).
    shadow_share = models.FloatField(
        default=0.0,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Share of live production requests a staging version also answers (0-1).",
    )

    class Meta:
        ordering = ["name", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["name", "version"], name="unique_model_version"),
            models.UniqueConstraint(
                fields=["name"],
                condition=Q(stage="production"),
                name="one_production_version_per_name",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} v{self.version} ({self.stage})"

    @property
    def num_classes(self) -> int:
        return len(self.labels)
