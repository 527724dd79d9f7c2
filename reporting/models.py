from typing import ClassVar

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


class ExportedRecord(models.Model):
    """A record that is also an outbox entry for Elasticsearch: rows with no ``exported_at`` are
    still to be sent to the index that the setting ``export_index_setting`` names.

    It records when it was made and who asked: the signed-in user, if any, and a salted hash of
    the client address (never the address itself; blank when disabled).
    """

    # The setting that names the Elasticsearch index of a concrete model's documents.
    export_index_setting: ClassVar[str]

    created_at = models.DateTimeField(default=timezone.now)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    client_hash = models.CharField(max_length=64, blank=True)
    exported_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True
        ordering = ["-created_at", "-id"]
        indexes = [
            # The outbox: the sender finds unexported rows without scanning the table.
            models.Index(
                fields=["id"], name="%(class)s_unexported", condition=Q(exported_at__isnull=True)
            ),
        ]

    @classmethod
    def export_index(cls) -> str:
        """The Elasticsearch index this model's rows are exported to (from the settings)."""
        return getattr(settings, cls.export_index_setting)


class RequestLog(ExportedRecord):
    """One row per POST /classify-image, success or error, cached or not (the source of truth),
    and an outbox entry for the Elasticsearch events index."""

    export_index_setting = "ELASTICSEARCH_EVENTS_INDEX"

    class InputKind(models.TextChoices):
        URL = "url", "URL"
        UPLOAD = "upload", "Upload"
        BASE64 = "base64", "Base64"
        UNKNOWN = "", "Unknown (the body did not parse)"

    class CacheKind(models.TextChoices):
        URL = "url", "URL cache"
        IMAGE = "image", "Image cache"

    # Unique: the Elasticsearch document id, so a re-export never duplicates a document.
    request_id = models.CharField(max_length=64, unique=True)
    input_kind = models.CharField(max_length=8, choices=InputKind.choices, blank=True)
    image_url = models.TextField(blank=True)
    # URLs may be long, so they are found by hash (NULL when there is no URL) ...
    image_url_sha256 = models.CharField(  # noqa: DJ001
        max_length=64, null=True, blank=True, db_index=True
    )
    # ... and /report groups by the hash's first 64 bits as a signed integer: grouping a
    # million rows by a bigint takes half the time of grouping by 64 hex characters. (Two URLs
    # share a key with probability ~n^2/2^65: 3e-8 for a million distinct URLs.)
    image_url_key = models.BigIntegerField(null=True, blank=True)
    image_sha256 = models.CharField(max_length=64, blank=True)
    model_name = models.CharField(max_length=100, blank=True)
    model_version = models.PositiveIntegerField(null=True, blank=True)
    top_label = models.CharField(max_length=200, blank=True)
    confidence = models.FloatField(null=True, blank=True)
    processing_time = models.FloatField(help_text="Server wall time of the request, seconds.")
    cached = models.BooleanField(default=False)
    # NULL: not answered from a cache (the "cache kind" is absent, not an empty kind).
    cache_kind = models.CharField(  # noqa: DJ001
        max_length=8, choices=CacheKind.choices, null=True, blank=True
    )
    # Input statistics for model monitoring (NULL on errors and on rows written before them):
    # the decoded image's size and the mean luma (0-255) of the pixels the model saw.
    image_width = models.PositiveIntegerField(null=True, blank=True)
    image_height = models.PositiveIntegerField(null=True, blank=True)
    image_brightness = models.FloatField(null=True, blank=True)
    # A multi-task model's tags as answered: [{"label", "probability", "present"}, ...] (NULL for
    # models without tags and on errors).
    tags = models.JSONField(null=True, blank=True)
    # A zero-shot request's own labels, as it sent them (NULL when it sent none): feedback on
    # the answer must name one of them.
    labels = models.JSONField(null=True, blank=True)
    status_code = models.PositiveSmallIntegerField()
    error_code = models.CharField(max_length=64, blank=True)

    class Meta(ExportedRecord.Meta):
        indexes = [
            *ExportedRecord.Meta.indexes,
            models.Index(fields=["created_at"], name="requestlog_created"),
            # Model monitoring: a model version's answers in a time window.
            models.Index(
                fields=["model_name", "model_version", "created_at"],
                name="requestlog_model_time",
                condition=Q(status_code=200),
            ),
            # /report: an index-only scan over successful URL requests, grouped by URL hash.
            models.Index(
                fields=["image_url_key", "created_at", "processing_time"],
                name="requestlog_report",
                condition=Q(status_code=200, image_url_key__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.request_id} {self.status_code} {self.top_label or self.error_code}"

    @property
    def succeeded(self) -> bool:
        return self.status_code == 200


class ReportCall(ExportedRecord):
    """One GET /report answer, kept until it is exported to the Elasticsearch report index.

    Written only when Elasticsearch export is enabled; the row is the outbox entry.
    """

    export_index_setting = "ELASTICSEARCH_REPORT_INDEX"

    document_id = models.CharField(max_length=64, unique=True)
    since = models.DateTimeField(null=True, blank=True)
    until = models.DateTimeField(null=True, blank=True)
    limit = models.PositiveSmallIntegerField()
    top = models.JSONField(default=list)

    def __str__(self) -> str:
        return f"report {self.document_id} at {self.created_at:%Y-%m-%d %H:%M:%S}"
