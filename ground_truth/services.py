"""Writes of ground truth: feedback on an answered request, its review, its images' retention,
and forgetting a request (its feedback, images, shadow answers and the log row's personal data).
"""

import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from classification.models import ModelVersion
from ground_truth.exceptions import (
    FeedbackForbidden,
    ImageMismatch,
    InvalidFeedback,
    RequestNotAnswered,
    RequestNotFound,
    UnknownLabel,
)
from ground_truth.models import Feedback, ShadowPrediction
from reporting.models import RequestLog
from reporting.outbox import export_sender_wake
from reporting.services import client_address_hash, request_log_flush

logger = logging.getLogger(__name__)

# A request's log row is written off the request thread (reporting.log_writer), so feedback
# sent right after the answer may come first: this worker's queue is flushed at once (up to
# this long), then the row is looked for again while another worker's batch lingers.
_FLUSH_SECONDS = 2.0
_POLL_SECONDS = 0.1
_OTHER_WORKER_GRACE_SECONDS = 0.1


@dataclass(frozen=True)
class Caller:
    """Who gives feedback: a signed-in user, or an anonymous client known by the hash of its
    address (computed as the request log computes it)."""

    user: User | None
    client_hash: str

    @classmethod
    def of(cls, *, user: User | AnonymousUser | None, client_address: str | None) -> "Caller":
        signed_in = user if isinstance(user, User) else None
        return cls(user=signed_in, client_hash=client_address_hash(address=client_address))

    @property
    def key(self) -> str:
        """The Feedback.caller of this caller: one feedback per request and key."""
        if self.user is not None:
            return f"user:{self.user.pk}"
        return f"anon:{self.client_hash}"

    def owns(self, row: RequestLog) -> bool:
        """A signed-in user's requests are theirs; an anonymous request is its client's, within
        FEEDBACK_ANON_WINDOW_SECONDS of the answer."""
        if row.user_id is not None:
            return self.user is not None and row.user_id == self.user.pk
        window = timedelta(seconds=settings.FEEDBACK_ANON_WINDOW_SECONDS)
        return (
            bool(self.client_hash)
            and row.client_hash == self.client_hash
            and row.created_at >= timezone.now() - window
        )

    def requests(self) -> Q:
        """The request-log rows this caller owns, as a filter (indexed: the user foreign key,
        or the creation time for anonymous rows)."""
        if self.user is not None:
            return Q(user=self.user)
        if not self.client_hash:
            return Q(pk__in=[])
        since = timezone.now() - timedelta(seconds=settings.FEEDBACK_ANON_WINDOW_SECONDS)
        return Q(user__isnull=True, client_hash=self.client_hash, created_at__gte=since)


@dataclass(frozen=True)
class AnswerRef:
    """Which answer the feedback is about: a request id, or an image and model (the caller's
    newest answer for it, of ``model_version`` if given)."""

    request_id: str | None = None
    image_sha256: str | None = None
    model_name: str | None = None
    model_version: int | None = None


def _with_log_written(find: Callable[[], RequestLog | None]) -> RequestLog | None:
    row = find()
    if row is not None:
        return row
    started = time.monotonic()
    request_log_flush(timeout=_FLUSH_SECONDS)
    deadline = min(
        time.monotonic() + settings.REQUEST_LOG_LINGER_SECONDS + _OTHER_WORKER_GRACE_SECONDS,
        started + _FLUSH_SECONDS,
    )
    while (row := find()) is None and time.monotonic() < deadline:
        time.sleep(_POLL_SECONDS)
    return row


def request_log_of_caller(*, ref: AnswerRef, caller: Caller) -> RequestLog:
    """The request-log row ``ref`` names, if ``caller`` owns it.

    Raises RequestNotFound (no such request), FeedbackForbidden (someone else's, or an
    anonymous one past its window).
    """
    if ref.request_id is not None:
        request_id = ref.request_id
        row = _with_log_written(lambda: RequestLog.objects.filter(request_id=request_id).first())
        if row is None:
            raise RequestNotFound(f"No request has the id {request_id!r}.")
        if not caller.owns(row):
            raise FeedbackForbidden()
        return row
    answers = RequestLog.objects.filter(
        caller.requests(),
        status_code=200,
        image_sha256=ref.image_sha256,
        model_name=ref.model_name,
    )
    if ref.model_version is not None:
        answers = answers.filter(model_version=ref.model_version)
    row = _with_log_written(lambda: answers.order_by("-created_at", "-id").first())
    if row is None:
        raise RequestNotFound("You have no answered request for this image and model.")
    return row


@dataclass(frozen=True)
class FeedbackInput:
    """What the caller says of the answer."""

    correct: bool
    label: str | None = None
    tags: list[str] | None = None
    image: bytes | None = None  # the request's image again, to keep with the feedback


def _checked_labels(
    *, row: RequestLog, version: ModelVersion, said: FeedbackInput
) -> tuple[str, list[str] | None]:
    """The right label and tags ``said`` gives for ``row``'s answer, checked against what the
    model can say. Raises InvalidFeedback, UnknownLabel."""
    predicted = row.top_label
    label = said.label if said.label is not None else (predicted if said.correct else None)
    if label is None:
        raise InvalidFeedback("Give the right 'label' when the answer was not correct.")
    if said.correct and label != predicted:
        raise InvalidFeedback(
            f"The answer was {predicted!r}: send correct=false to give another label."
        )
    if not said.correct and label == predicted:
        raise InvalidFeedback(f"The answer was {predicted!r}: send correct=true to confirm it.")
    if version.kind == ModelVersion.Kind.ZERO_SHOT:
        known = row.labels or version.labels
    else:
        known = version.labels
    if label not in known:
        raise UnknownLabel(f"The model {row.model_name} has no label {label!r}.")
    if version.kind != ModelVersion.Kind.MULTI_TASK:
        if said.tags is not None:
            raise InvalidFeedback(f"The model {row.model_name} has no tags.")
        return label, None
    tags = said.tags
    if tags is None:
        if not said.correct:
            raise InvalidFeedback("Give the image's 'tags' with the right category.")
        tags = _present_tags(row)  # the whole answer was right
    unknown = [tag for tag in tags if tag not in (version.tag_labels or [])]
    if unknown:
        raise UnknownLabel(f"The model {row.model_name} has no tag {unknown[0]!r}.")
    if len(set(tags)) != len(tags):
        raise InvalidFeedback("Each tag may be given once.")
    return label, tags


def _present_tags(row: RequestLog) -> list[str]:
    return [tag["label"] for tag in row.tags or [] if tag.get("present")]


def feedback_image_path(image_sha256: str) -> Path:
    """Where a feedback image is kept: content-addressed under FEEDBACK_IMAGE_DIR."""
    return Path(settings.FEEDBACK_IMAGE_DIR) / image_sha256[:2] / image_sha256


def _image_keep(*, image: bytes, image_sha256: str) -> str:
    """Write ``image`` to its content address (once; atomically) and return the stored path,
    relative to FEEDBACK_IMAGE_DIR."""
    path = feedback_image_path(image_sha256)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as partial:
            partial.write(image)
        os.replace(partial.name, path)  # a reader never sees half a file
    return str(path.relative_to(settings.FEEDBACK_IMAGE_DIR))


@dataclass(frozen=True)
class FeedbackSaved:
    feedback: Feedback
    created: bool


def feedback_give(*, ref: AnswerRef, caller: Caller, said: FeedbackInput) -> FeedbackSaved:
    """Record (or replace: one per request and caller) ``caller``'s feedback on an answer.

    A replaced feedback goes back to pending review. An image sent along is kept for
    FEEDBACK_IMAGE_RETENTION_DAYS if it is the request's image. Raises RequestNotFound,
    FeedbackForbidden, RequestNotAnswered, UnknownLabel, ImageMismatch, InvalidFeedback.
    """
    row = request_log_of_caller(ref=ref, caller=caller)
    if not row.succeeded or row.model_version is None:
        raise RequestNotAnswered()
    version = ModelVersion.objects.filter(name=row.model_name, version=row.model_version).first()
    if version is None:
        raise RequestNotFound("The model version of this request is no longer registered.")
    label, tags = _checked_labels(row=row, version=version, said=said)
    fields: dict[str, object] = {
        "model_version": version,
        "user": caller.user,
        "correct": said.correct,
        "predicted_label": row.top_label,
        "confidence": row.confidence or 0.0,
        "label": label,
        "predicted_tags": _present_tags(row) if row.tags is not None else None,
        "tags": tags,
        "review": Feedback.Review.PENDING,
        "reviewed_by": None,
        "reviewed_at": None,
    }
    if said.image is not None:
        if hashlib.sha256(said.image).hexdigest() != row.image_sha256:
            raise ImageMismatch()
        days = settings.FEEDBACK_IMAGE_RETENTION_DAYS
        if days > 0:
            fields["image"] = _image_keep(image=said.image, image_sha256=row.image_sha256)
            fields["image_expires_at"] = timezone.now() + timedelta(days=days)
    with transaction.atomic():
        feedback, created = Feedback.objects.select_related(
            "request_log", "model_version"
        ).update_or_create(request_log=row, caller=caller.key, defaults=fields)
    return FeedbackSaved(feedback=feedback, created=created)


def feedback_review(
    *, feedback_ids: list[int], review: str, reviewer: User | AnonymousUser | None
) -> int:
    """Set the review of the given feedback (trusted or rejected by ``reviewer``, or back to
    pending); returns how many rows changed. Raises InvalidFeedback for another value."""
    if review not in Feedback.Review.values:
        raise InvalidFeedback(f"A review is one of {Feedback.Review.values}, not {review!r}.")
    pending = review == Feedback.Review.PENDING
    return Feedback.objects.filter(id__in=feedback_ids).update(
        review=review,
        reviewed_by=reviewer if isinstance(reviewer, User) and not pending else None,
        reviewed_at=None if pending else timezone.now(),
    )


def _images_delete_unreferenced(paths: set[str]) -> int:
    """Delete the kept image files among ``paths`` that no feedback refers to any more (one
    image, content-addressed, may be kept for several callers)."""
    still_used = set(
        Feedback.objects.filter(image__in=paths).values_list("image", flat=True).distinct()
    )
    deleted = 0
    for relative in paths - still_used:
        try:
            (Path(settings.FEEDBACK_IMAGE_DIR) / relative).unlink()
        except FileNotFoundError:
            continue
        deleted += 1
    return deleted


@dataclass(frozen=True)
class RetentionResult:
    feedback: int  # feedback rows whose image expired
    files: int  # image files deleted


def feedback_images_expire(*, now: datetime | None = None) -> RetentionResult:
    """Delete feedback images past their ``image_expires_at``: the files (once no feedback
    keeps them) and the fields."""
    now = now or timezone.now()
    expired = Feedback.objects.filter(image_expires_at__lte=now).exclude(image="")
    with transaction.atomic():
        paths = set(expired.values_list("image", flat=True))
        count = expired.update(image="", image_expires_at=None)
    return RetentionResult(feedback=count, files=_images_delete_unreferenced(paths))


@dataclass(frozen=True)
class ForgetResult:
    request_id: str
    feedback: int
    files: int
    shadow_predictions: int


def request_forget(*, request_id: str) -> ForgetResult:
    """Forget what the service keeps of one request for whoever sent it: its feedback (all
    callers'), the images kept with it, its shadow answers, and the personal data of its log
    row (image URL and its hashes, image hash, client hash, user). The row itself stays, as a
    count in the statistics; it is exported again so the Elasticsearch copy loses them too.

    Raises RequestNotFound.
    """
    with transaction.atomic():
        row = RequestLog.objects.select_for_update().filter(request_id=request_id).first()
        if row is None:
            raise RequestNotFound(f"No request has the id {request_id!r}.")
        feedback = Feedback.objects.filter(request_log=row)
        paths = set(feedback.exclude(image="").values_list("image", flat=True))
        feedback_count, _ = feedback.delete()
        shadow_count, _ = ShadowPrediction.objects.filter(request_id=request_id).delete()
        RequestLog.objects.filter(pk=row.pk).update(
            image_url="",
            image_url_sha256=None,
            image_url_key=None,
            image_sha256="",
            client_hash="",
            user=None,
            exported_at=None,
        )
    files = _images_delete_unreferenced(paths)
    export_sender_wake()
    return ForgetResult(
        request_id=request_id,
        feedback=feedback_count,
        files=files,
        shadow_predictions=shadow_count,
    )


def request_forget_by_caller(*, request_id: str, caller: Caller) -> ForgetResult:
    """``request_forget`` for the request's owner. Raises RequestNotFound, FeedbackForbidden."""
    request_log_of_caller(ref=AnswerRef(request_id=request_id), caller=caller)
    return request_forget(request_id=request_id)
