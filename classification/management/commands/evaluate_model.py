import functools
import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from classification.draft_evaluation import (
    CAMERA_LONGER_SIDE,
    DraftComparison,
    draft_compare,
    draft_comparisons_merged,
    draft_variants,
)
from classification.evaluation import (
    EvaluationError,
    LabelledSet,
    evaluate,
    evaluation_summary,
    labelled_set_read,
    truth_indices,
)
from classification.exceptions import ModelRegistrationError
from classification.management.commands.fetch_model import _Progress
from classification.models import ModelVersion
from classification.registry.photos import Photo
from classification.registry.quantization import int8_fidelity_measure
from classification.selectors import model_version_get, model_version_production
from classification.serving.engine import serving_model_load
from core.errors import ServiceError


class Command(BaseCommand):
    help = (
        "Measure a model version's accuracy on labelled photos (top-1 and top-5; top-2 and tag "
        "F1 for a multi-task model) and store the figures in its metrics."
    )

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        # --version names the model's version here, not Django's (django-admin --version has it).
        return super().create_parser(prog_name, subcommand, conflict_handler="resolve", **kwargs)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="The registered model's name.")
        parser.add_argument(
            "--version", type=int, help="The version (default: production, else the newest)."
        )
        parser.add_argument(
            "--images",
            type=Path,
            required=True,
            nargs="+",
            help="A folder of images: ImageNet-style names with WordNet ids (n01440764_...), "
            "or any names with --labels (--draft: one or more folders, measured as one set).",
        )
        parser.add_argument(
            "--labels",
            type=Path,
            help="A CSV of file,label[,tags] (file relative to --images; label a WordNet id or "
            "one of the model's labels; tags separated by ';').",
        )
        parser.add_argument(
            "--limit", type=int, help="At most this many images (the same ones on every run)."
        )
        parser.add_argument(
            "--set-name", help="What the figures are stored under (default: the folder's name)."
        )
        parser.add_argument(
            "--no-store", action="store_true", help="Print the figures, store nothing."
        )
        draft = parser.add_argument_group("draft: JPEG draft decoding against the full decode")
        draft.add_argument(
            "--draft",
            action="store_true",
            help="Upscale each photo to camera size (JPEG quality 90) and compare the full "
            "decode with draft decodes: top-1, top-5, top-1 agreement, CPU ms per photo. "
            "Stores nothing.",
        )
        draft.add_argument(
            "--draft-margins",
            default="2,1.5,1",
            help="Comma-separated draft margins to try (default 2,1.5,1).",
        )
        draft.add_argument(
            "--reducing-gaps",
            default="",
            help="Comma-separated Pillow reducing_gap values: each variant again with each.",
        )
        draft.add_argument(
            "--longer-side",
            type=int,
            default=CAMERA_LONGER_SIDE,
            help=f"The stand-ins' longer side in pixels (default {CAMERA_LONGER_SIDE}: 12 MP).",
        )
        draft.add_argument("--json", type=Path, help="Also write the figures to this file.")

    def handle(self, *args: object, name: str, **options: object) -> None:
        version = self._version(name, options["version"])
        limit = options["limit"]
        if limit is not None and int(str(limit)) < 1:
            raise CommandError("--limit must be at least 1.")
        labels = options["labels"]
        folders = list(options["images"])  # type: ignore[call-overload]
        if options["draft"]:
            self._draft(version, folders, labels=labels, limit=limit, options=options)
            return
        if len(folders) != 1:
            raise CommandError("--images takes one folder (several with --draft).")
        try:
            labelled = labelled_set_read(
                images_dir=Path(str(folders[0])),
                labels_csv=Path(str(labels)) if labels else None,
                name=str(options["set_name"]) if options["set_name"] else None,
            )
            report = evaluate(
                version,
                labelled,
                limit=int(str(limit)) if limit is not None else None,
                progress=functools.partial(
                    tqdm, file=_Progress(self.stderr), unit="image", leave=False
                ),
                store=not options["no_store"],
            )
        except (EvaluationError, ModelRegistrationError, ServiceError) as exc:
            raise CommandError(str(exc)) from exc
        if version.metrics.get("quantized_from"):
            self._fidelity(version, labelled, store=not options["no_store"])
        figures = report.figures()
        skipped = [
            f"{figures[key]} {what}"
            for key, what in (
                ("not_in_labels", "not among the model's labels"),
                ("unlabelled", "without a label"),
                ("refused", "refused by the service, counted wrong"),
            )
            if figures[key]
        ]
        self.stdout.write(
            f"{version.name} v{version.version}: {evaluation_summary(figures)}"
            + (f" ({'; '.join(skipped)})" if skipped else "")
        )
        if not options["no_store"]:
            self.stdout.write(
                self.style.SUCCESS(
                    f"Stored in the metrics of {version.name} v{version.version} "
                    f"(evaluations.{labelled.name})."
                )
            )

    def _draft(
        self,
        version: ModelVersion,
        folders: list[Path],
        *,
        labels: object,
        limit: object,
        options: dict,
    ) -> None:
        """--draft: every folder's comparison, then all of them as one set against the rule."""
        try:
            variants = draft_variants(
                _numbers(str(options["draft_margins"])), _numbers(str(options["reducing_gaps"]))
            )
        except ValueError as exc:
            raise CommandError(f"--draft-margins and --reducing-gaps: {exc}") from exc
        progress = functools.partial(tqdm, file=_Progress(self.stderr), unit="photo", leave=False)
        comparisons = []
        try:
            model = serving_model_load(version)
            for folder in folders:
                labelled = labelled_set_read(
                    images_dir=folder,
                    labels_csv=Path(str(labels)) if labels else None,
                    name=str(options["set_name"]) if options["set_name"] else None,
                )
                try:
                    comparison = draft_compare(
                        model=model,
                        labelled=labelled,
                        variants=variants,
                        longer_side=int(options["longer_side"]),
                        limit=int(str(limit)) if limit is not None else None,
                        progress=progress,
                    )
                except EvaluationError as exc:
                    if len(folders) == 1:
                        raise
                    self.stdout.write(f"{exc} Skipped.")  # another folder may have some
                    continue
                self._draft_table(comparison)
                comparisons.append(comparison)
        except (EvaluationError, ModelRegistrationError, ServiceError) as exc:
            raise CommandError(str(exc)) from exc
        if not comparisons:
            raise CommandError(f"No folder has a photo with a label of {version}.")
        merged = draft_comparisons_merged(comparisons)
        if len(comparisons) > 1:
            self._draft_table(merged)
        rows = [merged.figures(variant) for variant in variants]
        for variant, row in zip(variants, rows, strict=True):
            if variant.margin is not None:
                passes, reasons = merged.passes(variant)
                row["passes"] = passes
                self.stdout.write(
                    f"{variant.name}: "
                    + ("passes the rule." if passes else "fails: " + "; ".join(reasons) + ".")
                )
        if options["json"]:
            Path(str(options["json"])).write_text(
                json.dumps(
                    {
                        "model": version.name,
                        "version": version.version,
                        "set": merged.set_name,
                        "longer_side": merged.longer_side,
                        "variants": rows,
                    },
                    indent=2,
                )
                + "\n"
            )

    def _draft_table(self, comparison: DraftComparison) -> None:
        self.stdout.write(
            f"{comparison.model_name} v{comparison.model_version} on {comparison.set_name} "
            f"at {comparison.longer_side} px on the longer side:"
        )
        full = comparison.figures(comparison.variants[0])
        for variant in comparison.variants:
            row = comparison.figures(variant)
            self.stdout.write(
                f"  {row['variant']:<28} {row['photos']:>5} photos  top-1 {row['top1']:.2%}  "
                f"top-5 {row['top5']:.2%}  agreement {row['top1_agreement']:.2%}  "
                f"CPU {full['cpu_ms']:.0f} -> {row['cpu_ms']:.0f} ms"
            )

    def _fidelity(self, version: ModelVersion, labelled: LabelledSet, *, store: bool) -> None:
        """An int8 version: its fidelity report against its float version on the same set."""
        photos = []
        for image in labelled.images:
            truth = truth_indices(image.label, labels=version.labels)
            photos.append(
                Photo(name=image.name, path=image.path, label=min(truth) if truth else None)
            )
        try:
            fidelity = int8_fidelity_measure(
                int8=version, photos=photos, photo_set=labelled.name, store=store
            )
        except ModelRegistrationError as exc:
            raise CommandError(str(exc)) from exc
        rule = fidelity["default_rule"]
        self.stdout.write(
            f"Against {fidelity['against']['name']} v{fidelity['against']['version']}: top-1 "
            f"{fidelity['fp32_top1']} -> {fidelity['int8_top1']}, agreement "
            f"{fidelity['top1_agreement']} ({fidelity['confident_top1_agreement']} where float "
            f"is confident), mean |confidence delta| {fidelity['mean_abs_confidence_delta']}; "
            + ("may answer by default." if rule["passes"] else "; ".join(rule["reasons"]) + ".")
        )

    def _version(self, name: str, number: object) -> ModelVersion:
        if number is not None:
            version = model_version_get(name=name, version=int(str(number)))
            if version is None:
                raise CommandError(f"{name} has no version {number}.")
            return version
        version = model_version_production(name=name)
        if version is None:
            version = ModelVersion.objects.filter(name=name).order_by("-version").first()
        if version is None:
            raise CommandError(f"No model called {name!r} is registered.")
        return version


def _numbers(text: str) -> list[float]:
    """'2,1.5,1' -> [2.0, 1.5, 1.0]; '' -> []."""
    return [float(part) for part in text.split(",") if part.strip()]
