import getpass
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from classification.selectors import model_version_get
from ground_truth.promotion import PromotionRefused, model_version_promote_gated
from reporting.management.commands._profiles import profile_from_images_or_fail


# It lives in ground_truth, above the registry it writes to, because it promotes through the
# gate (shadow evidence) and --reference-images builds a model-monitoring profile (reporting).
class Command(BaseCommand):
    help = (
        "Put a registered model version in production, if its shadow evidence passes the gate "
        "(or --force); running workers switch within seconds."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("version", type=int)
        parser.add_argument(
            "--reference-images",
            type=Path,
            help=(
                "A folder of reference images: their answers become the version's reference "
                "profile for model monitoring (before it is promoted). Without it, a version "
                "with no profile takes its first MONITORING_REFERENCE_REQUESTS answers."
            ),
        )
        parser.add_argument(
            "--force",
            action="store_true",
            help="Promote even if the gate refuses (recorded as a forced decision).",
        )

    def handle(
        self,
        *args: object,
        name: str,
        version: int,
        reference_images: Path | None,
        force: bool,
        **options: object,
    ) -> None:
        model_version = model_version_get(name=name, version=version)
        if model_version is None:
            raise CommandError(f"No version {version} of {name!r} is registered.")

        def reference_profile() -> None:
            if reference_images is None:
                return
            profile = profile_from_images_or_fail(
                self,
                model_version=model_version,
                images_dir=reference_images,
                failure_note=f" {name} v{version} was not promoted.",
            )
            self.stdout.write(f"Reference profile: {profile['description']}.")

        try:
            decision = model_version_promote_gated(
                model_version=model_version,
                force=force,
                decided_by=_operator(),
                before_promotion=reference_profile,
            )
        except PromotionRefused as refused:
            raise CommandError(f"{refused} Use --force to promote anyway.") from refused
        reasons = "; ".join(decision.evidence.get("reasons", []))
        if decision.forced:
            self.stdout.write(self.style.WARNING(f"Forced past the gate: {reasons}."))
        else:
            self.stdout.write(f"Gate: {reasons}.")
        self.stdout.write(self.style.SUCCESS(f"{name} v{version} is in production."))


def _operator() -> str:
    """Who ran the command, as the decision records it."""
    try:
        return f"promote_model ({getpass.getuser()})"
    except (KeyError, OSError):  # no user name in this environment (a bare container)
        return "promote_model"
