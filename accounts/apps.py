from django.apps import AppConfig


class AccountsConfig(AppConfig):
    """JWT token endpoints, /secret and the throttling policy."""

    name = "accounts"

    def ready(self) -> None:
        from accounts import checks  # noqa: F401 - registers the deploy checks
