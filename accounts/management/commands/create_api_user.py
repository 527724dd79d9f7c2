from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.services import api_user_create


class Command(BaseCommand):
    help = "Create a user for an API client and print its generated password (shown only once)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")

    def handle(self, *args: object, username: str, **options: object) -> None:
        try:
            user, password = api_user_create(username=username)
        except ValidationError as exc:
            messages = "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
            raise CommandError(f"Cannot create {username!r}: {messages}") from exc
        self.stderr.write(
            f"Created API user {user.get_username()!r}. Its password follows; it is not "
            "stored in clear and will not be shown again."
        )
        self.stdout.write(password)
